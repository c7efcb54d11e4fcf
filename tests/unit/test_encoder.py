"""Tests of the frame label encoder."""

import math

import numpy as np
import pytest
import torch
from sed_scores_eval.base_modules.detection import scores_to_event_list
from sed_scores_eval.base_modules.scores import create_score_dataframe

from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES


def _decode(enc, frames):
    """Events of ``[C, T]`` frame targets, decoded by sed_scores_eval."""
    frames = np.asarray(frames).T
    timestamps = enc.frame_to_time(np.arange(len(frames) + 1))
    scores = create_score_dataframe(frames, timestamps, enc.classes)
    return [
        (float(onset), float(offset), label)
        for onset, offset, label in scores_to_event_list(scores, 0.5)
    ]


def test_class_list_spelling_and_order():
    # exact spelling and order of the reference encoder (alphabetical)
    assert list(DESED_CLASSES) == [
        "Alarm_bell_ringing",
        "Blender",
        "Cat",
        "Dishes",
        "Dog",
        "Electric_shaver_toothbrush",
        "Frying",
        "Running_water",
        "Speech",
        "Vacuum_cleaner",
    ]


def test_default_grid_matches_reference():
    enc = FrameLabelEncoder(DESED_CLASSES)
    # 10 s * 16000 / 256 = 625 feature frames, pooled by 4 -> 156.
    assert enc.n_frames == 156
    assert enc.frame_duration == pytest.approx(0.064)
    assert enc.classes == list(DESED_CLASSES)
    ts = enc.timestamps()
    assert len(ts) == 157 and ts[0] == 0.0 and ts[-1] == pytest.approx(9.984)


def test_other_front_end_grid():
    # e.g. an ATST-like grid: hop 160 at 16 kHz, no pooling -> 1000 frames.
    enc = FrameLabelEncoder(DESED_CLASSES, hop_length=160, pooling=1)
    assert enc.n_frames == 1000
    assert enc.frame_duration == pytest.approx(0.01)


def test_encode_strong_floor_onset_ceil_offset():
    enc = FrameLabelEncoder(DESED_CLASSES)
    y = enc.encode_strong([(0.1, 0.5, "Dog"), (9.5, 12.0, "Cat")])
    dog = enc.class_to_index["Dog"]
    cat = enc.class_to_index["Cat"]
    # onset 0.1 s = frame 1.5625 -> floor 1; offset 0.5 s = 7.8125 -> ceil 8
    expected = np.zeros(156)
    expected[1:8] = 1
    assert y[dog].numpy().tolist() == expected.tolist()
    # 9.5 s = 148.4 -> 148; offset clipped to 10 s -> 156.25 -> clipped 156
    assert y[cat, :148].sum() == 0 and y[cat, 148:].sum() == 156 - 148
    assert y.sum() == 7 + 8


def test_encode_strong_respects_clip_duration_and_empty_labels():
    enc = FrameLabelEncoder(DESED_CLASSES)
    y = enc.encode_strong(
        [(8.0, 10.0, "Speech"), (0, 0, ""), (1, 2, None)], duration=9.0
    )
    speech = enc.class_to_index["Speech"]
    # 8.0 / 0.064 = 125 and 9.0 / 0.064 = 140.625 -> ceil 141
    assert torch.nonzero(y[speech]).flatten().tolist() == list(range(125, 141))
    assert y.sum() == 16


def test_encode_weak_and_unknown_label():
    enc = FrameLabelEncoder(DESED_CLASSES)
    y = enc.encode_weak("Dog,Alarm_bell_ringing")
    assert y.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert enc.encode_weak(["Speech"]).sum() == 1
    with pytest.raises(ValueError, match="Unknown label 'Horse'"):
        enc.encode_weak("Horse")
    with pytest.raises(ValueError, match="Unknown label"):
        enc.encode_strong([(0, 1, "Horse")])


def test_round_trip_exact_to_one_frame():
    enc = FrameLabelEncoder(DESED_CLASSES)
    rng = np.random.default_rng(0)
    for _ in range(200):
        label = DESED_CLASSES[rng.integers(10)]
        onset = float(rng.uniform(0, 9.5))
        offset = float(min(onset + rng.uniform(0.05, 4.0), 10.0))
        decoded = _decode(enc, enc.encode_strong([(onset, offset, label)]))
        assert len(decoded) == 1
        d_on, d_off, d_label = decoded[0]
        assert d_label == label
        # Decoded boundaries sit on the grid, at most one frame outside;
        # the grid ends at 156 * 0.064 = 9.984 s.
        end = min(offset, 9.984)
        assert onset - enc.frame_duration < d_on <= onset + 1e-9
        assert end - 1e-9 <= d_off < end + enc.frame_duration


def test_round_trip_on_grid_is_identity():
    enc = FrameLabelEncoder(DESED_CLASSES)
    events = [(0.128, 1.024, "Blender"), (2.048, 3.2, "Speech")]
    assert _decode(enc, enc.encode_strong(events)) == events


def test_time_frame_conversion():
    enc = FrameLabelEncoder(DESED_CLASSES)
    assert enc.time_to_frame(-1) == 0.0
    assert enc.time_to_frame(20) == 156.0
    assert enc.frame_to_time(3) == pytest.approx(0.192)
    assert math.isclose(enc.frame_to_time(1000), 10.0)
