"""sed-import on generated checkpoints in the released Lightning layouts.

The checkpoints hold random weights (batch-norm statistics included) in
the layouts of DESED_task's CRNN baseline and of ATST-SED stage 2
(reference notes: desed_task.md section 12, atst_sed.md sections 2a/2b).
The detector's raw frame scores are compared with the reference pipeline
written out here with torchaudio: waveform -> reference mel -> reference
log and scaling -> a model holding the checkpoint's teacher weights.
"""

import datetime

import numpy as np
import pytest
import torch
import torchaudio
import yaml

from speechbrain_sed_condmix.cli import import_main
from speechbrain_sed_condmix.importing import (
    ATST_SED_MEDIAN,
    DESED_CLASSES,
    ReleaseCheckpointError,
    import_release,
)
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.lobes.atst import ATSTFrame
from speechbrain_sed_condmix.lobes.atst_sed import ATSTSED
from speechbrain_sed_condmix.lobes.crnn import CRNN
from speechbrain_sed_condmix.model_folder import sha256_of

TINY_ATST = {"embed_dim": 128, "depth": 2, "num_heads": 2}


def _randomise(model, seed):
    """Random weights and batch-norm statistics, returned as a state dict."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + seed)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=generator)
        else:
            scale = 0.2 if value.dim() > 1 else 0.1
            state[key] = scale * torch.randn(value.shape, generator=generator)
    return state


def _lightning(student, teacher, extra=None):
    """A Lightning checkpoint as the references save it."""
    state = {f"sed_student.{k}": v for k, v in student.items()}
    state.update({f"sed_teacher.{k}": v for k, v in teacher.items()})
    # The trainers' mel transforms are modules too: their buffers are saved.
    state["mel_spec.spectrogram.window"] = torch.hamming_window(2048)
    state["mel_spec.mel_scale.fb"] = torch.rand(1025, 128)
    state.update(extra or {})
    return {
        "epoch": 41,
        "global_step": 12345,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": state,
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": {"training": {"median_window": 7}},
    }


@pytest.fixture(scope="module")
def crnn_release(tmp_path_factory):
    model = CRNN()  # the DCASE 2023 default configuration
    student, teacher = _randomise(model, 1), _randomise(model, 2)
    path = tmp_path_factory.mktemp("rel") / "baseline.ckpt"
    torch.save(_lightning(student, teacher), path)
    return path, student, teacher


@pytest.fixture(scope="module")
def atst_release(tmp_path_factory):
    model = ATSTSED(ATSTFrame(**TINY_ATST), activation="cg")
    student, teacher = _randomise(model, 3), _randomise(model, 4)
    # Profiler counters that some ATST-SED checkpoints carry.
    extra = {"sed_teacher.atst_frame.atst.total_ops": torch.zeros(1)}
    ckpt = _lightning(student, teacher, extra)
    ckpt["sed_student"], ckpt["sed_teacher"] = student, teacher
    path = tmp_path_factory.mktemp("rel") / "stage_2.ckpt"
    torch.save(ckpt, path)
    return path, student, teacher


def _reference_cnn_input(wav):
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000,
        n_fft=2048,
        win_length=2048,
        hop_length=256,
        f_min=0.0,
        f_max=8000.0,
        n_mels=128,
        window_fn=torch.hamming_window,
        wkwargs={"periodic": False},
        power=1,
    )(wav)
    to_db = torchaudio.transforms.AmplitudeToDB(stype="amplitude")
    to_db.amin = 1e-5  # as the reference overrides it
    x = to_db(mel).clamp(min=-50.0, max=80.0)
    low = x.amin(dim=(1, 2), keepdim=True)
    high = x.amax(dim=(1, 2), keepdim=True)
    return (x - low) / (high - low + 1e-8) * 2 - 1


def _reference_atst_input(wav):
    mel = torchaudio.transforms.MelSpectrogram(
        16000,
        f_min=60,
        f_max=7800,
        hop_length=160,
        win_length=1024,
        n_fft=1024,
        n_mels=64,
    )(wav)
    x = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80)(mel)
    x = x.clamp(-50, 80)
    return (x - -79.6482) / (50.6842 - -79.6482) * 2 - 1


def _clip(seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(160000) / 16000
    tone = 0.3 * torch.sin(2 * torch.pi * 440 * t) * (t > 4) * (t < 7)
    return 0.05 * torch.randn(160000, generator=generator) + tone


def _detector(folder, tmp_path):
    return SoundEventDetector.from_hparams(
        source=str(folder), savedir=tmp_path / "sd"
    )


def test_desed_crnn_import_matches_the_reference(crnn_release, tmp_path):
    path, _, teacher = crnn_release
    out = import_release("desed-crnn", path, tmp_path / "crnn")
    detector = _detector(out, tmp_path)
    wav = _clip()
    raw = detector.frame_scores(wav.numpy(), median_filter=False)
    model = CRNN()
    model.load_state_dict(teacher)
    with torch.no_grad():
        expected = model.eval()(_reference_cnn_input(wav[None])).strong
    assert raw.shape == (156, 12)
    assert detector.classes == DESED_CLASSES
    np.testing.assert_allclose(
        raw[DESED_CLASSES].to_numpy(), expected[0].T.numpy(), atol=1e-4
    )
    # The scores are not flat: the check above compares something.
    assert float(expected.std()) > 0.01
    post = detector.postprocessing
    assert set(post.median_filter.values()) == {7}
    assert post.threshold == 0.5 and post.method == "median"


def test_atst_sed_import_matches_the_reference(atst_release, tmp_path):
    path, _, teacher = atst_release
    out = import_release("atst-sed", path, tmp_path / "atst")
    detector = _detector(out, tmp_path)
    wav = _clip(1)
    raw = detector.frame_scores(wav.numpy(), median_filter=False)
    model = ATSTSED(ATSTFrame(**TINY_ATST), activation="cg")
    model.load_state_dict(teacher)
    inputs = (_reference_cnn_input(wav[None]), _reference_atst_input(wav[None]))
    with torch.no_grad():
        expected = model.eval()(*inputs).strong
    np.testing.assert_allclose(
        raw[DESED_CLASSES].to_numpy(), expected[0].T.numpy(), atol=1e-4
    )
    assert float(expected.std()) > 0.01
    assert list(detector.postprocessing.median_filter.values()) == (
        ATST_SED_MEDIAN
    )
    assert detector.mods.frontend.atst.per_clip_top_db


def test_student_and_median_filter_options(crnn_release, tmp_path):
    path, student, _ = crnn_release
    assert (
        import_main(
            [
                "desed-crnn",
                str(path),
                "--out",
                str(tmp_path / "s"),
                "--student",
                "--median-filter",
                "5",
                "--license",
                "MIT",
            ]
        )
        == 0
    )
    state = torch.load(tmp_path / "s" / "model.ckpt", weights_only=True)
    assert all(torch.equal(state[k], student[k]) for k in student)
    hparams = yaml.safe_load(
        (tmp_path / "s" / "hyperparams.yaml").read_text().split("\nencoder:")[0]
    )
    assert hparams["sample_rate"] == 16000
    detector = _detector(tmp_path / "s", tmp_path)
    assert set(detector.postprocessing.median_filter.values()) == {5}


def test_import_writes_a_model_card(crnn_release, tmp_path):
    path, _, _ = crnn_release
    out = import_release("desed-crnn", path, tmp_path / "m")
    card = (out / "README.md").read_text()
    for index, name in enumerate(DESED_CLASSES):
        assert f"\n{index}. {name}\n" in card
    assert f"`baseline.ckpt`, {path.stat().st_size} bytes" in card
    assert sha256_of(path) in card
    assert f"model_sha256: '{sha256_of(out / 'model.ckpt')}'" in card
    assert "median filter: 7 frames for every class" in card
    text = (out / "hyperparams.yaml").read_text()
    assert "per_clip_top_db" not in text  # the CRNN has no ATST branch


def test_truncated_and_empty_files_are_named(crnn_release, tmp_path):
    path, _, _ = crnn_release
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReleaseCheckpointError, match="cut.ckpt.*truncated"):
        import_release("desed-crnn", cut, tmp_path / "o")
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ReleaseCheckpointError, match="empty.ckpt.*empty"):
        import_release("desed-crnn", empty, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_wrong_kind_lists_missing_and_unexpected_keys(atst_release, tmp_path):
    path, _, _ = atst_release
    with pytest.raises(ReleaseCheckpointError) as err:
        import_release("desed-crnn", path, tmp_path / "o")
    message = str(err.value)
    assert str(path) in message
    # The CRNN is sized from the file (context gating, like ATST-SED's
    # CNN), so only the fusion and ATST-Frame weights are left over.
    assert "Missing keys: 0 []" in message
    assert "Unexpected keys: 30 [atst_frame.atst.blocks.0." in message
    assert "sed-import atst-sed" in message


def test_mismatched_layout_lists_the_keys(tmp_path):
    model = CRNN()
    state = _randomise(model, 5)
    state["dense.weightt"] = state.pop("dense.weight")
    path = tmp_path / "renamed.ckpt"
    torch.save(_lightning(state, state), path)
    with pytest.raises(ReleaseCheckpointError) as err:
        import_release("desed-crnn", path, tmp_path / "o")
    assert "Missing keys: 1 [dense.weight]" in str(err.value)
    assert "Unexpected keys: 1 [dense.weightt]" in str(err.value)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.layer.weight": torch.zeros(1)}}, other)
    with pytest.raises(ReleaseCheckpointError, match="no 'sed_teacher.'"):
        import_release("desed-crnn", other, tmp_path / "o")


def test_pickled_objects_need_trust(crnn_release, tmp_path):
    path, _, teacher = crnn_release
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"] = {"date": datetime.date(2023, 5, 31)}
    pickled = tmp_path / "objects.ckpt"
    torch.save(ckpt, pickled)
    with pytest.raises(ReleaseCheckpointError, match="--trust-checkpoint"):
        import_release("desed-crnn", pickled, tmp_path / "o")
    out = import_release(
        "desed-crnn", pickled, tmp_path / "o", trust_checkpoint=True
    )
    state = torch.load(out / "model.ckpt", weights_only=True)
    assert torch.equal(state["dense.weight"], teacher["dense.weight"])
    assert import_main(["atst-sed", str(pickled), "--out", "x"]) == 2


def test_other_class_counts_are_refused(tmp_path):
    state = _randomise(CRNN(n_class=27), 6)
    path = tmp_path / "r24.ckpt"
    torch.save(_lightning(state, state), path)
    with pytest.raises(ReleaseCheckpointError, match="27 output classes"):
        import_release("desed-crnn", path, tmp_path / "o")


def test_imported_atst_sed_streams_like_offline(atst_release, tmp_path):
    """ATST-Frame takes 10 s at most: the stream runs whole 10 s windows."""
    path, _, _ = atst_release
    out = import_release("atst-sed", path, tmp_path / "atst", window_hop=2.0)
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "sd", batch_size=1
    )
    assert detector.window_samples == 160000
    wav = torch.cat([_clip(2), _clip(3)[:64000]]).numpy()
    raw = detector.raw_frame_scores([torch.from_numpy(wav)], 3.0)[0]
    events = detector.postprocessing.events(raw)
    chunks = [wav[i : i + 4000] for i in range(0, len(wav), 4000)]
    streamed = list(detector.stream(chunks, hop=2.0, look_ahead=3.0))
    assert len(events) > 0
    assert [
        (e.onset, e.offset, e.event_label, pytest.approx(e.score))
        for e in sorted(streamed)
    ] == [
        tuple(row)
        for row in events.sort_values(
            ["onset", "offset", "event_label"]
        ).itertuples(index=False)
    ]
