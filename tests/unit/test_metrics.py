"""Tests of speechbrain_sed_condmix.metrics (and plots)."""

import math

import numpy as np
import pandas as pd
import pytest
from sed_scores_eval import intersection_based

from speechbrain_sed_condmix.dataio.layout import (
    DESED_CLASSES as LAYOUT_CLASSES,
)
from speechbrain_sed_condmix.metrics import (
    COLLAR_F1_PARAMS,
    INTERSECTION_F1_PARAMS,
    PSDS1_PARAMS,
    PSDS2_PARAMS,
    compute_sed_metrics,
)
from speechbrain_sed_condmix.plots import plot_psd_roc
from speechbrain_sed_condmix.scores import (
    frame_scores_to_dataframe,
    write_scores,
)

DESED_CLASSES = list(LAYOUT_CLASSES)


def _frames(values_per_class, step):
    """Score DataFrame from {class: per-frame values} on a regular grid."""
    names = list(values_per_class)
    n_frames = len(values_per_class[names[0]])
    timestamps = np.round(np.arange(n_frames + 1) * step, 6)
    data = {"onset": timestamps[:-1], "offset": timestamps[1:]}
    for name in names:
        data[name] = np.asarray(values_per_class[name], dtype=float)
    return pd.DataFrame(data)


def _spans(n_frames, spans):
    """Per-frame values: ``value`` on frames [start, stop), else 0."""
    values = np.zeros(n_frames)
    for start, stop, value in spans:
        values[start:stop] = value
    return values


def test_parameter_sets():
    assert dict(PSDS1_PARAMS) == {
        "dtc_threshold": 0.7,
        "gtc_threshold": 0.7,
        "cttc_threshold": None,
        "alpha_ct": 0.0,
        "alpha_st": 1.0,
        "max_efpr": 100.0,
        "unit_of_time": "hour",
    }
    assert dict(PSDS2_PARAMS) == {
        "dtc_threshold": 0.1,
        "gtc_threshold": 0.1,
        "cttc_threshold": 0.3,
        "alpha_ct": 0.5,
        "alpha_st": 1.0,
        "max_efpr": 100.0,
        "unit_of_time": "hour",
    }
    assert dict(INTERSECTION_F1_PARAMS) == {
        "dtc_threshold": 0.5,
        "gtc_threshold": 0.5,
    }
    assert dict(COLLAR_F1_PARAMS) == {
        "onset_collar": 0.2,
        "offset_collar": 0.2,
        "offset_collar_rate": 0.2,
    }
    with pytest.raises(TypeError):
        PSDS1_PARAMS["alpha_st"] = 0.0


# ---------------------------------------------------------------------------
# Hand-computed PSDS.
#
# One class "a", three clips of 40 s with 1 s frames; total duration 120 s =
# 1/30 h, so each false positive (FP) adds 30 FP/hour to the eFPR. Unlisted
# frames score 0.
#   c1: GT (1, 3).  Scores 0.9 on [1, 3).
#   c2: GT (5, 7).  Scores 0.6 on [5, 7); 0.8 on [10, 11) (off any event).
#   c3: GT (0, 3).  Scores 0.3 on [0, 1) (covers 1/3 of the event);
#                   0.7 on [8, 9) (off any event).
# Detections at threshold t are the runs of frames with score > t.
#
# Scenario 1 (dtc = gtc = 0.7):
#   t in [0.8, 0.9): c1 (1,3) exact -> TP.           TPR 1/3, eFPR 0
#   t in [0.7, 0.8): + c2 (10,11) FP.                 TPR 1/3, eFPR 30
#   t in [0.6, 0.7): + c3 (8,9) FP.                   TPR 1/3, eFPR 60
#   t in [0.3, 0.6): + c2 (5,7) exact -> TP.          TPR 2/3, eFPR 60
#   t in [0.0, 0.3): + c3 (0,1): inside the GT (dtc 1, so no FP) but covers
#                    1/3 < 0.7 of it -> not a TP.     TPR 2/3, eFPR 60
#   t < 0: every clip is one detection (0, 40): dtc 2/40, 2/40, 3/40 < 0.7
#          -> 3 FP, 0 TP.                             TPR 0,   eFPR 90
#   The ROC keeps the best TPR reachable at each eFPR (the last point is
#   dominated): TPR 1/3 on [0, 60), 2/3 on [60, 100].
#   PSDS1 = (1/3 * 60 + 2/3 * 40) / 100 = (20 + 80/3) / 100 = 7/15.
# Scenario 2 (dtc = gtc = 0.1; one class, so no cross-triggers):
#   same as above down to t = 0.3: TPR 1/3 on [0, 60), 2/3 at 60;
#   t in [0.0, 0.3): c3 (0,1) covers 1/3 >= 0.1 -> TP. TPR 1,   eFPR 60
#   t < 0: dtc 2/40, 2/40, 3/40 < 0.1 -> 3 FP.        TPR 0,   eFPR 90
#   PSDS2 = (1/3 * 60 + 1 * 40) / 100 = 60/100 = 3/5.
# With a single class the alpha_st (std over classes) term is zero.
# ---------------------------------------------------------------------------
PSDS1_BY_HAND = 7 / 15
PSDS2_BY_HAND = 3 / 5


