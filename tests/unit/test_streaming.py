"""Streaming detection against offline detection of the same audio.

A small, untrained CRNN exported from a synthetic experiment folder gives
arbitrary but deterministic scores; per-class thresholds at the median of
its offline scores make many events, so that every boundary is exercised.
"""

import time

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_sed_condmix.cli import detect_main
from speechbrain_sed_condmix.export import export_detector
from speechbrain_sed_condmix.importing import DESED_CLASSES
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.streaming import EventStream

SMALL_CRNN = {"cnn_filters": [4, 8, 8, 8, 8, 8, 8], "rnn_hidden": 8}
RATE = 16000
HOP, LOOK_AHEAD = 2.0, 3.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_experiment):
    root = tmp_path_factory.mktemp("stream")
    experiment, _ = make_experiment(root / "exp", "crnn_mt.yaml", SMALL_CRNN)
    return export_detector(experiment, root / "model")


def _signal(seconds, seed=0):
    """Noise whose loudness changes every 0.7 s, so the scores move."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    gain = np.repeat(rng.uniform(0.01, 1.0, n // 11200 + 1), 11200)[:n]
    return (0.3 * gain * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def detector(folder, tmp_path_factory):
    """Offline windows every HOP s; thresholds at the median raw score.

    One window per forward pass, offline as in the stream: batches of
    other sizes change the scores by float rounding (1e-7), which can move
    a frame across a threshold.
    """
    det = SoundEventDetector.from_hparams(
        source=str(folder),
        savedir=tmp_path_factory.mktemp("sd"),
        window_hop=HOP,
        batch_size=1,
    )
    raw = det.raw_frame_scores([torch.from_numpy(_signal(25.0))])[0]
    thresholds = {c: float(raw[c].median()) for c in det.classes}
    det.postprocessing = PostProcessing(
        det.classes,
        median_filter=[7, 3, 1, 5, 7, 7, 2, 7, 7, 4],
        threshold=thresholds,
    )
    return det


def _chunks(wav, seconds):
    size = max(int(round(seconds * RATE)), 1)
    return [wav[i : i + size] for i in range(0, len(wav), size)]


def _offline(det, wav, look_ahead=LOOK_AHEAD):
    raw = det.raw_frame_scores([torch.from_numpy(wav)], look_ahead)[0]
    return det.postprocessing.events(raw)


def _streamed(det, wav, chunk, **kwargs):
    kwargs = {"hop": HOP, "look_ahead": LOOK_AHEAD, **kwargs}
    return list(det.stream(_chunks(wav, chunk), **kwargs))


def _as_rows(events):
    return sorted(
        (round(e.onset, 6), round(e.offset, 6), e.event_label, e.score)
        for e in events
    )


@pytest.mark.parametrize("seconds", [25.0, 3.0, 10.0])
def test_stream_gives_the_offline_events(detector, seconds):
    wav = _signal(seconds, seed=1)
    offline = _offline(detector, wav)
    streamed = _streamed(detector, wav, 1.0)
    assert len(offline) > 3
    got = _as_rows(streamed)
    want = _as_rows(offline.itertuples(index=False))
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose(
        [g[3] for g in got], [w[3] for w in want], rtol=1e-6
    )


def test_events_come_within_the_latency(detector):
    wav = _signal(25.0, seed=2)
    stream = EventStream(detector, hop=HOP, look_ahead=LOOK_AHEAD)
    frame = detector.frame_samples / RATE
    # the look-ahead is put on the frame grid: 3 s -> 3.008 s
    assert abs(stream.look_ahead - LOOK_AHEAD) <= frame / 2
    # look-ahead + hop 2 s + (median half-length 3 + 1) frames + 16 ms
    expected = stream.look_ahead + 2.0 + 4 * frame + 0.016
    assert stream.latency() == pytest.approx(expected)
    events = []
    for chunk in _chunks(wav, 0.25):
        events += stream.push(chunk)
    assert events, "no event settled before the end of the stream"
    window = detector.window_samples / RATE
    for event in events:
        # Nothing runs before the first whole window (10 s) has arrived.
        bound = max(event.offset + stream.latency(), window) + frame
        assert event.offset <= event.emitted_at <= bound, event
    assert any(e.emitted_at > window for e in events)
    events += stream.finish()
    assert _as_rows(events) == _as_rows(_streamed(detector, wav, 0.25))


def test_chunk_sizes_from_10_ms_to_10_s_give_the_same_events(detector):
    wav = _signal(21.3, seed=3)
    reference = _as_rows(_streamed(detector, wav, 1.0))
    assert reference
    for chunk in (0.01, 0.37, 4.0, 10.0):
        assert _as_rows(_streamed(detector, wav, chunk)) == reference, chunk


def test_silence_gives_no_events(detector):
    silence = np.zeros(int(14.5 * RATE), dtype=np.float32)
    assert _streamed(detector, silence, 0.5) == []
    assert _streamed(detector, silence[:8000], 0.5) == []


def test_a_stream_ending_mid_event_closes_it(folder, tmp_path):
    det = SoundEventDetector.from_hparams(
        source=str(folder), savedir=tmp_path / "sd"
    )
    # Every frame of Dog is above a negative threshold: one event that is
    # still open when the audio stops.
    threshold = dict.fromkeys(det.classes, 2.0)
    threshold["Dog"] = -1.0
    det.postprocessing = PostProcessing(
        det.classes, median_filter=7, threshold=threshold
    )
    wav = _signal(13.3, seed=4)
    stream = EventStream(det, hop=1.0, look_ahead=2.0)
    during = []
    for chunk in _chunks(wav, 0.5):
        during += stream.push(chunk)
    assert during == []
    (event,) = stream.finish()
    assert event.event_label == "Dog"
    # Closed at the end of the last frame, as offline: the last window
    # ends at 13.3 s and its 156 frames cover 9.984 s of its 10 s.
    assert (event.onset, event.offset) == (0.0, 13.284)
    last = det.frame_scores(wav, median_filter=False)["offset"].iloc[-1]
    assert event.offset == last
    assert event.emitted_at == 13.3


def test_default_look_ahead_centres_the_windows(detector):
    stream = EventStream(detector, hop=1.0)
    # (156 frames x 64 ms - 1 s) / 2 = 4.492 s, on the frame grid
    assert stream.look_ahead == pytest.approx(4.48)
    with pytest.raises(ValueError, match="look_ahead must be in"):
        EventStream(detector, hop=2.0, look_ahead=9.0)
    with pytest.raises(ValueError, match="hop must be in"):
        EventStream(detector, hop=11.0)
    with pytest.raises(ValueError, match="resample"):
        EventStream(detector, sample_rate=44100)


@pytest.fixture(scope="module")
def dog_folder(folder, tmp_path_factory):
    """The small model with a Dog threshold that every frame passes."""
    threshold = dict.fromkeys(DESED_CLASSES, 2.0)
    threshold["Dog"] = -1.0
    post = PostProcessing(DESED_CLASSES, median_filter=7, threshold=threshold)
    return export_detector(
        folder.parent / "exp",
        tmp_path_factory.mktemp("dog") / "model",
        postprocessing=post,
    )


def test_sed_detect_stream_plays_a_file(dog_folder, tmp_path, capsys):
    path = tmp_path / "clip.wav"
    sf.write(path, _signal(3.0, seed=6), RATE)
    start = time.perf_counter()
    code = detect_main(
        [
            "--stream",
            "--realtime",
            str(path),
            "--model",
            str(dog_folder),
            "--chunk",
            "0.5",
            "--quiet",
        ]
    )
    assert code == 0
    # Played at real-time speed: the 3 s of audio take at least 3 s.
    assert time.perf_counter() - start >= 3.0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].startswith("0.000\t3.000\tDog\t")
    assert detect_main(["--stream", "--realtime", "--model", "x"]) == 2


def test_stream_without_median_filter(folder, tmp_path):
    """Median length 1 (no look-ahead for the filter) still matches."""
    det = SoundEventDetector.from_hparams(
        source=str(folder),
        savedir=tmp_path / "sd",
        batch_size=1,
        window_hop=1.0,
    )
    wav = _signal(10.0, seed=7)
    raw = det.raw_frame_scores([torch.from_numpy(wav)], 4.0)[0]
    det.postprocessing = PostProcessing(
        det.classes,
        median_filter=1,
        threshold={c: float(raw[c].median()) for c in det.classes},
    )
    offline = det.postprocessing.events(raw)
    streamed = list(det.stream(_chunks(wav, 0.3), hop=1.0, look_ahead=4.0))
    assert len(offline) > 3
    assert _as_rows(streamed) == _as_rows(offline.itertuples(index=False))
