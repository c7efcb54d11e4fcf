"""Tests of speechbrain_sed_condmix.postprocessing."""

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage

from speechbrain_sed_condmix.postprocessing import (
    median_filter,
    scores_to_events,
)
from speechbrain_sed_condmix.scores import (
    frame_scores_to_dataframe,
    read_scores,
    write_scores,
)

CLASSES = ["a", "b", "c"]


def _random_scores(seed, n_frames=156, classes=CLASSES):
    rng = np.random.default_rng(seed)
    return frame_scores_to_dataframe(
        rng.random((n_frames, len(classes))), classes
    )


def test_timestamps_full_clip():
    df = frame_scores_to_dataframe(np.zeros((156, 3)), CLASSES)
    assert list(df.columns) == ["onset", "offset", *CLASSES]
    timestamps = np.append(df["onset"].to_numpy(), df["offset"].iloc[-1])
    assert len(timestamps) == 157
    assert timestamps[0] == 0.0
    assert timestamps[-1] == 9.984
    # Exact decimal values on the 64 ms grid (no accumulated float error).
    np.testing.assert_array_equal(
        timestamps, [round(k * 0.064, 6) for k in range(157)]
    )
    assert timestamps[3] == 0.192


def test_timestamps_duration_cut():
    values = np.arange(156 * 2, dtype=float).reshape(156, 2) / 1000
    df = frame_scores_to_dataframe(values, ["x", "y"], duration=9.3)
    # Frames starting before 9.3 s: k * 0.064 < 9.3 -> k <= 145.
    assert len(df) == 146
    assert df["onset"].iloc[-1] == 9.28
    assert df["offset"].iloc[-1] == 9.3
    assert df["offset"].iloc[-2] == 9.28
    np.testing.assert_array_equal(df[["x", "y"]].to_numpy(), values[:146])
    # A duration on a frame edge drops the frame starting there.
    df = frame_scores_to_dataframe(values, ["x", "y"], duration=0.128)
    assert df["onset"].tolist() == [0.0, 0.064]
    assert df["offset"].tolist() == [0.064, 0.128]
    # A duration past the last frame changes nothing.
    full = frame_scores_to_dataframe(values, ["x", "y"])
    longer = frame_scores_to_dataframe(values, ["x", "y"], duration=10.0)
    pd.testing.assert_frame_equal(full, longer)


