"""Runtime bad data and mixed precision in SEDBrain's training step."""

import json
import logging

import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.autocast import TorchAutocast
from test_brain import make_batch, make_brain

from speechbrain_sed_condmix.dataio.desed import load_manifest
from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
from speechbrain_sed_condmix.dataio.pipelines import (
    SkipBadAudio,
    make_sed_dataset,
)


def training_brain(tmp_path, **hparams):
    brain = make_brain(tmp_path, **hparams)
    brain.steps_per_epoch = 4
    brain.init_optimizers()
    brain.nonfinite_count = 0  # set by Brain at the start of each epoch
    return brain


def with_bad_audio(batch_items, entries):
    """A PaddedBatch whose items carry ``bad_audio`` lists."""
    items = [
        dict(item, bad_audio=bad) for item, bad in zip(batch_items, entries)
    ]
    return PaddedBatch(items)


def items_of(kinds, seed=0):
    """The items of ``make_batch`` (same ids ``c0, c1, ...``), unbatched."""
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "id": f"c{i}",
            "sig": torch.randn(16000 * 10, generator=gen) * 0.1,
            "strong_labels": (torch.rand(10, 156, generator=gen) > 0.8).float(),
            "weak_labels": (torch.rand(10, generator=gen) > 0.7).float(),
            "is_strong": kind == "strong",
            "is_weak": kind == "weak",
            "duration": 10.0,
        }
        for i, kind in enumerate(kinds)
    ]


def test_undecodable_training_clip_is_replaced_and_named(
    prepared_tiny, tmp_path
):
    _, manifests = prepared_tiny
    entries = dict(list(load_manifest(manifests["synth_train"]).items())[:3])
    first, second, _ = list(entries)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt not really audio")
    entries[first] = dict(entries[first], wav=str(corrupt))
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps(entries))

    dataset = make_sed_dataset(
        manifest, FrameLabelEncoder(DESED_CLASSES), train=True
    )
    assert isinstance(dataset, SkipBadAudio)
    item = dataset[0]
    # The next clip of the subset takes its place, with the same keys.
    assert item["id"] == second
    assert item["sig"].shape == (160000,)
    assert len(item["bad_audio"]) == 1
    assert item["bad_audio"][0].startswith(f"{corrupt}: ")
    assert dataset[1]["id"] == second and dataset[1]["bad_audio"] == []
    # Evaluation sets are not wrapped: a bad file there is an error.
    assert not isinstance(
        make_sed_dataset(manifest, FrameLabelEncoder(DESED_CLASSES)),
        SkipBadAudio,
    )


def test_training_clip_with_nan_samples_is_replaced(prepared_tiny, tmp_path):
    import soundfile as sf

    _, manifests = prepared_tiny
    entries = dict(list(load_manifest(manifests["synth_train"]).items())[:2])
    first, second = list(entries)
    data, rate = sf.read(entries[first]["wav"], dtype="float32")
    data[1000] = float("nan")  # float WAV files can hold NaN
    bad = tmp_path / "nan.wav"
    sf.write(bad, data, rate, subtype="FLOAT")
    entries[first] = dict(entries[first], wav=str(bad))
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps(entries))
    dataset = make_sed_dataset(
        manifest, FrameLabelEncoder(DESED_CLASSES), train=True
    )
    item = dataset[0]
    assert item["id"] == second
    assert item["bad_audio"] == [f"{bad}: non-finite samples"]
    assert bool(torch.isfinite(item["sig"]).all())


def test_nan_predictions_take_the_nonfinite_path(tmp_path, caplog):
    """A NaN probability gives a NaN loss (BCE would raise), which the
    non-finite-loss handling logs and skips."""
    brain = training_brain(tmp_path)
    brain.skip_nonfinite_grads = True
    brain.nonfinite_patience = 3
    student = brain.modules.student
    with torch.no_grad():
        student.dense.bias.fill_(float("nan"))
    items = items_of(["strong", "weak", "unlabeled"])
    with caplog.at_level(logging.WARNING):
        loss = brain.fit_batch(PaddedBatch(items))
    assert not bool(torch.isfinite(torch.as_tensor(loss)))
    assert "Non-finite loss" in caplog.text and "c0, c1, c2" in caplog.text


def test_bad_audio_counted_then_run_stops_with_the_list(tmp_path, caplog):
    brain = training_brain(tmp_path, max_bad_audio=1)
    items = items_of(["strong", "weak", "unlabeled"])
    with caplog.at_level(logging.WARNING):
        brain.fit_batch(with_bad_audio(items, [["a.wav: boom"], [], []]))
    assert "a.wav: boom" in caplog.text
    assert brain.training_state.bad_audio == ["a.wav: boom"]
    assert brain.optimizer_step == 1  # the batch still trained
    with pytest.raises(RuntimeError, match="max_bad_audio=1") as err:
        brain.fit_batch(with_bad_audio(items, [[], ["b.wav: bad"], []]))
    assert "a.wav: boom" in str(err.value) and "b.wav: bad" in str(err.value)


def test_nonfinite_loss_names_the_batch_and_keeps_weights(tmp_path, caplog):
    # An infinite consistency weight makes the loss non-finite.
    brain = training_brain(tmp_path, const_max=float("inf"))
    brain.skip_nonfinite_grads = True
    brain.nonfinite_patience = 1
    items = items_of(["strong", "weak", "unlabeled"])
    before = [p.detach().clone() for p in brain.modules.student.parameters()]
    with caplog.at_level(logging.WARNING):
        brain.fit_batch(PaddedBatch(items))
    assert "Non-finite loss" in caplog.text and "c0, c1, c2" in caplog.text
    # The non-finite gradients were dropped: the student did not move.
    for b, p in zip(before, brain.modules.student.parameters()):
        assert torch.equal(b, p.detach())
    with pytest.raises(ValueError, match="patience is exhausted"):
        brain.fit_batch(PaddedBatch(items))


def test_bf16_autocast_keeps_losses_and_teacher_fp32(tmp_path):
    brain = training_brain(tmp_path)
    brain.training_ctx = TorchAutocast(device_type="cpu", dtype=torch.bfloat16)
    seen = {}
    forward = brain.compute_forward

    def spy(batch, stage):
        out = forward(batch, stage)
        seen["student"] = out["student"].strong.dtype
        return out

    brain.compute_forward = spy
    loss = brain.fit_batch(make_batch(["strong", "weak", "unlabeled"]))
    assert seen["student"] == torch.bfloat16  # autocast was on
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    terms = [v for k, v in brain.loss_terms.items() if k != "_n"]
    assert terms and all(isinstance(v, float) for v in terms)
    teacher = brain.modules.teacher.model
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    assert all(torch.isfinite(p).all() for p in teacher.parameters())


def test_epochs_without_validation_still_checkpoint(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer
    from speechbrain.utils.epoch_loop import EpochCounter

    brain = make_brain(
        tmp_path,
        valid_every_n_epochs=2,
        epoch_counter=EpochCounter(5),
        selection_key="student_obj",
    )
    brain.checkpointer = Checkpointer(
        tmp_path / "save", recoverables={"student": brain.modules.student}
    )
    brain._fit_valid(None, epoch=1, enable=False)
    first = brain.checkpointer.find_checkpoint()
    assert first.meta["epoch"] == 1 and first.meta["end-of-epoch"]
    brain._fit_valid(None, epoch=3, enable=False)
    # The newer one replaces it: neither has the selection key.
    left = brain.checkpointer.list_checkpoints()
    assert [c.meta["epoch"] for c in left] == [3]
