"""Tuning of the post-processing on validation scores, and its report.

Per-class decision thresholds for F1, cSEBB parameters for PSDS, the
:class:`~speechbrain_sed_condmix.postprocessing.PostProcessing` they make,
and the side-by-side metrics of the median-filter and cSEBB paths. This is
the one module that joins :mod:`metrics` and :mod:`postprocessing`.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import warnings

import numpy as np

from speechbrain_sed_condmix.csebbs import (
    CSEBBS_GRID,
    SEBBS_PSDS_KEYS,
    csebbs_predictor,
    csebbs_scores,
    import_csebbs,
    sebbs_available,
)
from speechbrain_sed_condmix.metrics import (
    COLLAR_F1_PARAMS,
    INTERSECTION_F1_PARAMS,
    PSDS1_PARAMS,
    PSDS2_PARAMS,
    compute_sed_metrics,
    prepare_eval_inputs,
)
from speechbrain_sed_condmix.postprocessing import PostProcessing, median_filter
from speechbrain_sed_condmix.scores import fresh_scores, writeable_pandas

with warnings.catch_warnings():
    # dcase_util's pkg_resources warning, as in scores.py: this import only.
    warnings.filterwarnings(
        "ignore", "pkg_resources is deprecated", UserWarning
    )
    from sed_scores_eval import collar_based, intersection_based


def _finite_or_none(value):
    """JSON-friendly threshold: ``inf`` (criterion off) becomes None."""
    value = float(value)
    return value if np.isfinite(value) else None


def tune_thresholds(
    scores, ground_truth, durations, criterion="collar", default=0.5
):
    """Per-class decision thresholds that maximise F1 on a tuning set.

    sed_scores_eval's ``best_fscore`` sweeps every operating point of each
    class; the threshold returned lies halfway between the two scores
    around the best one, so it works with ``score > threshold``. A class
    whose best F1 needs no detection at all (threshold ``inf``) keeps
    ``default``.

    Arguments
    ---------
    scores : dict
        ``{clip_id: score DataFrame}`` after the post-processing that the
        thresholds will be used with (e.g. median-filtered).
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        Ground-truth events (see ``metrics.compute_sed_metrics``).
    durations : str or pathlib.Path or pandas.DataFrame or dict
        Clip durations.
    criterion : str
        ``"collar"`` (DCASE collar-based F1: 200 ms onset collar, offset
        collar max(200 ms, 20 % of the event)) or ``"intersection"``
        (intersection-based F1, dtc = gtc = 0.5).
    default : float
        Threshold of classes without a finite optimum.

    Returns
    -------
    thresholds : dict
        ``{class: threshold}``.
    f1 : dict
        ``{class: best F1 on the tuning set}``.

    Example
    -------
    >>> frames = np.zeros((156, 1))
    >>> frames[10:40, 0] = 0.3
    >>> from speechbrain_sed_condmix.scores import frame_scores_to_dataframe
    >>> scores = {"c": frame_scores_to_dataframe(frames, ["Dog"])}
    >>> thr, f1 = tune_thresholds(scores, {"c": [(0.64, 2.56, "Dog")]},
    ...                           {"c": 10.0})
    >>> 0.0 < thr["Dog"] < 0.3, f1["Dog"]
    (True, 1.0)
    """
    if criterion not in ("collar", "intersection"):
        raise ValueError(
            f"criterion must be 'collar' or 'intersection': {criterion!r}"
        )
    scores, truth, _, event_classes = prepare_eval_inputs(
        scores, ground_truth, durations
    )
    with writeable_pandas():
        if criterion == "collar":
            f1, _, _, best, _ = collar_based.best_fscore(
                scores, truth, **COLLAR_F1_PARAMS
            )
        else:
            f1, _, _, best, _ = intersection_based.best_fscore(
                scores, truth, **INTERSECTION_F1_PARAMS
            )
    thresholds = {
        c: float(best[c]) if np.isfinite(best[c]) else float(default)
        for c in event_classes
    }
    return thresholds, {c: float(f1[c]) for c in event_classes}


def tune_csebbs(
    scores,
    ground_truth,
    durations,
    psds_params=None,
    grid=CSEBBS_GRID,
    detection_criterion="collar",
    default_threshold=0.5,
):
    """Class-wise cSEBB parameters with the best PSDS on a tuning set.

    The released ``sebbs.csebbs.tune`` (1.0.1, 1.0.2) fails on any input:
    its grid search builds predictors without ``sound_classes``. So the
    grid is built here: one ``CSEBBsPredictor`` (with the classes) per
    step filter length and merge threshold (absolute only, or relative
    only), each predicting its boxes, then ``csebbs.select_best_psds``
    picks each class's best candidate. Optionally a per-class detection
    threshold for F1 outputs is then chosen on the tuned boxes.

    Tuning and reporting on the same set is optimistic.

    Arguments
    ---------
    scores : dict
        ``{clip_id: score DataFrame}``, raw frame scores.
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        Ground-truth events.
    durations : str or pathlib.Path or pandas.DataFrame or dict
        Clip durations.
    psds_params : mapping, optional
        The PSDS scenario (``metrics.PSDS1_PARAMS`` by default; pass
        ``metrics.PSDS2_PARAMS`` to tune for PSDS2).
    grid : mapping
        ``step_filter_lengths``, ``merge_thresholds_abs`` and
        ``merge_thresholds_rel``.
    detection_criterion : str or None
        ``"collar"`` or ``"intersection"``: also tune
        ``detection_threshold`` (see :func:`tune_thresholds`); None: leave
        it out.
    default_threshold : float
        Detection threshold of classes without a finite optimum.

    Returns
    -------
    params : dict
        JSON-ready cSEBB parameters, each ``{class: value}`` (None for a
        merge criterion that is off).
    values : dict
        ``{class: PSDS of the chosen candidate}`` on the tuning set.

    Raises
    ------
    ImportError
        When sebbs is not installed.
    """
    csebbs = import_csebbs()
    psds_params = dict(PSDS1_PARAMS if psds_params is None else psds_params)
    scores, truth, clip_durations, event_classes = prepare_eval_inputs(
        scores, ground_truth, durations
    )
    if len(event_classes) == 1:
        # No other class, so no cross-trigger (as compute_sed_metrics).
        psds_params.update(alpha_ct=0.0, cttc_threshold=None)
    merges = [(float(a), None) for a in grid["merge_thresholds_abs"]]
    merges += [(None, float(r)) for r in grid["merge_thresholds_rel"]]
    candidates = []
    for length in grid["step_filter_lengths"]:
        for merge_abs, merge_rel in merges:
            params = {
                "step_filter_length": float(length),
                "merge_threshold_abs": merge_abs,
                "merge_threshold_rel": merge_rel,
            }
            predictor = csebbs_predictor(params, event_classes)
            with writeable_pandas():
                candidates.append((predictor, predictor.predict(scores)))
    with writeable_pandas():
        best, values = csebbs.select_best_psds(
            candidates,
            truth,
            clip_durations,
            classwise=True,
            **{k: psds_params[k] for k in SEBBS_PSDS_KEYS if k in psds_params},
        )
    params = {
        "step_filter_length": {
            c: float(best.step_filter_length[c]) for c in event_classes
        },
        "merge_threshold_abs": {
            c: _finite_or_none(best.merge_threshold_abs[c])
            for c in event_classes
        },
        "merge_threshold_rel": {
            c: _finite_or_none(best.merge_threshold_rel[c])
            for c in event_classes
        },
    }
    if detection_criterion is not None:
        params["detection_threshold"], _ = tune_thresholds(
            csebbs_scores(scores, params),
            truth,
            clip_durations,
            criterion=detection_criterion,
            default=default_threshold,
        )
    return params, {c: float(values[c]) for c in event_classes}


def tune_postprocessing(
    scores,
    ground_truth,
    durations,
    median_filter_length,
    csebbs=True,
    criterion="collar",
):
    """Tune the post-processing of a model on its validation scores.

    * Per-class thresholds on the median-filtered scores, for F1
      (:func:`tune_thresholds`);
    * with ``csebbs`` and sebbs installed: cSEBB parameters tuned for PSDS1
      (with detection thresholds; used for detection) and, for the report
      only, for PSDS2 (kept in ``info["csebbs_psds2"]``).

    Arguments
    ---------
    scores : dict
        ``{clip_id: raw score DataFrame}`` of the tuning (validation) set.
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        Its ground-truth events.
    durations : str or pathlib.Path or pandas.DataFrame or dict
        Its clip durations.
    median_filter_length : int, sequence or dict
        The (fixed) median filter.
    csebbs : bool
        Tune cSEBB when sebbs is installed (skipped otherwise, with the
        reason in ``info``).
    criterion : str
        F1 criterion of the thresholds: ``"collar"`` or ``"intersection"``.

    Returns
    -------
    PostProcessing
        Method ``"csebbs"`` when cSEBB was tuned, else ``"median"``.
    """
    frames, event_classes = fresh_scores(scores)
    filtered = median_filter(frames, median_filter_length)
    thresholds, f1 = tune_thresholds(
        filtered, ground_truth, durations, criterion=criterion
    )
    info = {
        "threshold_criterion": f"{criterion}-based F1",
        "valid_threshold_f1": f1,
    }
    params = None
    if csebbs and sebbs_available():
        params, values = tune_csebbs(
            frames, ground_truth, durations, detection_criterion=criterion
        )
        params2, values2 = tune_csebbs(
            frames,
            ground_truth,
            durations,
            psds_params=PSDS2_PARAMS,
            detection_criterion=None,
        )
        info.update(
            valid_csebbs_psds1_per_class=values,
            csebbs_psds2=params2,
            valid_csebbs_psds2_per_class=values2,
        )
    elif csebbs:
        info["csebbs"] = "not tuned: the optional sebbs package is missing"
    return PostProcessing(
        event_classes,
        median_filter=median_filter_length,
        threshold=thresholds,
        csebbs=params,
        info=info,
    )


def evaluate_postprocessing(postprocessing, scores, ground_truth, durations):
    """Metrics of the median-filter and cSEBB paths, side by side.

    Arguments
    ---------
    postprocessing : PostProcessing
        Tuned post-processing (e.g. from :func:`tune_postprocessing`).
    scores : dict
        ``{clip_id: raw score DataFrame}`` of the evaluation set.
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        Its ground-truth events.
    durations : str or pathlib.Path or pandas.DataFrame or dict
        Its clip durations.

    Returns
    -------
    dict
        ``median_filter``: PSDS1, PSDS2 and the F1 scores at the tuned
        thresholds; ``csebbs`` (when tuned): PSDS1 with the PSDS1-tuned
        boxes, PSDS2 with the PSDS2-tuned boxes, F1 at the tuned detection
        thresholds. Each with ``per_class``.
    """
    pp = postprocessing
    results = {
        "median_filter": compute_sed_metrics(
            pp.filter(scores), ground_truth, durations, threshold=pp.threshold
        )
    }
    if pp.csebbs:
        threshold = pp.csebbs.get("detection_threshold") or pp.threshold
        first = compute_sed_metrics(
            csebbs_scores(scores, pp.csebbs),
            ground_truth,
            durations,
            threshold=threshold,
        )
        psds2_params = pp.info.get("csebbs_psds2")
        if psds2_params:
            second = compute_sed_metrics(
                csebbs_scores(scores, psds2_params),
                ground_truth,
                durations,
                threshold=threshold,
            )
            first["psds2"] = second["psds2"]
            for name, values in first["per_class"].items():
                values["psds2"] = second["per_class"][name]["psds2"]
        results["csebbs"] = first
    return results