def test_frame_scores_errors():
    with pytest.raises(ValueError, match="2 event classes"):
        frame_scores_to_dataframe(np.zeros((4, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        frame_scores_to_dataframe(np.zeros(4), ["a"])


def test_median_filter_matches_scipy():
    df = _random_scores(0)
    for length in (3, 7, 11):
        out = median_filter(df, length)
        expected = scipy.ndimage.median_filter(
            df[CLASSES].to_numpy(), size=(length, 1)
        )
        np.testing.assert_array_equal(out[CLASSES].to_numpy(), expected)
        pd.testing.assert_frame_equal(
            out[["onset", "offset"]], df[["onset", "offset"]]
        )


def test_median_filter_classwise():
    df = _random_scores(1)
    lengths = {"a": 3, "b": 9, "c": 5}
    for spec in (lengths, [3, 9, 5], np.array([3, 9, 5])):
        out = median_filter(df, spec)
        for name, length in lengths.items():
            expected = scipy.ndimage.median_filter(
                df[name].to_numpy(), size=length, mode="reflect"
            )
            np.testing.assert_array_equal(out[name].to_numpy(), expected)


def test_median_filter_identity_and_no_mutation():
    df = _random_scores(2)
    before = df.copy(deep=True)
    out = median_filter(df, 1)
    pd.testing.assert_frame_equal(out, df)
    assert out is not df
    median_filter(df, 7)
    median_filter(df, {"a": 1, "b": 3, "c": 5})
    pd.testing.assert_frame_equal(df, before)


def test_median_filter_dict():
    scores = {"clip2": _random_scores(3), "clip1": _random_scores(4, 100)}
    before = {k: v.copy(deep=True) for k, v in scores.items()}
    out = median_filter(scores, 5)
    assert isinstance(out, dict)
    assert list(out) == ["clip2", "clip1"]
    for key, frame in scores.items():
        pd.testing.assert_frame_equal(frame, before[key])
        expected = scipy.ndimage.median_filter(
            frame[CLASSES].to_numpy(), size=(5, 1)
        )
        np.testing.assert_array_equal(out[key][CLASSES].to_numpy(), expected)


def test_even_lengths_match_scipy_like_the_reference():
    # ATST-SED stage 2 uses even windows (e.g. 6 and 4 frames)
    df = _random_scores(40)
    out = median_filter(df, 4)
    expected = scipy.ndimage.median_filter(
        df[CLASSES].to_numpy(), size=(4, 1), mode="reflect"
    )
    np.testing.assert_array_equal(out[CLASSES].to_numpy(), expected)


def test_median_filter_rejects_bad_lengths():
    df = _random_scores(5)
    with pytest.raises(ValueError, match="positive integer"):
        median_filter(df, 2.5)
    with pytest.raises(ValueError, match="positive integer"):
        median_filter(df, 0)
    with pytest.raises(ValueError, match="no entry"):
        median_filter(df, {"a": 3})
    with pytest.raises(ValueError, match="2 entries"):
        median_filter(df, [3, 5])


def _grid_frame(columns, step=0.1):
    return frame_scores_to_dataframe(
        np.array(list(columns.values())).T, list(columns), step
    )


def test_scores_to_events_hand_built():
    df = _grid_frame(
        {
            "a": [0.6, 0.6, 0.2, 0.7, 0.5, 0.9],
            "b": [0.1, 0.5, 0.51, 0.52, 0.1, 0.0],
        }
    )
    events = scores_to_events(df, 0.5)
    assert list(events.columns) == ["onset", "offset", "event_label"]
    # Strict ">": 0.5 is inactive, so a's last run is split at frame 4.
    assert events.values.tolist() == [
        [0.0, 0.2, "a"],
        [0.2, 0.4, "b"],
        [0.3, 0.4, "a"],
        [0.5, 0.6, "a"],
    ]
    per_class = scores_to_events(df, {"a": 0.65, "b": 0.0})
    assert per_class.values.tolist() == [
        [0.0, 0.5, "b"],
        [0.3, 0.4, "a"],
        [0.5, 0.6, "a"],
    ]
    none = scores_to_events(df, 0.95)
    assert none.empty
    assert list(none.columns) == ["onset", "offset", "event_label"]


def test_scores_to_events_dict():
    first = _grid_frame({"a": [0.9, 0.1, 0.1], "b": [0.0, 0.0, 0.8]})
    second = _grid_frame({"a": [0.0, 0.0, 0.0], "b": [0.0, 0.0, 0.0]})
    third = _grid_frame({"a": [0.0, 0.7, 0.7], "b": [0.0, 0.0, 0.0]})
    events = scores_to_events({"z": third, "y": second, "x": first}, 0.5)
    assert list(events.columns) == [
        "filename",
        "onset",
        "offset",
        "event_label",
    ]
    assert events.values.tolist() == [
        ["x.wav", 0.0, 0.1, "a"],
        ["x.wav", 0.2, 0.3, "b"],
        ["z.wav", 0.1, 0.3, "a"],
    ]


def _runs_by_hand(frame, threshold):
    """Events and peak scores from a plain loop over frames and classes."""
    classes = [c for c in frame.columns if c not in ("onset", "offset")]
    onsets, offsets = frame["onset"].tolist(), frame["offset"].tolist()
    events = []
    for name in classes:
        values = frame[name].tolist()
        start = None
        for k, value in enumerate([*values, -np.inf]):
            if value > threshold and start is None:
                start = k
            elif value <= threshold and start is not None:
                peak = max(values[start:k])
                events.append((onsets[start], offsets[k - 1], name, peak))
                start = None
    return sorted(events, key=lambda e: (e[0], e[1], e[2]))


@pytest.mark.parametrize("duration", [None, 7.3])
def test_events_with_scores_match_a_plain_loop(duration):
    rng = np.random.default_rng(11)
    frame = frame_scores_to_dataframe(
        np.round(rng.random((156, 3)), 1), CLASSES, duration=duration
    )
    events = scores_to_events(frame, 0.5, with_score=True)
    expected = _runs_by_hand(frame, 0.5)
    assert len(expected) > 50
    assert [tuple(row) for row in events.values.tolist()] == expected
    assert frame["offset"].iloc[-1] == (duration or 9.984)


def test_write_read_roundtrip(tmp_path):
    scores = {"clip_b": _random_scores(6, 20), "clip_a": _random_scores(7, 9)}
    folder = write_scores(scores, tmp_path / "scores")
    assert sorted(p.name for p in folder.iterdir()) == [
        "clip_a.tsv",
        "clip_b.tsv",
    ]
    back = read_scores(folder)
    assert sorted(back) == ["clip_a", "clip_b"]
    for key, frame in scores.items():
        assert list(back[key].columns) == list(frame.columns)
        np.testing.assert_allclose(
            back[key].to_numpy(), frame.to_numpy(), rtol=0, atol=1e-12
        )
