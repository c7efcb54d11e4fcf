"""Unit tests of speechbrain_sed_condmix.inference without a trained model.

The ATST-SED tests export a randomly initialised tiny model from a
synthetic experiment folder laid out like a training run's.
"""

import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_sed_condmix.csebbs import sebbs_available
from speechbrain_sed_condmix.inference import (
    AudioLoadError,
    SoundEventDetector,
    export_detector,
    load_audio,
    stitch_window_scores,
    window_starts,
)
from speechbrain_sed_condmix.postprocessing import PostProcessing

# ----------------------------------------------------------------------
# Windows and stitching


@pytest.mark.parametrize(
    "n, expected",
    [
        (160000, [0]),
        (48000, [0]),
        (320000, [0, 80000, 160000]),
        (400000, [0, 80000, 160000, 240000]),
        (170000, [0, 10000]),
    ],
)
def test_window_starts(n, expected):
    assert window_starts(n, 160000, 80000) == expected


def test_window_starts_rejects_bad_hop():
    with pytest.raises(ValueError, match="hop"):
        window_starts(10, 5, 6)


@pytest.mark.parametrize("n_samples", [3000, 10000, 16000, 17000, 25000])
@pytest.mark.parametrize("hop", [2500, 5000, 10000])
def test_stitching_takes_the_nearest_centre(n_samples, hop):
    """Gapless rows; each from the window whose centre is nearest."""
    window, frame, n_frames = 10000, 64, 156  # 156 x 64 = 9984 < window
    starts = window_starts(n_samples, window, hop)
    # Each window's scores are its index, so rows say where they came from.
    scores = np.stack(
        [np.full((n_frames, 1), float(i)) for i in range(len(starts))]
    )
    bounds, out = stitch_window_scores(scores, starts, frame, n_samples)
    assert bounds[0] == 0
    assert np.all(np.diff(bounds) > 0)
    assert np.all(np.diff(bounds) < 2 * frame)  # gap-filling rows: < 2
    assert bounds[-1] == min(n_samples, starts[-1] + n_frames * frame)
    centres = np.array(starts) + n_frames * frame / 2
    for row, source in enumerate(out[:, 0].astype(int)):
        middle = (bounds[row] + bounds[row + 1]) / 2
        distance = np.abs(centres - middle)
        # handovers sit on the frame grid: at most one frame off
        assert distance[source] <= distance.min() + frame
        # the row lies inside its window's frames (the first row may fill
        # a gap of less than a frame before a window that does not overlap)
        assert starts[source] - frame < bounds[row]
        assert bounds[row + 1] <= starts[source] + n_frames * frame


def test_stitching_keeps_window_frames_intact():
    """Away from handovers, rows are the windows' frames, exact times."""
    frame, n_frames = 4, 10
    starts = [0, 20]  # window 40 samples, hop 20, signal 60
    scores = np.stack(
        [np.arange(n_frames)[:, None] + 100.0 * i for i in range(2)]
    )
    bounds, out = stitch_window_scores(scores, starts, frame, 60)
    # centres 20 and 40: handover at 30 -> frame boundary 32 of window 0
    assert bounds.tolist() == list(range(0, 64, 4))
    assert out[:8, 0].tolist() == list(range(8))
    # the first row of window 1 starts at 32, inside its frame 3 (32-36)
    assert out[8:, 0].tolist() == [103.0, 104, 105, 106, 107, 108, 109]


# ----------------------------------------------------------------------
# Audio loading


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_load_audio_resamples_and_downmixes(tmp_path, rate, channels, fmt):
    seconds = 1.5
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone, 0.5 * tone], axis=1)[:, :channels]
    path = tmp_path / f"a.{fmt}"
    sf.write(path, data, rate)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert abs(len(wav) - seconds * 16000) <= 1
    peak = 0.5 if channels == 1 else 0.375  # channel average
    assert float(wav.abs().max()) == pytest.approx(peak, abs=0.02)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AudioLoadError, match="bad.wav: cannot read audio"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1)), 16000)
    with pytest.raises(AudioLoadError, match="empty.wav: the file holds no"):
        load_audio(empty)
    zero_bytes = tmp_path / "zero.flac"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioLoadError, match="zero.flac: cannot read"):
        load_audio(zero_bytes)


# ----------------------------------------------------------------------
# ATST-SED: export and detection with the two-input front end

ATST_OVERRIDES = {
    "atst_dim": 64,
    "atst_depth": 2,
    "atst_heads": 4,
    "cnn_filters": [8, 16, 16, 32, 32, 32, 32],
    "rnn_hidden": 16,
}


@pytest.fixture(scope="module")
def atst_export(tmp_path_factory, make_experiment):
    root = tmp_path_factory.mktemp("atst")
    experiment, hparams = make_experiment(
        root / "exp", "atst_sed_stage2.yaml", ATST_OVERRIDES
    )
    out = export_detector(experiment, root / "exported")
    return out, hparams