def _hand_psds_case():
    scores = {
        "c1": _frames({"a": _spans(40, [(1, 3, 0.9)])}, 1.0),
        "c2": _frames({"a": _spans(40, [(5, 7, 0.6), (10, 11, 0.8)])}, 1.0),
        "c3": _frames({"a": _spans(40, [(0, 1, 0.3), (8, 9, 0.7)])}, 1.0),
    }
    truth = {
        "c1": [(1.0, 3.0, "a")],
        "c2": [(5.0, 7.0, "a")],
        "c3": [(0.0, 3.0, "a")],
    }
    durations = {"c1": 40.0, "c2": 40.0, "c3": 40.0}
    return scores, truth, durations


def test_psds_by_hand_library_agrees():
    scores, truth, durations = _hand_psds_case()
    for alpha_st in (0.0, 1.0):
        value, _, (etpr, efpr), _ = intersection_based.psds(
            scores,
            truth,
            durations,
            dtc_threshold=0.7,
            gtc_threshold=0.7,
            alpha_st=alpha_st,
            max_efpr=100.0,
        )
        assert value == pytest.approx(PSDS1_BY_HAND, abs=1e-12)
        np.testing.assert_allclose(etpr, [1 / 3, 2 / 3, 2 / 3])
        np.testing.assert_allclose(efpr, [0.0, 60.0, 100.0])


