"""A tiny CRNN trained by the recipe, exported and used for detection.

The model is trained for one epoch on the tiny mini-DESED (generated audio,
not DESED) by ``recipes/DESED/SED/train.py``; its scores mean nothing, but
every path from the experiment folder to an event table runs for real.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio.functional

from speechbrain_sed_condmix.cli import detect_main, export_main
from speechbrain_sed_condmix.csebbs import sebbs_available
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.scores import read_scores

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def exported(tiny_crnn_experiment, tmp_path_factory):
    experiment, _ = tiny_crnn_experiment
    out = tmp_path_factory.mktemp("exported") / "model"
    assert export_main([str(experiment), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def detector(exported, tmp_path_factory):
    return SoundEventDetector.from_hparams(
        source=str(exported), savedir=tmp_path_factory.mktemp("savedir")
    )


@pytest.fixture(scope="module")
def clips(tiny_crnn_experiment):
    """Two prepared (16 kHz, 10 s) validation clips: (id, waveform)."""
    _, prep = tiny_crnn_experiment
    out = []
    for path in sorted((prep / "audio_16k" / "validation").rglob("*.wav")):
        data, rate = sf.read(path, dtype="float32")
        assert rate == 16000
        if len(data) == 160000:
            out.append((path, torch.from_numpy(data)))
    assert len(out) >= 2
    return out[:2]


def test_recipe_writes_postprocessing_and_event_rolls(tiny_crnn_experiment):
    experiment, _ = tiny_crnn_experiment
    metrics = json.loads((experiment / "metrics.json").read_text())
    compared = metrics["postprocessing"]
    assert compared["model"] == "teacher"
    methods = {"median_filter", "csebbs"} if sebbs_available() else set()
    methods.add("median_filter")
    assert methods <= set(compared)
    for method in methods:
        for key in ("psds1", "psds2", "intersection_f1", "collar_f1"):
            assert 0.0 <= compared[method][key] <= 1.0
    tuned = PostProcessing.load(experiment / "postprocessing.json")
    assert set(tuned.threshold) == set(tuned.classes)
    assert (tuned.csebbs is not None) == sebbs_available()
    rolls = sorted((experiment / "event_rolls").glob("*.png"))
    assert len(rolls) == 4  # n_event_rolls
    for roll in rolls:
        assert roll.read_bytes()[:4] == PNG and roll.stat().st_size > 10000


def test_postprocessing_round_trips_through_export(
    tiny_crnn_experiment, exported, detector
):
    experiment, _ = tiny_crnn_experiment
    saved = json.loads((experiment / "postprocessing.json").read_text())
    assert "postprocessing:" in (exported / "hyperparams.yaml").read_text()
    assert detector.postprocessing.to_dict() == saved
    if sebbs_available():
        assert detector.postprocessing.method == "csebbs"
        keys = {"step_filter_length", "merge_threshold_abs"}
        assert keys <= set(detector.postprocessing.csebbs)


def test_detector_reproduces_the_recipe_scores(tiny_crnn_experiment, detector):
    """Same front end, weights, padding and median filter as the test."""
    experiment, prep = tiny_crnn_experiment
    reference = read_scores(experiment / "test_scores/teacher/postprocessed")
    for clip_id, expected in sorted(reference.items())[:4]:
        path = next((prep / "audio_16k" / "validation").rglob(clip_id + ".*"))
        scores = detector.frame_scores(path)
        assert scores.shape == expected.shape
        np.testing.assert_allclose(
            scores.to_numpy(), expected.to_numpy(), atol=1e-5
        )


# One file per (rate, length); channels and format alternate, so every
# rate, channel count, length and format appears.
FILES = [
    (rate, seconds, channels, fmt)
    for i, (rate, seconds) in enumerate(
        (r, s) for r in (8000, 22050, 48000) for s in (3.0, 10.0, 25.0)
    )
    for channels, fmt in [((1, "wav"), (2, "flac"))[i % 2]]
]


@pytest.mark.parametrize("rate, seconds, channels, fmt", FILES)
def test_detection_on_any_file(
    detector, clips, tmp_path, rate, seconds, channels, fmt
):
    signal = torch.cat([clips[0][1], clips[1][1]] * 2)[: int(seconds * 16000)]
    signal = torchaudio.functional.resample(signal, 16000, rate).numpy()
    data = np.stack([signal, 0.8 * signal], axis=1)[:, :channels]
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, data, rate)
    duration = len(data) / rate
    events = detector.detect_file(path)
    assert list(events.columns) == ["onset", "offset", "event_label", "score"]
    assert (events["onset"] >= 0).all()
    assert (events["offset"] > events["onset"]).all()
    assert (events["offset"] <= duration + 1e-6).all()
    assert set(events["event_label"]) <= set(detector.classes)
    scores = detector.frame_scores(path)
    assert float(scores["onset"].iloc[0]) == 0.0
    # scores end at the file's end (10 s windows end at 9.984 s)
    assert duration - 0.065 < float(scores["offset"].iloc[-1]) <= duration
    np.testing.assert_array_equal(
        scores["onset"].to_numpy()[1:], scores["offset"].to_numpy()[:-1]
    )


def test_silent_file_gives_no_events(detector, tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros((3 * 22050, 2)), 22050)
    events = detector.detect_file(path)
    assert events.empty
    assert list(events.columns) == ["onset", "offset", "event_label", "score"]
    assert not detector.frame_scores(path)[detector.classes].to_numpy().any()


def test_stitched_scores_match_each_clip_away_from_the_seam(
    detector, clips, tmp_path
):
    (_, first), (_, second) = clips
    path = tmp_path / "joined.wav"
    sf.write(path, torch.cat([first, second]).numpy(), 16000)
    joined = detector.frame_scores(path, median_filter=False)
    own = [
        detector.frame_scores(w.numpy(), median_filter=False)
        for w in (first, second)
    ]
    values = joined[detector.classes].to_numpy()
    onsets = joined["onset"].to_numpy()
    early = onsets < 7.0
    np.testing.assert_allclose(
        values[early],
        own[0][detector.classes].to_numpy()[: early.sum()],
        atol=1e-5,
    )
    late = onsets >= 13.0
    theirs = own[1][own[1]["onset"] >= 3.0 - 1e-9]
    np.testing.assert_allclose(
        onsets[late], theirs["onset"].to_numpy() + 10.0, atol=1e-6
    )
    np.testing.assert_allclose(
        values[late], theirs[detector.classes].to_numpy(), atol=1e-5
    )


def test_detect_batch_matches_detect_file(detector, clips):
    (path, wav), _ = clips
    from_paths = detector.detect_batch([path, str(path)])
    from_waves = detector.detect_batch(torch.stack([wav, wav]))
    single = detector.detect_file(path)
    for table in [*from_paths, *from_waves]:
        pd.testing.assert_frame_equal(table, single, atol=1e-5)


def test_optimised_model_gives_the_exported_models_scores(
    exported, detector, clips, tmp_path
):
    """The default (folded, channels-last) copy against the model as is."""
    plain = SoundEventDetector.from_hparams(
        source=str(exported), savedir=tmp_path / "sd", optimize=False
    )
    bn = torch.nn.BatchNorm2d
    assert any(isinstance(m, bn) for m in detector.mods.model.modules())
    assert not any(isinstance(m, bn) for m in detector.model.modules())
    assert plain.model is plain.mods.model
    wavs = torch.stack([wav for _, wav in clips])
    np.testing.assert_allclose(
        detector(wavs).numpy(), plain(wavs).numpy(), atol=1e-5, rtol=0
    )


def test_median_method_override(exported, tmp_path, clips):
    median = SoundEventDetector.from_hparams(
        source=str(exported), savedir=tmp_path / "sd", method="median"
    )
    assert median.postprocessing.method == "median"
    events = median.detect_file(clips[0][0])
    filtered = median.frame_scores(clips[0][0])
    for row in events.itertuples():
        inside = filtered[
            (filtered["onset"] >= row.onset)
            & (filtered["offset"] <= row.offset)
        ]
        assert inside[row.event_label].max() == pytest.approx(row.score)


def test_sed_detect_end_to_end(exported, clips, tmp_path):
    """Console script: a folder and a bad file; the others are written."""
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", clips[0][1].numpy(), 16000)
    sf.write(folder / "sub" / "b.flac", clips[1][1].numpy()[:48000], 16000)
    (folder / "broken.wav").write_bytes(b"RIFF nonsense")
    out = tmp_path / "results" / "events.tsv"
    script = Path(sys.executable).with_name("sed-detect")
    cmd = [
        str(script),
        str(folder),
        "--model",
        str(exported),
        "--out",
        str(out),
        "--scores",
        str(tmp_path / "scores"),
        "--plot",
        str(tmp_path / "plots"),
    ]
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "1 of 3 file(s) failed" in result.stderr
    assert "broken.wav" in result.stderr
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == [
        "filename",
        "onset",
        "offset",
        "event_label",
        "score",
    ]
    assert set(table["filename"]) <= {"a.wav", "sub/b.flac"}
    assert (tmp_path / "scores" / "a.tsv").is_file()
    assert (tmp_path / "scores" / "sub" / "b.tsv").is_file()
    for name in ("a.png", "sub/b.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:4] == PNG and png.stat().st_size > 10000
    assert "written to" in result.stdout


def test_sed_detect_in_process(exported, clips, tmp_path, capsys):
    path = tmp_path / "one.wav"
    sf.write(path, clips[0][1].numpy(), 16000)
    out = tmp_path / "events.tsv"
    status = detect_main(
        [str(path), "--model", str(exported), "--out", str(out), "--quiet"]
    )
    assert status == 0
    assert "written to" in capsys.readouterr().out
    assert out.read_text().startswith("filename\tonset\toffset\tevent_label")
    # a missing file is a failure like any other; the table is still written
    missing = [str(tmp_path / "no.wav"), "--model", str(exported)]
    assert detect_main([*missing, "--out", str(out), "--quiet"]) == 1
    assert out.read_text() == "filename\tonset\toffset\tevent_label\tscore\n"


def test_sed_detect_console_holds_no_warning(
    exported, detector, clips, tmp_path
):
    """The CLI as a user runs it: no deprecation or future warning, also
    for a silent clip (an empty events table among the others)."""
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(160000, dtype="float32"), 16000)
    out = tmp_path / "events.tsv"
    files = [clips[0][0], clips[1][0], silent]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "sed-detect"),
            *map(str, files),
            "--model",
            str(exported),
            "--out",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr + result.stdout, result.stderr
    table = pd.read_csv(out, sep="\t")
    expected = {path.name: len(detector.detect_file(path)) for path in files}
    counts = table["filename"].value_counts().to_dict()
    assert {k: v for k, v in expected.items() if v} == counts
