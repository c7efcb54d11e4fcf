"""Tuned post-processing: thresholds, cSEBB (sebbs), PostProcessing, plots."""

import sys

import numpy as np
import pytest

from speechbrain_sed_condmix.csebbs import (
    SEBBS_INSTALL_HINT,
    csebbs_scores,
    sebbs_available,
)
from speechbrain_sed_condmix.metrics import compute_sed_metrics
from speechbrain_sed_condmix.plots import plot_event_roll
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.scores import frame_scores_to_dataframe
from speechbrain_sed_condmix.tuning import (
    evaluate_postprocessing,
    tune_csebbs,
    tune_postprocessing,
    tune_thresholds,
)

CLASSES = ["Dog", "Cat"]
needs_sebbs = pytest.mark.skipif(
    not sebbs_available(), reason="optional sebbs package not installed"
)


def _toy_set(seed=0, n_clips=6):
    """Noisy frame scores with one event per class per clip, and truth."""
    rng = np.random.default_rng(seed)
    scores, truth, durations = {}, {}, {}
    for k in range(n_clips):
        frames = 0.15 * rng.random((156, 2))
        events = []
        for c, name in enumerate(CLASSES):
            start = int(rng.integers(5, 100))
            length = int(rng.integers(10, 50))
            # a plateau with a small dip: one event, if merged
            frames[start : start + length, c] = 0.55 + 0.4 * rng.random()
            frames[start + length // 2, c] -= 0.1
            events.append((start * 0.064, (start + length) * 0.064, name))
        clip = f"clip{k}"
        scores[clip] = frame_scores_to_dataframe(frames, CLASSES)
        truth[clip] = events
        durations[clip] = 10.0
    return scores, truth, durations


def test_tune_thresholds_finds_a_separating_threshold():
    scores, truth, durations = _toy_set()
    thresholds, f1 = tune_thresholds(scores, truth, durations)
    assert set(thresholds) == set(CLASSES)
    for name in CLASSES:
        assert 0.15 <= thresholds[name] < 0.55
        assert f1[name] == pytest.approx(1.0)
    # at the tuned thresholds the F1 is as good as tuned
    metrics = compute_sed_metrics(
        scores, truth, durations, threshold=thresholds
    )
    assert metrics["collar_f1"] == pytest.approx(1.0)
    thresholds_i, _ = tune_thresholds(
        scores, truth, durations, criterion="intersection"
    )
    assert set(thresholds_i) == set(CLASSES)
    with pytest.raises(ValueError, match="criterion"):
        tune_thresholds(scores, truth, durations, criterion="frame")


def test_postprocessing_median_path_and_round_trip(tmp_path):
    scores, _, _ = _toy_set()
    pp = PostProcessing(
        CLASSES, median_filter=[3, 5], threshold={"Dog": 0.3, "Cat": 0.4}
    )
    assert pp.method == "median"
    events = pp.events(scores["clip0"])
    assert list(events.columns) == ["onset", "offset", "event_label", "score"]
    assert sorted(set(events["event_label"])) == sorted(CLASSES)
    back = PostProcessing.load(pp.save(tmp_path / "pp.json"))
    assert back.to_dict() == pp.to_dict()
    assert back.median_filter == {"Dog": 3, "Cat": 5}
    with pytest.raises(ValueError, match="needs cSEBB"):
        PostProcessing(CLASSES, method="csebbs")
    with pytest.raises(ValueError, match="no entry"):
        PostProcessing(CLASSES, threshold={"Dog": 0.5})


def test_missing_sebbs_is_explained(monkeypatch):
    scores, truth, durations = _toy_set()
    monkeypatch.setitem(sys.modules, "sebbs", None)
    monkeypatch.setitem(sys.modules, "sebbs.csebbs", None)
    assert not sebbs_available()
    with pytest.raises(ImportError, match="pip install --no-deps sebbs"):
        tune_csebbs(scores, truth, durations)
    params = {
        "step_filter_length": 0.32,
        "merge_threshold_abs": 0.2,
        "merge_threshold_rel": None,
    }
    pp = PostProcessing(CLASSES, csebbs=params)
    with pytest.raises(ImportError, match="AGPL"):
        pp.events(scores["clip0"])
    # the recipe's tuning goes on without it and says why
    tuned = tune_postprocessing(scores, truth, durations, 3)
    assert tuned.method == "median" and tuned.csebbs is None
    assert "sebbs package is missing" in tuned.info["csebbs"]
    assert "median-filter" in SEBBS_INSTALL_HINT


@needs_sebbs
def test_tune_csebbs_and_its_events():
    scores, truth, durations = _toy_set()
    params, values = tune_csebbs(scores, truth, durations)
    assert set(params) == {
        "step_filter_length",
        "merge_threshold_abs",
        "merge_threshold_rel",
        "detection_threshold",
    }
    for value in params.values():
        assert set(value) == set(CLASSES)
    for name in CLASSES:
        # one of the two merge criteria is off (None = inf) per candidate
        merges = (
            params["merge_threshold_abs"][name],
            params["merge_threshold_rel"][name],
        )
        assert merges.count(None) == 1
        assert params["step_filter_length"][name] in (0.32, 0.48, 0.64)
        assert 0.0 <= values[name] <= 1.0
    boxes = csebbs_scores(scores, params)
    metrics = compute_sed_metrics(boxes, truth, durations)
    assert metrics["psds1"] > 0.5  # an easy toy set
    pp = PostProcessing(CLASSES, median_filter=3, csebbs=params)
    assert pp.method == "csebbs"
    events = pp.events(scores["clip0"])
    assert list(events.columns) == ["onset", "offset", "event_label", "score"]
    # the plateau with a dip comes out as one box per class
    assert sorted(events["event_label"]) == sorted(CLASSES)
    back = PostProcessing.from_dict(pp.to_dict())
    assert back.csebbs == pp.csebbs
    assert back.events(scores["clip0"]).equals(events)


@needs_sebbs
def test_tune_and_evaluate_side_by_side():
    scores, truth, durations = _toy_set()
    pp = tune_postprocessing(scores, truth, durations, 3)
    assert pp.method == "csebbs"
    assert set(pp.info["csebbs_psds2"]) == {
        "step_filter_length",
        "merge_threshold_abs",
        "merge_threshold_rel",
    }
    test_scores, test_truth, test_durations = _toy_set(seed=1)
    results = evaluate_postprocessing(
        pp, test_scores, test_truth, test_durations
    )
    assert set(results) == {"median_filter", "csebbs"}
    for method in results.values():
        for key in ("psds1", "psds2", "intersection_f1", "collar_f1"):
            assert 0.0 <= method[key] <= 1.0
        assert set(method["per_class"]) == set(CLASSES)


def test_event_roll_is_written(tmp_path):
    scores, truth, _ = _toy_set()
    frame = scores["clip0"]
    path = plot_event_roll(
        frame,
        tmp_path / "rolls" / "clip0.png",
        detections=PostProcessing(CLASSES).events(frame),
        ground_truth=truth["clip0"],
        title="clip0",
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert path.stat().st_size > 10000
    # cSEBB box scores hold -inf outside boxes
    boxes = frame.copy()
    boxes[CLASSES] = np.where(frame[CLASSES] > 0.5, frame[CLASSES], -np.inf)
    plot_event_roll(boxes, tmp_path / "boxes.png")
    with pytest.raises(ValueError, match="not a class"):
        plot_event_roll(
            frame, tmp_path / "x.png", ground_truth=[(0.0, 1.0, "Bird")]
        )