def test_psds_by_hand_compute_sed_metrics():
    scores, truth, durations = _hand_psds_case()
    out = compute_sed_metrics(scores, truth, durations, return_psd_roc=True)
    assert out["psds1"] == pytest.approx(PSDS1_BY_HAND, abs=1e-12)
    assert out["psds2"] == pytest.approx(PSDS2_BY_HAND, abs=1e-12)
    assert out["per_class"]["a"]["psds1"] == pytest.approx(PSDS1_BY_HAND)
    assert out["per_class"]["a"]["psds2"] == pytest.approx(PSDS2_BY_HAND)
    etpr, efpr = out["psd_roc"]["psds1"]
    np.testing.assert_allclose(etpr, [1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(efpr, [0.0, 60.0, 100.0])
    etpr, efpr = out["psd_roc"]["psds2"]
    np.testing.assert_allclose(etpr, [1 / 3, 1.0, 1.0])
    np.testing.assert_allclose(efpr, [0.0, 60.0, 100.0])
    tpr, efpr, thresholds = out["per_class_psd_roc"]["psds1"]["a"]
    np.testing.assert_allclose(thresholds, [0.9, 0.6])


# ---------------------------------------------------------------------------
# Hand-computed F1 at threshold 0.5, classes a and b, two clips of 2 s with
# 0.1 s frames.
#   x: GT a (0.5, 1.0), b (1.2, 1.8).
#      det a (0.5, 1.3); det b (0.0, 0.1) and (1.3, 1.8).
#   y: GT a (0.0, 2.0).
#      det a (0.0, 1.7); det b (0.2, 0.3) and (1.5, 1.7).
# Intersection (dtc = gtc = 0.5; FP = detection with dtc < 0.5, TP = GT
# event covered >= 0.5 by detections with dtc >= 0.5):
#   a: x det dtc 0.5/0.8 = 0.625, covers 1.0 -> TP; y det dtc 1, covers
#      0.85 -> TP. TP 2, FP 0, 2 GT: P 1, R 1, F1 = 1.
#   b: x (1.3,1.8) dtc 1, covers 0.5/0.6 -> TP; (0.0,0.1), (0.2,0.3),
#      (1.5,1.7) hit no b event -> 3 FP. P 1/4, R 1, F1 = 2/5.
#   macro = (1 + 2/5) / 2 = 0.7.
# Collar (onset 0.2 s, offset max(0.2 s, 0.2 * GT length)):
#   a: x offset off by 0.3 > 0.2 -> FP + miss; y offset off by 0.3 <=
#      max(0.2, 0.2 * 2.0 = 0.4) -> TP. TP 1, FP 1, 2 GT: F1 = 2/(2+1+1) =
#      1/2.
#   b: x (1.3,1.8) onset off by 0.1 -> TP; 3 FP as above: F1 = 2/(2+3) =
#      2/5.
#   macro = (1/2 + 2/5) / 2 = 0.45.
# ---------------------------------------------------------------------------
def _hand_f1_case():
    scores = {
        "x": _frames(
            {
                "a": _spans(20, [(5, 13, 0.9)]),
                "b": _spans(20, [(0, 1, 0.6), (13, 18, 0.8)]),
            },
            0.1,
        ),
        "y": _frames(
            {
                "a": _spans(20, [(0, 17, 0.7)]),
                "b": _spans(20, [(2, 3, 0.6), (15, 17, 0.6)]),
            },
            0.1,
        ),
    }
    truth = {
        "x": [(0.5, 1.0, "a"), (1.2, 1.8, "b")],
        "y": [(0.0, 2.0, "a")],
    }
    return scores, truth, {"x": 2.0, "y": 2.0}


def test_f1_by_hand():
    scores, truth, durations = _hand_f1_case()
    out = compute_sed_metrics(scores, truth, durations, threshold=0.5)
    per_class = out["per_class"]
    assert per_class["a"]["intersection_f1"] == pytest.approx(1.0)
    assert per_class["b"]["intersection_f1"] == pytest.approx(2 / 5)
    assert per_class["a"]["collar_f1"] == pytest.approx(1 / 2)
    assert per_class["b"]["collar_f1"] == pytest.approx(2 / 5)
    assert out["intersection_f1"] == pytest.approx(0.7)
    assert out["collar_f1"] == pytest.approx(0.45)
    # A class-wise threshold that silences b's weak (0.6) false alarms.
    out = compute_sed_metrics(
        scores, truth, durations, threshold={"a": 0.5, "b": 0.7}
    )
    assert out["per_class"]["b"]["intersection_f1"] == pytest.approx(1.0)
    assert out["per_class"]["b"]["collar_f1"] == pytest.approx(1.0)


def test_macro_is_mean_of_per_class():
    scores, truth, durations = _hand_f1_case()
    out = compute_sed_metrics(scores, truth, durations)
    assert sorted(out["per_class"]) == ["a", "b"]
    for values in out["per_class"].values():
        assert sorted(values) == [
            "collar_f1",
            "intersection_f1",
            "psds1",
            "psds2",
        ]
        assert all(isinstance(v, float) for v in values.values())
    for key in ("intersection_f1", "collar_f1"):
        mean = np.mean([v[key] for v in out["per_class"].values()])
        assert out[key] == pytest.approx(mean, abs=1e-12)
    assert all(
        isinstance(out[k], float)
        for k in ("psds1", "psds2", "intersection_f1", "collar_f1")
    )


# ---------------------------------------------------------------------------
# Oracle: the ground truth itself, rasterised on the 64 ms grid, must score
# (close to) perfectly.
# ---------------------------------------------------------------------------
ORACLE_TRUTH = {
    "o1": [
        (0.64, 2.56, "Alarm_bell_ringing"),  # on the grid
        (1.0, 4.33, "Speech"),
        (5.1, 5.9, "Dog"),
        (7.0, 8.2, "Dog"),
    ],
    "o2": [(0.0, 10.0, "Blender"), (3.21, 3.9, "Cat")],
    "o3": [
        (0.3, 0.9, "Dishes"),
        (2.0, 2.64, "Dishes"),
        (4.0, 9.5, "Electric_shaver_toothbrush"),
        (6.1, 6.8, "Speech"),
    ],
    "o4": [(1.5, 9.3, "Frying"), (0.192, 1.024, "Running_water")],
    "o5": [
        (2.2, 7.7, "Vacuum_cleaner"),
        (0.5, 1.2, "Speech"),
        (8.0, 9.0, "Speech"),
        (3.0, 3.5, "Alarm_bell_ringing"),
    ],
    "o6": [(0.1, 0.8, "Cat"), (4.48, 5.12, "Dog")],
}
ORACLE_DURATIONS = {"o1": 10.0, "o2": 10.0, "o3": 10.0, "o4": 9.3}
ORACLE_DURATIONS.update({"o5": 10.0, "o6": 10.0})


def _oracle_scores():
    hop, n_frames = 0.064, 156
    scores = {}
    for clip_id, events in ORACLE_TRUTH.items():
        values = np.zeros((n_frames, len(DESED_CLASSES)))
        for onset, offset, label in events:
            # Round before floor/ceil so that grid times are not pushed a
            # frame outwards by float noise (2.56 / 0.064 = 40.000...01).
            start = math.floor(round(onset / hop, 6))
            stop = min(math.ceil(round(offset / hop, 6)), n_frames)
            values[start:stop, DESED_CLASSES.index(label)] = 1.0
        duration = ORACLE_DURATIONS[clip_id]
        scores[clip_id] = frame_scores_to_dataframe(
            values, DESED_CLASSES, duration=duration if duration < 10 else None
        )
    return scores


def test_oracle_scores_are_near_perfect():
    out = compute_sed_metrics(_oracle_scores(), ORACLE_TRUTH, ORACLE_DURATIONS)
    assert out["psds1"] >= 0.95
    assert out["psds2"] >= 0.95
    assert out["intersection_f1"] == pytest.approx(1.0)
    assert out["collar_f1"] == pytest.approx(1.0)
    assert sorted(out["per_class"]) == DESED_CLASSES


# ---------------------------------------------------------------------------
# Inputs: files, DataFrames, clips without events, copy-on-write.
# ---------------------------------------------------------------------------
def _truth_table(truth):
    rows = [
        (f"{clip}.wav", onset, offset, label)
        for clip, events in truth.items()
        for onset, offset, label in events
    ]
    return pd.DataFrame(
        rows, columns=["filename", "onset", "offset", "event_label"]
    )


def test_files_and_clips_without_events(tmp_path):
    scores, truth, durations = _hand_f1_case()
    expected = compute_sed_metrics(scores, truth, durations)

    # A clip without events, scored with confident false alarms: the
    # reference drops it everywhere, so the metrics must not change.
    noisy = dict(scores)
    noisy["empty"] = _frames({"a": np.ones(20), "b": np.ones(20)}, 0.1)
    table = _truth_table(truth)
    table.loc[len(table)] = ["empty.wav", np.nan, np.nan, np.nan]
    truth_tsv = tmp_path / "truth.tsv"
    table.to_csv(truth_tsv, sep="\t", index=False)
    durations_tsv = tmp_path / "durations.tsv"
    pd.DataFrame(
        {
            "filename": ["x.wav", "y.wav", "empty.wav"],
            "duration": [2.0, 2.0, 2.0],
        }
    ).to_csv(durations_tsv, sep="\t", index=False)
    folder = write_scores(noisy, tmp_path / "scores")

    from_files = compute_sed_metrics(folder, truth_tsv, durations_tsv)
    from_frames = compute_sed_metrics(
        noisy, pd.read_csv(truth_tsv, sep="\t"), durations_tsv
    )
    # The empty clip may also be absent from the scores.
    without = compute_sed_metrics(scores, truth_tsv, durations_tsv)
    for out in (from_files, from_frames, without):
        for key in ("psds1", "psds2", "intersection_f1", "collar_f1"):
            assert out[key] == pytest.approx(expected[key], abs=1e-12)


def test_works_under_copy_on_write():
    scores, truth, durations = _hand_psds_case()
    with pd.option_context("mode.copy_on_write", True):
        scores = {
            k: pd.DataFrame(v.to_numpy(), columns=v.columns)
            for k, v in scores.items()
        }
        out = compute_sed_metrics(scores, truth, durations)
    assert out["psds1"] == pytest.approx(PSDS1_BY_HAND)


def test_input_scores_not_modified():
    scores, truth, durations = _hand_f1_case()
    before = {k: v.copy(deep=True) for k, v in scores.items()}
    compute_sed_metrics(scores, truth, durations)
    for key, frame in scores.items():
        pd.testing.assert_frame_equal(frame, before[key])


# ---------------------------------------------------------------------------
# Error messages.
# ---------------------------------------------------------------------------
def test_error_clip_sets_differ():
    scores, truth, durations = _hand_f1_case()
    truth = {"x": truth["x"], "z": [(0.0, 1.0, "a")]}
    with pytest.raises(ValueError) as error:
        compute_sed_metrics(scores, truth, durations)
    message = str(error.value)
    assert "1 scored clip(s) missing from the ground truth: ['y']" in message
    assert "1 ground truth clip(s) without scores: ['z']" in message

    scores, truth, _ = _hand_f1_case()
    with pytest.raises(ValueError, match=r"missing from the durations: \['y'"):
        compute_sed_metrics(scores, truth, {"x": 2.0})


def test_error_lists_at_most_ten_ids():
    scores, truth, durations = _hand_f1_case()
    extra = {f"extra{i:02d}": 2.0 for i in range(25)}
    with pytest.raises(ValueError) as error:
        compute_sed_metrics(scores, truth, {**durations, **extra})
    message = str(error.value)
    assert "25 durations clip(s) without scores" in message
    assert "'extra09'" in message and "'extra10'" not in message
    assert "15 more" in message


def test_error_wav_suffix_hint():
    scores, truth, durations = _hand_f1_case()
    scores = {f"{k}.wav": v for k, v in scores.items()}
    with pytest.raises(ValueError, match="without '.wav'"):
        compute_sed_metrics(scores, truth, durations)


def test_error_class_without_events():
    scores, truth, durations = _hand_f1_case()
    truth = {"x": [(0.5, 1.0, "a")], "y": [(0.0, 2.0, "a")]}
    with pytest.raises(ValueError, match=r"\['b'\] have no ground-truth"):
        compute_sed_metrics(scores, truth, durations)


def test_error_unknown_label():
    scores, truth, durations = _hand_f1_case()
    truth = dict(truth)
    truth["y"] = [(0.0, 2.0, "a"), (0.5, 0.7, "Dog")]
    with pytest.raises(ValueError) as error:
        compute_sed_metrics(scores, truth, durations)
    assert "['Dog'] are not score columns" in str(error.value)
    assert "'y'" in str(error.value)


@pytest.mark.parametrize(
    "events",
    [
        [(0.5, 1.0, "a"), (0.9, 1.5, "a")],  # overlap
        [(0.5, 1.0, "a"), (1.0, 1.5, "a")],  # touch
        [(0.1, 1.9, "a"), (0.5, 0.6, "a")],  # nested
    ],
)
def test_error_connected_events(events):
    scores, truth, durations = _hand_f1_case()
    truth = {"x": [*events, (1.2, 1.8, "b")], "y": truth["y"]}
    with pytest.raises(ValueError) as error:
        compute_sed_metrics(scores, truth, durations)
    message = str(error.value)
    assert "clip 'x', class 'a'" in message
    assert "overlap or touch" in message


def test_error_other_class_overlap_is_fine():
    scores, truth, durations = _hand_f1_case()
    truth = {"x": [(0.5, 1.0, "a"), (0.5, 1.8, "b")], "y": truth["y"]}
    compute_sed_metrics(scores, truth, durations)


# ---------------------------------------------------------------------------
# Plot.
# ---------------------------------------------------------------------------
def test_plot_psd_roc(tmp_path):
    scores, truth, durations = _hand_psds_case()
    out = compute_sed_metrics(scores, truth, durations, return_psd_roc=True)
    for name, params in (("psds1", PSDS1_PARAMS), ("psds2", PSDS2_PARAMS)):
        path = plot_psd_roc(
            out["psd_roc"][name],
            out[name],
            params,
            tmp_path / "plots" / f"{name}.png",
        )
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000