def test_atst_export_loads_the_teacher(atst_export, tmp_path):
    out, hparams = atst_export
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "sd"
    )
    teacher = hparams["teacher"].model.state_dict()
    for key, value in detector.mods.model.state_dict().items():
        assert torch.equal(value, teacher[key]), key
    # the recipe's class-wise median filter travels with the model
    assert list(detector.postprocessing.median_filter.values()) == [
        6,
        20,
        7,
        4,
        7,
        6,
        6,
        6,
        6,
        6,
    ]


def test_atst_scores_use_the_training_front_end(atst_export, tmp_path):
    """10 s: the detector's raw scores are frontend + teacher, exactly.

    Both ATST-SED inputs are normalised as in training (the reference
    inference script skips the ATST normalisation).
    """
    out, hparams = atst_export
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "sd"
    )
    wav = 0.1 * torch.randn(160000, generator=torch.Generator().manual_seed(0))
    raw = detector.frame_scores(wav.numpy(), median_filter=False)
    frontend, teacher = hparams["frontend"], hparams["teacher"].model
    with torch.no_grad():
        inputs = frontend.normalize(frontend.mel(wav[None]))
        expected = teacher.eval()(*inputs).strong[0].T.numpy()
    assert raw.shape == (156, 12)
    np.testing.assert_allclose(
        raw[detector.classes].to_numpy(), expected, atol=1e-5
    )
    assert float(raw["offset"].iloc[-1]) == 9.984


@pytest.mark.parametrize("seconds, last", [(3.0, 3.0), (25.0, 24.984)])
def test_atst_short_and_long_files(atst_export, tmp_path, seconds, last):
    out, _ = atst_export
    detector = SoundEventDetector.from_hparams(
        source=str(out), savedir=tmp_path / "sd"
    )
    rng = np.random.default_rng(1)
    path = tmp_path / "clip.flac"
    sf.write(path, 0.1 * rng.standard_normal((int(seconds * 44100), 2)), 44100)
    scores = detector.frame_scores(path)
    assert float(scores["onset"].iloc[0]) == 0.0
    assert float(scores["offset"].iloc[-1]) == last
    np.testing.assert_array_equal(
        scores["onset"].to_numpy()[1:], scores["offset"].to_numpy()[:-1]
    )
    events = detector.detect_file(path)
    assert list(events.columns) == ["onset", "offset", "event_label", "score"]
    assert (events["offset"] <= seconds).all()


def test_export_refuses_to_overwrite_and_checks_weights(atst_export, tmp_path):
    out, _ = atst_export
    experiment = out.parent / "exp"
    with pytest.raises(FileExistsError, match="overwrite"):
        export_detector(experiment, out)
    export_detector(experiment, out, overwrite=True)
    pp = PostProcessing(["x"])
    with pytest.raises(ValueError, match="classes"):
        export_detector(experiment, tmp_path / "o", postprocessing=pp)
    with pytest.raises(FileNotFoundError, match="hyperparams.yaml"):
        export_detector(tmp_path, tmp_path / "o2")


def test_export_of_the_student(atst_export, tmp_path):
    out, hparams = atst_export
    target = export_detector(out.parent / "exp", tmp_path, weights="student")
    state = torch.load(target / "model.ckpt", weights_only=True)
    student = hparams["student"].state_dict()
    assert state.keys() == student.keys()
    assert all(torch.equal(state[k], student[k]) for k in state)


def test_csebbs_model_without_sebbs_falls_back(
    atst_export, tmp_path, monkeypatch, caplog
):
    out, hparams = atst_export
    classes = hparams["encoder"].classes
    csebbs = {
        "step_filter_length": 0.48,
        "merge_threshold_abs": 0.2,
        "merge_threshold_rel": None,
    }
    pp = PostProcessing(classes, median_filter=3, csebbs=csebbs)
    target = export_detector(
        out.parent / "exp", tmp_path / "csebbs", postprocessing=pp
    )
    if sebbs_available():
        detector = SoundEventDetector.from_hparams(
            source=str(target), savedir=tmp_path / "a"
        )
        assert detector.postprocessing.method == "csebbs"
        assert detector.postprocessing.csebbs == pp.csebbs
        assert detector.detect_batch([torch.zeros(8000)])[0].empty
    monkeypatch.setitem(sys.modules, "sebbs", None)
    monkeypatch.setitem(sys.modules, "sebbs.csebbs", None)
    with caplog.at_level("WARNING"):
        detector = SoundEventDetector.from_hparams(
            source=str(target), savedir=tmp_path / "b"
        )
    assert detector.postprocessing.method == "median"
    assert "sebbs package is not installed" in caplog.text
    with pytest.raises(ImportError, match="sebbs"):
        SoundEventDetector.from_hparams(
            source=str(target), savedir=tmp_path / "c", method="csebbs"
        )
