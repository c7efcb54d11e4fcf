"""Adapter to sebbs: cSEBB sound event bounding boxes (optional).

Change-point detection on frame scores, then merging of candidate segments
(``sebbs.csebbs``, Ebbers et al., Interspeech 2024). sebbs is an optional
extra (AGPL-3.0-or-later): it is imported only when a function here needs
it, and a missing install fails with :data:`SEBBS_INSTALL_HINT`.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd

from speechbrain_sed_condmix.scores import (
    check_per_class,
    fresh_scores,
    writeable_pandas,
)

#: Default cSEBB grids, from the sebbs README: step filter lengths in
#: seconds, absolute and relative merge thresholds (one or the other).
CSEBBS_GRID = MappingProxyType(
    {
        "step_filter_lengths": (0.32, 0.48, 0.64),
        "merge_thresholds_abs": (0.15, 0.2, 0.3),
        "merge_thresholds_rel": (1.5, 2.0, 3.0),
    }
)

#: What to do when cSEBB is asked for but sebbs is missing.
SEBBS_INSTALL_HINT = (
    "cSEBB post-processing needs the optional package 'sebbs' "
    "(AGPL-3.0-or-later, so not a dependency of this Apache-2.0 package). "
    "Install it next to the pinned sed-scores-eval with\n"
    "    pip install --no-deps sebbs==1.0.2\n"
    "(--no-deps: sebbs declares sed_scores_eval_np2, a fork that installs a "
    "module also named sed_scores_eval over the pinned one; building it "
    "needs a C++ compiler). Or use the median-filter post-processing."
)

#: Keys of a cSEBB parameter dict (each a float or ``{class: float}``).
CSEBBS_KEYS = (
    "step_filter_length",
    "merge_threshold_abs",
    "merge_threshold_rel",
    "detection_threshold",
)

#: PSDS keys that ``sebbs.csebbs.select_best_psds`` takes.
SEBBS_PSDS_KEYS = (
    "dtc_threshold",
    "gtc_threshold",
    "cttc_threshold",
    "alpha_ct",
    "unit_of_time",
    "max_efpr",
)


def sebbs_available():
    """Whether the optional ``sebbs`` package can be imported.

    Returns
    -------
    bool
        True when ``sebbs.csebbs`` imports.

    Example
    -------
    >>> isinstance(sebbs_available(), bool)
    True
    """
    try:
        import sebbs.csebbs  # noqa: F401
    except ImportError:
        return False
    return True


def import_csebbs():
    """Import ``sebbs.csebbs`` or raise an ImportError that says how.

    Returns
    -------
    module
        ``sebbs.csebbs``.

    Raises
    ------
    ImportError
        With :data:`SEBBS_INSTALL_HINT` when sebbs is missing.
    """
    try:
        from sebbs import csebbs
    except ImportError as error:
        raise ImportError(SEBBS_INSTALL_HINT) from error
    return csebbs


def _per_class_value(value, event_classes, none_means):
    """A float or ``{class: float}`` with None replaced by ``none_means``."""
    if isinstance(value, Mapping):
        return {
            c: none_means if value[c] is None else float(value[c])
            for c in event_classes
        }
    return none_means if value is None else float(value)


def csebbs_predictor(params, event_classes):
    """A ``CSEBBsPredictor`` from a cSEBB parameter dict.

    Arguments
    ---------
    params : dict
        cSEBB parameters (keys in :data:`CSEBBS_KEYS`; the first three are
        required), each a float or ``{class: float}``. A merge threshold of
        None switches that merge criterion off.
    event_classes : sequence of str
        The score classes.

    Returns
    -------
    sebbs.csebbs.CSEBBsPredictor
        The predictor.

    Raises
    ------
    ValueError
        On unknown or missing keys, or a class without an entry.
    ImportError
        When sebbs is not installed.
    """
    csebbs = import_csebbs()
    unknown = set(params) - set(CSEBBS_KEYS)
    if unknown:
        raise ValueError(f"unknown cSEBB parameter(s) {sorted(unknown)}.")
    missing = [k for k in CSEBBS_KEYS[:3] if k not in params]
    if missing:
        raise ValueError(f"cSEBB parameters lack {missing}.")
    for key in CSEBBS_KEYS:
        value = params.get(key)
        if isinstance(value, Mapping):
            check_per_class(value, event_classes, f"cSEBB {key}")
    # A merge threshold of None (inf) switches that merge criterion off.
    return csebbs.CSEBBsPredictor(
        step_filter_length=_per_class_value(
            params["step_filter_length"], event_classes, None
        ),
        merge_threshold_abs=_per_class_value(
            params["merge_threshold_abs"], event_classes, np.inf
        ),
        merge_threshold_rel=_per_class_value(
            params["merge_threshold_rel"], event_classes, np.inf
        ),
        sound_classes=list(event_classes),
    )


def csebbs_boxes(scores, params):
    """Sound event bounding boxes (cSEBBs) of frame scores.

    Change-point detection with a step filter, then merging of candidate
    segments (``sebbs.csebbs.CSEBBsPredictor``, Ebbers et al., Interspeech
    2024). Needs the optional ``sebbs`` package. Pass raw (not
    median-filtered) scores: the step filter smooths them itself.

    Arguments
    ---------
    scores : pandas.DataFrame or dict
        One score DataFrame or ``{clip_id: DataFrame}``.
    params : dict
        ``step_filter_length`` (s), ``merge_threshold_abs``,
        ``merge_threshold_rel`` (each a float or ``{class: float}``; None
        switches a merge criterion off), optional ``detection_threshold``.

    Returns
    -------
    list or dict
        ``[(onset, offset, label, confidence), ...]`` (the box's mean
        score), or ``{clip_id: [...]}`` for a dict input.

    Raises
    ------
    ImportError
        When sebbs is not installed (the message says how to install it).
    """
    single = isinstance(scores, pd.DataFrame)
    frames, event_classes = fresh_scores({"_": scores} if single else scores)
    if not frames:
        return {}
    predictor = csebbs_predictor(params, event_classes)
    with writeable_pandas():
        boxes = predictor.predict(frames)
    boxes = {
        clip_id: [
            (float(on), float(off), label, float(conf))
            for on, off, label, conf in clip_boxes
        ]
        for clip_id, clip_boxes in boxes.items()
    }
    return boxes["_"] if single else boxes


def csebbs_scores(scores, params):
    """cSEBB boxes as sed_scores_eval DataFrames, for PSDS evaluation.

    Each box holds its confidence over its extent and ``-inf`` elsewhere;
    each clip's DataFrame spans its input scores (0 to the last offset).

    Arguments
    ---------
    scores : pandas.DataFrame or dict
        One score DataFrame or ``{clip_id: DataFrame}`` (raw scores).
    params : dict
        cSEBB parameters (see :func:`csebbs_boxes`).

    Returns
    -------
    pandas.DataFrame or dict
        Same type as ``scores``.
    """
    single = isinstance(scores, pd.DataFrame)
    scores = {"_": scores} if single else scores
    boxes = csebbs_boxes(scores, params)
    from sebbs.utils import sed_scores_from_sebbs

    frames, event_classes = fresh_scores(scores)
    durations = {
        clip_id: float(frame["offset"].iloc[-1])
        for clip_id, frame in frames.items()
    }
    out = sed_scores_from_sebbs(
        {c: [tuple(b) for b in boxes[c]] for c in frames},
        event_classes,
        audio_duration=durations,
    )
    return out["_"] if single else out
