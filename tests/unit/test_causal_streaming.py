"""The causal CRNN: streaming with carried state against offline detection.

A small, untrained causal CRNN exported from a synthetic experiment folder
(``crnn_mt.yaml --causal=True``) gives arbitrary but deterministic scores;
per-class thresholds at the median of its offline scores make many events.
Offline detection runs the model once over the whole recording; the stream
carries the STFT buffer, the convolution and pooling frames and the GRU
state from chunk to chunk.
"""

import numpy as np
import pytest
import torch

from speechbrain_sed_condmix.causal_streaming import CausalEventStream
from speechbrain_sed_condmix.export import export_detector
from speechbrain_sed_condmix.inference import SoundEventDetector
from speechbrain_sed_condmix.lobes.fusion import optimize_for_inference
from speechbrain_sed_condmix.postprocessing import PostProcessing

SMALL_CAUSAL = {
    "cnn_filters": [4, 8, 8, 8, 8, 8, 8],
    "rnn_hidden": 8,
    "causal": True,
}
RATE = 16000
FRAME = 1024  # samples per output frame (hop 256 x pooling 4)
LOOK_AHEAD = 768  # samples an output frame reads after its end


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_experiment):
    root = tmp_path_factory.mktemp("causal")
    experiment, _ = make_experiment(root / "exp", "crnn_mt.yaml", SMALL_CAUSAL)
    return export_detector(experiment, root / "model")


