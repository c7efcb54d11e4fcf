"""DCASE Task 4 metrics (PSDS1, PSDS2, intersection and collar F1).

A wrapper around ``sed_scores_eval`` (0.0.4) with the DCASE parameters and
input checks that fail with a readable ``ValueError`` before the library's
bare asserts.

Clips without events (DESED strong TSV rows with an empty ``event_label``)
are dropped from the ground truth, the durations AND the scores before any
metric is computed, as in the DCASE baseline (dev-test: 1 168 clips, 1 153
evaluated). sed_scores_eval needs identical clip sets, and this keeps them
so; the F1 metrics use the same reduced set. Note that false alarms on those
clips are therefore not counted.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from speechbrain_sed_condmix.scores import read_scores, writeable_pandas

with warnings.catch_warnings():
    # dcase_util's pkg_resources warning, as in scores.py: this import only.
    warnings.filterwarnings(
        "ignore", "pkg_resources is deprecated", UserWarning
    )
    from sed_scores_eval import collar_based, intersection_based
    from sed_scores_eval.base_modules.io import read_ground_truth_events
    from sed_scores_eval.base_modules.scores import validate_score_dataframe

logger = logging.getLogger(__name__)

#: PSDS scenario 1 (DCASE 2021-2024): tight localisation, no cross-triggers.
PSDS1_PARAMS = MappingProxyType(
    {
        "dtc_threshold": 0.7,
        "gtc_threshold": 0.7,
        "cttc_threshold": None,
        "alpha_ct": 0.0,
        "alpha_st": 1.0,
        "max_efpr": 100.0,
        "unit_of_time": "hour",
    }
)

#: PSDS scenario 2: loose localisation, cross-triggers penalised.
PSDS2_PARAMS = MappingProxyType(
    {
        "dtc_threshold": 0.1,
        "gtc_threshold": 0.1,
        "cttc_threshold": 0.3,
        "alpha_ct": 0.5,
        "alpha_st": 1.0,
        "max_efpr": 100.0,
        "unit_of_time": "hour",
    }
)

#: Intersection-based F1 (``intersection_based.fscore``), macro average.
INTERSECTION_F1_PARAMS = MappingProxyType(
    {"dtc_threshold": 0.5, "gtc_threshold": 0.5}
)

#: Collar-based (event-based) F1 (``collar_based.fscore``), macro average.
COLLAR_F1_PARAMS = MappingProxyType(
    {"onset_collar": 0.2, "offset_collar": 0.2, "offset_collar_rate": 0.2}
)

#: Extensions stripped from ``filename`` to get the clip id. Only these:
#: DESED ids such as ``Y..._50.000_60.000`` contain dots themselves.
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")

_MAX_LISTED = 10


def _clip_id(filename):
    """Strip a known audio extension from a file name."""
    filename = str(filename)
    for extension in AUDIO_EXTENSIONS:
        if filename.lower().endswith(extension):
            return filename[: -len(extension)]
    return filename


def _preview(items):
    """Format a sorted list, cut to ``_MAX_LISTED`` entries."""
    items = sorted(items, key=str)
    shown = ", ".join(repr(i) for i in items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown += f", ... ({len(items) - _MAX_LISTED} more)"
    return f"[{shown}]"


def _read_table(source, columns, what):
    """Load a TSV path or DataFrame and check its columns."""
    if isinstance(source, (str, Path)):
        table = pd.read_csv(source, sep="\t")
    elif isinstance(source, pd.DataFrame):
        table = source
    else:
        raise TypeError(
            f"{what} must be a TSV path, a DataFrame or a dict, got "
            f"{type(source).__name__}."
        )
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; found {list(table.columns)}."
        )
    return table


def _is_missing(value):
    """True for NaN/None/empty labels (clip without events)."""
    if isinstance(value, str):
        return value.strip() == ""
    return bool(pd.isna(value))


def load_ground_truth(ground_truth):
    """Read ground-truth events into ``{clip_id: [(onset, offset, label)]}``.

    Arguments
    ---------
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        DESED strong TSV (``filename onset offset event_label``; an empty
        label marks a clip without events), such a DataFrame, or a dict.

    Returns
    -------
    dict
        New lists of ``(onset, offset, label)``; clips without events map
        to an empty list.

    Example
    -------
    >>> table = pd.DataFrame({"filename": ["a.wav", "b.wav"],
    ...                       "onset": [0.5, None], "offset": [1.0, None],
    ...                       "event_label": ["Dog", None]})
    >>> load_ground_truth(table)
    {'a': [(0.5, 1.0, 'Dog')], 'b': []}
    """
    events = {}
    if isinstance(ground_truth, Mapping):
        for clip_id, clip_events in ground_truth.items():
            events[str(clip_id)] = []
            for event in clip_events:
                if len(event) != 3:
                    raise ValueError(
                        f"ground-truth event {event!r} of clip {clip_id!r} is "
                        f"not (onset, offset, label)."
                    )
                onset, offset, label = event
                events[str(clip_id)].append(
                    (float(onset), float(offset), label)
                )
        return events
    table = _read_table(
        ground_truth,
        ["filename", "onset", "offset", "event_label"],
        "ground truth",
    )
    labels = []
    for filename, onset, offset, label in zip(
        table["filename"], table["onset"], table["offset"], table["event_label"]
    ):
        if _is_missing(label):
            labels.append(np.nan)  # what the reader takes for "no event"
            continue
        if not (math.isfinite(float(onset)) and math.isfinite(float(offset))):
            raise ValueError(
                f"ground-truth event {label!r} of {filename!r} has no valid "
                f"onset/offset ({float(onset)}, {float(offset)})."
            )
        labels.append(str(label))
    # sed_scores_eval cuts the clip id at the last dot, and DESED ids hold
    # dots themselves: hand it '<clip id>.wav' so the cut gives our id.
    checked = pd.DataFrame(
        {
            "filename": [f"{_clip_id(f)}.wav" for f in table["filename"]],
            "onset": table["onset"].to_numpy(),
            "offset": table["offset"].to_numpy(),
            "event_label": pd.Series(labels, dtype=object),
        }
    )
    return {
        clip_id: [(onset, offset, label) for onset, offset, label in rows]
        for clip_id, rows in read_ground_truth_events(checked).items()
    }


def _load_durations(durations):
    """Return ``{clip_id: seconds}``."""
    if isinstance(durations, Mapping):
        return {str(k): float(v) for k, v in durations.items()}
    table = _read_table(durations, ["filename", "duration"], "durations")
    return {
        _clip_id(f): float(d)
        for f, d in zip(table["filename"], table["duration"])
    }


def _check_same_ids(score_ids, other_ids, other_name):
    """Describe how ``other_ids`` differs from ``score_ids`` (or None)."""
    missing = score_ids - other_ids
    extra = other_ids - score_ids
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} scored clip(s) missing from the {other_name}: "
            f"{_preview(missing)}"
        )
    if extra:
        parts.append(
            f"{len(extra)} {other_name} clip(s) without scores: "
            f"{_preview(extra)}"
        )
    return "; ".join(parts)


def _check_events(ground_truth):
    """Raise on empty or same-class overlapping/touching events."""
    problems = []
    for clip_id, clip_events in ground_truth.items():
        per_class = defaultdict(list)
        for onset, offset, label in clip_events:
            if not offset > onset:
                problems.append(
                    f"clip {clip_id!r}, class {label!r}: event "
                    f"({onset}, {offset}) has offset <= onset"
                )
            per_class[label].append((onset, offset))
        for label, spans in per_class.items():
            spans.sort()
            for (on1, off1), (on2, off2) in zip(spans, spans[1:]):
                if on2 <= off1:
                    problems.append(
                        f"clip {clip_id!r}, class {label!r}: events "
                        f"({on1}, {off1}) and ({on2}, {off2}) overlap or touch"
                    )
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        more = len(problems) - _MAX_LISTED
        tail = f"\n  ... ({more} more)" if more > 0 else ""
        raise ValueError(
            "sed_scores_eval needs same-class ground-truth events that "
            "neither overlap nor touch (merge them first); found "
            f"{len(problems)} problem(s):\n  {shown}{tail}"
        )


def _normalise_scores(scores):
    """Check class columns and rebuild each DataFrame from fresh arrays.

    Fresh float64 arrays are writeable, which sed_scores_eval 0.0.4 needs
    (its Cython code takes memoryviews of ``DataFrame.to_numpy()``).
    """
    event_classes = None
    first_id = None
    normalised = {}
    for clip_id in sorted(scores):
        frame = scores[clip_id]
        try:
            _, classes = validate_score_dataframe(frame)
        except (ValueError, AssertionError) as error:
            raise ValueError(
                f"invalid score DataFrame for clip {clip_id!r}: {error}"
            ) from error
        if event_classes is None:
            event_classes, first_id = list(classes), clip_id
        elif list(classes) != event_classes:
            raise ValueError(
                f"score columns of clip {clip_id!r} {list(classes)} differ "
                f"from those of clip {first_id!r} {event_classes}."
            )
        values = np.array(
            frame[["onset", "offset", *event_classes]].to_numpy(),
            dtype=np.float64,
        )
        normalised[clip_id] = pd.DataFrame(
            values, columns=["onset", "offset", *event_classes]
        )
    return normalised, event_classes


def _check_threshold(threshold, event_classes):
    """Validate a float or ``{class: float}`` threshold."""
    if isinstance(threshold, Mapping):
        missing = [c for c in event_classes if c not in threshold]
        if missing:
            raise ValueError(f"threshold has no entry for classes {missing}.")
        return {c: float(threshold[c]) for c in event_classes}
    return float(threshold)


def prepare_eval_inputs(scores, ground_truth, durations):
    """Load and check the inputs of a sed_scores_eval evaluation.

    The checks and the clip filtering of :func:`compute_sed_metrics`, for
    other code that calls sed_scores_eval (e.g. post-processing tuning):
    clips without ground-truth events leave every input, the clip sets must
    match, every score class needs a ground-truth event and same-class
    events must not overlap. Score DataFrames are rebuilt from fresh
    writeable float64 arrays.

    Arguments
    ---------
    scores : dict or str or pathlib.Path
        ``{clip_id: score DataFrame}`` or a folder of score TSVs.
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        As in :func:`compute_sed_metrics`.
    durations : str or pathlib.Path or pandas.DataFrame or dict
        As in :func:`compute_sed_metrics`.

    Returns
    -------
    tuple
        ``(scores, ground_truth, durations, event_classes)``: dicts keyed
        by clip id, and the class columns.

    Raises
    ------
    ValueError
        As :func:`compute_sed_metrics`.

    Example
    -------
    >>> from speechbrain_sed_condmix.scores import (
    ...     frame_scores_to_dataframe,
    ... )
    >>> s = {"a": frame_scores_to_dataframe(np.zeros((3, 1)), ["Dog"]),
    ...      "b": frame_scores_to_dataframe(np.zeros((3, 1)), ["Dog"])}
    >>> truth = {"a": [(0.0, 0.1, "Dog")], "b": []}
    >>> out = prepare_eval_inputs(s, truth, {"a": 0.192, "b": 0.192})
    >>> sorted(out[0]), out[1], out[3]
    (['a'], {'a': [(0.0, 0.1, 'Dog')]}, ['Dog'])
    """
    if isinstance(scores, (str, Path)):
        scores = read_scores(scores)
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"scores must be a dict or a folder, got {type(scores).__name__}."
        )
    truth = load_ground_truth(ground_truth)
    clip_durations = _load_durations(durations)

    # As in the reference: clips without events leave every input.
    no_event_ids = {c for c, events in truth.items() if not events}
    truth = {c: e for c, e in truth.items() if e}
    clip_durations = {
        c: d for c, d in clip_durations.items() if c not in no_event_ids
    }
    score_ids = set(scores) - no_event_ids
    if no_event_ids:
        logger.info(
            "Dropped %d clip(s) without ground-truth events (%d scored).",
            len(no_event_ids),
            len(set(scores) & no_event_ids),
        )
    if not score_ids:
        raise ValueError("no scored clip with ground-truth events is left.")

    problems = [
        p
        for p in (
            _check_same_ids(score_ids, set(truth), "ground truth"),
            _check_same_ids(score_ids, set(clip_durations), "durations"),
        )
        if p
    ]
    if problems:
        hint = ""
        if any(str(c).lower().endswith(".wav") for c in score_ids):
            hint = " (score keys must be clip ids without '.wav')"
        raise ValueError(
            "clip sets differ" + hint + ": " + " | ".join(problems) + "."
        )

    scores, event_classes = _normalise_scores({c: scores[c] for c in score_ids})
    labels = defaultdict(list)
    for clip_id, clip_events in truth.items():
        for _, _, label in clip_events:
            labels[label].append(clip_id)
    unknown = [label for label in labels if label not in event_classes]
    if unknown:
        examples = {label: labels[label][0] for label in unknown}
        raise ValueError(
            f"ground-truth label(s) {_preview(unknown)} are not score columns "
            f"{event_classes} (e.g. in clips {examples})."
        )
    without_events = [c for c in event_classes if c not in labels]
    if without_events:
        raise ValueError(
            f"score class(es) {without_events} have no ground-truth event in "
            f"the evaluated clips; sed_scores_eval needs at least one per "
            f"class (drop those score columns or add data)."
        )
    _check_events(truth)
    return scores, truth, clip_durations, event_classes


def compute_sed_metrics(
    scores,
    ground_truth,
    durations,
    *,
    threshold=0.5,
    num_jobs=1,
    return_psd_roc=False,
):
    """Compute PSDS1, PSDS2, intersection F1 and collar F1.

    Parameters are those of DCASE Task 4 (``PSDS1_PARAMS``,
    ``PSDS2_PARAMS``, ``INTERSECTION_F1_PARAMS``, ``COLLAR_F1_PARAMS``);
    F1 scores are macro averages over classes at ``threshold`` (a frame is
    active when ``score > threshold``). Clips without ground-truth events
    are dropped from all inputs first (see the module docstring). With a
    single class there are no cross-triggers, so PSDS2 is computed with
    ``alpha_ct=0`` (sed_scores_eval 0.0.4 crashes otherwise).

    Arguments
    ---------
    scores : dict or str or pathlib.Path
        ``{clip_id: score DataFrame}`` (clip_id = file name without
        ``.wav``) or a folder of ``<clip_id>.tsv`` score files. Pass
        post-processed (e.g. median-filtered) scores.
    ground_truth : str or pathlib.Path or pandas.DataFrame or dict
        DESED strong TSV (``filename onset offset event_label``; an empty
        label marks a clip without events), such a DataFrame, or
        ``{clip_id: [(onset, offset, label), ...]}``.
    durations : str or pathlib.Path or pandas.DataFrame or dict
        Durations TSV (``filename duration``), such a DataFrame, or
        ``{clip_id: seconds}``.
    threshold : float or dict
        Decision threshold of the F1 metrics, or ``{class: threshold}``.
    num_jobs : int
        Processes used by sed_scores_eval.
    return_psd_roc : bool
        Also return the PSD-ROC curves (for :mod:`plots`).

    Returns
    -------
    dict
        ``psds1``, ``psds2``, ``intersection_f1``, ``collar_f1`` (floats) and
        ``per_class`` = ``{class: {"psds1", "psds2", "intersection_f1",
        "collar_f1"}}`` (per-class PSDS is the area under that class's ROC,
        without the alpha_st penalty). With ``return_psd_roc``, also
        ``psd_roc`` = ``{"psds1": (etpr, efpr), "psds2": (etpr, efpr)}`` and
        ``per_class_psd_roc`` = ``{"psds1": {class: (tpr, efpr,
        thresholds)}, "psds2": {...}}``.

    Raises
    ------
    ValueError
        When score and ground-truth/duration clip sets differ, a score class
        has no ground-truth event, a ground-truth label is not a score
        column, or same-class ground-truth events overlap or touch.

    Example
    -------
    >>> from speechbrain_sed_condmix.scores import (
    ...     frame_scores_to_dataframe,
    ... )
    >>> frames = np.zeros((156, 1))
    >>> frames[10:40, 0] = 1.0
    >>> scores = {"clip1": frame_scores_to_dataframe(frames, ["Dog"])}
    >>> truth = {"clip1": [(0.64, 2.56, "Dog")]}
    >>> out = compute_sed_metrics(scores, truth, {"clip1": 10.0})
    >>> out["psds1"], out["psds2"], out["intersection_f1"], out["collar_f1"]
    (1.0, 1.0, 1.0, 1.0)
    """
    scores, truth, clip_durations, event_classes = prepare_eval_inputs(
        scores, ground_truth, durations
    )
    threshold = _check_threshold(threshold, event_classes)

    psds2_params = dict(PSDS2_PARAMS)
    if len(event_classes) == 1:
        # No other class, so no cross-trigger can exist: alpha_ct is moot.
        psds2_params.update(alpha_ct=0.0, cttc_threshold=None)

    with writeable_pandas():
        psds1 = intersection_based.psds(
            scores, truth, clip_durations, num_jobs=num_jobs, **PSDS1_PARAMS
        )
        psds2 = intersection_based.psds(
            scores, truth, clip_durations, num_jobs=num_jobs, **psds2_params
        )
        f_inter = intersection_based.fscore(
            scores,
            truth,
            threshold,
            num_jobs=num_jobs,
            **INTERSECTION_F1_PARAMS,
        )[0]
        f_collar = collar_based.fscore(
            scores, truth, threshold, num_jobs=num_jobs, **COLLAR_F1_PARAMS
        )[0]

    result = {
        "psds1": float(psds1[0]),
        "psds2": float(psds2[0]),
        "intersection_f1": float(f_inter["macro_average"]),
        "collar_f1": float(f_collar["macro_average"]),
        "per_class": {
            c: {
                "psds1": float(psds1[1][c]),
                "psds2": float(psds2[1][c]),
                "intersection_f1": float(f_inter[c]),
                "collar_f1": float(f_collar[c]),
            }
            for c in event_classes
        },
    }
    if return_psd_roc:
        result["psd_roc"] = {"psds1": psds1[2], "psds2": psds2[2]}
        result["per_class_psd_roc"] = {"psds1": psds1[3], "psds2": psds2[3]}
    return result


def clip_macro_f1(scores, targets, threshold=0.5):
    """Macro-averaged clip-level (weak) F1 over classes.

    A class with no positive target and no positive prediction scores 0, as
    torchmetrics' multilabel F1 (``zero_division=0``) used by the DCASE
    baseline does.

    Arguments
    ---------
    scores : array-like
        Clip probabilities ``[N, C]``.
    targets : array-like
        Multi-hot targets ``[N, C]``; values above 0.5 count as positive.
    threshold : float
        A class is predicted when its score is strictly above it.

    Returns
    -------
    float
        The mean of the per-class F1 scores.

    Example
    -------
    >>> clip_macro_f1([[0.9, 0.1], [0.8, 0.7]], [[1, 0], [0, 1]])
    0.8333333333333333
    """
    predicted = np.asarray(scores, dtype=float) > threshold
    actual = np.asarray(targets, dtype=float) > 0.5
    tp = (predicted & actual).sum(axis=0)
    fp = (predicted & ~actual).sum(axis=0)
    fn = (~predicted & actual).sum(axis=0)
    denominator = 2 * tp + fp + fn
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return float(f1.mean())