def _signal(seconds, seed=0):
    """Noise whose loudness changes every 0.3 s, so the scores move."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    gain = np.repeat(rng.uniform(0.01, 1.0, n // 4800 + 1), 4800)[:n]
    return (0.3 * gain * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def detector(folder, tmp_path_factory):
    det = SoundEventDetector.from_hparams(
        source=str(folder), savedir=tmp_path_factory.mktemp("sd")
    )
    # Random weights large enough that a change of the input reaches the
    # scores (the untrained model's GLU blocks damp it below float
    # resolution), then the optimised copy again.
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in det.mods.model.state_dict().items():
        if value.is_floating_point():
            value = 0.5 * torch.randn(value.shape, generator=generator)
            if key.endswith("running_var"):
                value = value.abs() + 0.5
        state[key] = value
    det.mods.model.load_state_dict(state)
    det.model = optimize_for_inference(det.mods.model)
    raw = det.raw_frame_scores([torch.from_numpy(_signal(12.0))])[0]
    # Odd lengths: a filtered score is one of the raw scores, so it stays
    # half a gap away from a threshold set in a gap between them.
    det.postprocessing = PostProcessing(
        det.classes,
        median_filter=[7, 3, 1, 5, 7, 7, 3, 7, 7, 5],
        threshold={c: _in_a_gap(raw[c].to_numpy()) for c in det.classes},
    )
    return det


def _in_a_gap(scores):
    """A threshold mid-way in the widest gap of the middle scores.

    The untrained model's scores sit close together; a threshold on one of
    them would turn float rounding (1e-7) into different events.
    """
    values = np.unique(scores)
    middle = values[int(0.2 * len(values)) : int(0.8 * len(values)) + 1]
    gaps = np.diff(middle)
    widest = int(np.argmax(gaps))
    assert gaps[widest] > 1e-5
    return float((middle[widest] + middle[widest + 1]) / 2)


def _chunks(wav, seconds):
    size = max(int(round(seconds * RATE)), 1)
    return [wav[i : i + size] for i in range(0, len(wav), size)]


def _rows(events):
    return sorted(
        (round(e.onset, 6), round(e.offset, 6), e.event_label, e.score)
        for e in events
    )


def test_the_folder_records_a_causal_model(folder, detector):
    text = (folder / "hyperparams.yaml").read_text()
    assert "\ncausal: true\n" in text
    card = (folder / "README.md").read_text()
    assert "- causal: yes" in card and "48 ms of audio after its end" in card
    assert detector.causal and detector.mods.frontend.scaling == "fixed"


@pytest.mark.parametrize(
    "seconds, chunk",
    [
        (2.0, 0.01),
        pytest.param(12.0, 0.1, marks=pytest.mark.slow),
        (12.0, 1.0),
        (12.0, 10.0),
    ],
)
def test_stream_gives_the_offline_frames_and_events(detector, seconds, chunk):
    wav = _signal(seconds, seed=1)
    raw = detector.raw_frame_scores([torch.from_numpy(wav)])[0]
    offline = detector.postprocessing.events(raw)
    stream = CausalEventStream(detector)
    seen = []
    add_rows = stream._add_rows

    def recording(mel):  # the frames the stream scores, as they come
        add_rows(mel)
        seen.extend(stream._rows[len(seen) - stream._row0 :])

    stream._add_rows = recording
    streamed = []
    for piece in _chunks(wav, chunk):
        streamed += stream.push(piece)
    streamed += stream.finish()
    # The carried state gives the frames of one offline pass.
    frames = raw[detector.classes].to_numpy()
    assert len(seen) == len(frames) == seconds * RATE // FRAME
    np.testing.assert_allclose(np.stack(seen), frames, rtol=0, atol=1e-6)
    assert len(offline) > 3
    got, want = _rows(streamed), _rows(offline.itertuples(index=False))
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose(
        [g[3] for g in got], [w[3] for w in want], rtol=1e-5
    )


def test_no_frame_reads_audio_beyond_the_stated_look_ahead(detector):
    wav = _signal(6.0, seed=2)
    cut = 3 * RATE + 123  # the audio from here on is replaced
    changed = wav.copy()
    changed[cut:] = _signal(6.0, seed=3)[cut:]
    before, after = (
        detector.raw_frame_scores([torch.from_numpy(w)])[0][detector.classes]
        .to_numpy()
        .astype(np.float32)
        for w in (wav, changed)
    )
    # Frame j reads samples up to (j + 1) * FRAME + LOOK_AHEAD - 1.
    last_kept = (cut - LOOK_AHEAD) // FRAME - 1
    assert (last_kept + 1) * FRAME + LOOK_AHEAD - 1 < cut
    assert (last_kept + 2) * FRAME + LOOK_AHEAD - 1 >= cut
    np.testing.assert_array_equal(
        before[: last_kept + 1], after[: last_kept + 1]
    )
    # The next frame reads the new audio, so the bound is tight.
    assert np.abs(before[last_kept + 1] - after[last_kept + 1]).max() > 0
    assert np.abs(before[-10:] - after[-10:]).max() > 1e-3


def test_events_come_within_the_latency_from_the_start(detector):
    wav = _signal(4.0, seed=4)
    stream = CausalEventStream(detector, median_filter=3)
    # 48 ms after a frame, and 2 frames for the 3-frame median filter
    assert stream.latency() == pytest.approx((LOOK_AHEAD + 2 * FRAME) / RATE)
    chunk = 0.05
    events = []
    for piece in _chunks(wav, chunk):
        events += stream.push(piece)
    assert events and min(e.emitted_at for e in events) < 2.0
    for event in events:
        assert event.offset < event.emitted_at
        assert event.emitted_at <= event.offset + stream.latency() + chunk


def test_weak_scores_of_the_frames_so_far(detector):
    wav = _signal(10.0, seed=5)
    stream = CausalEventStream(detector)
    for piece in _chunks(wav, 0.5):
        stream.push(piece)
    stream.finish()
    from speechbrain_sed_condmix.lobes.causal import offline_mel

    with torch.no_grad():
        mel = offline_mel(detector.mods.frontend, torch.from_numpy(wav))
        weak = detector.model(mel).weak[0]
    got = stream.weak()
    np.testing.assert_allclose(
        [got[c] for c in detector.classes], weak.numpy(), atol=1e-6
    )


def test_windowed_options_are_refused_for_a_causal_model(detector):
    with pytest.raises(ValueError, match="look_ahead does not apply"):
        list(detector.stream([np.zeros(1600)], look_ahead=1.0))
    with pytest.raises(ValueError, match="at least 1 frame"):
        CausalEventStream(detector, median_filter=0)


@pytest.mark.slow
def test_sed_detect_streams_a_causal_model(tmp_path, make_experiment):
    """``sed-detect --stream FILE``: one Dog event that every frame passes,
    closed at the end of the file (its last frame, cut at 3 s)."""
    import soundfile as sf

    from speechbrain_sed_condmix.cli import detect_main
    from speechbrain_sed_condmix.importing import DESED_CLASSES

    experiment, _ = make_experiment(
        tmp_path / "exp", "crnn_mt.yaml", SMALL_CAUSAL
    )
    threshold = dict.fromkeys(DESED_CLASSES, 2.0)
    threshold["Dog"] = -1.0
    post = PostProcessing(DESED_CLASSES, median_filter=7, threshold=threshold)
    model = export_detector(experiment, tmp_path / "model", postprocessing=post)
    sf.write(tmp_path / "clip.wav", _signal(3.0, seed=6), RATE)
    out = tmp_path / "events.tsv"
    code = detect_main(
        [
            "--stream",
            str(tmp_path / "clip.wav"),
            "--model",
            str(model),
            "--median-filter",
            "3",
            "--chunk",
            "0.05",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    import pandas as pd

    table = pd.read_csv(out, sep="\t")
    assert table[["onset", "offset", "event_label", "emitted_at"]].to_dict(
        "records"
    ) == [
        {"onset": 0.0, "offset": 3.0, "event_label": "Dog", "emitted_at": 3.0}
    ]
