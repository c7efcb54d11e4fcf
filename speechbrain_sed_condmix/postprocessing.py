"""Post-processing of frame-level SED scores: frame scores to events.

The class-wise median filter, thresholding into events, and
:class:`PostProcessing`, the configuration saved with a model (median
filter and thresholds, or cSEBB boxes through :mod:`csebbs`). Works on the
score DataFrames of :mod:`scores`; tuning the parameters on validation data
is in :mod:`tuning`.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.ndimage

from speechbrain_sed_condmix.csebbs import (
    CSEBBS_KEYS,
    csebbs_boxes,
    csebbs_scores,
)
from speechbrain_sed_condmix.scores import (
    EVENT_COLUMNS,
    TIME_DECIMALS,
    check_per_class,
    score_classes,
)

with warnings.catch_warnings():
    # dcase_util's pkg_resources warning, as in scores.py: this import only.
    warnings.filterwarnings(
        "ignore", "pkg_resources is deprecated", UserWarning
    )
    from sed_scores_eval.base_modules.detection import scores_to_event_list

POSTPROCESSING_METHODS = ("median", "csebbs")


def _lengths_per_class(filter_length, event_classes):
    """Resolve ``filter_length`` to a checked ``{class: int}`` dict."""
    if isinstance(filter_length, Mapping):
        lengths = check_per_class(filter_length, event_classes, "filter_length")
    elif isinstance(filter_length, Sequence) or (
        isinstance(filter_length, np.ndarray) and filter_length.ndim == 1
    ):
        if len(filter_length) != len(event_classes):
            raise ValueError(
                f"filter_length has {len(filter_length)} entries for "
                f"{len(event_classes)} classes {event_classes}."
            )
        lengths = dict(zip(event_classes, filter_length))
    else:
        lengths = dict.fromkeys(event_classes, filter_length)
    for name, length in lengths.items():
        # Even lengths are allowed because ATST-SED's class-wise windows
        # ([6, 20, 7, 4, ...]) use them; scipy then centres the window half
        # a frame late, exactly as in the reference.
        if int(length) != length or length < 1:
            raise ValueError(
                f"median filter length for class {name!r} must be a "
                f"positive integer, got {length!r}."
            )
        lengths[name] = int(length)
    return lengths


def _median_filter_frame(frame, filter_length):
    """Median-filter one score DataFrame; returns a new DataFrame."""
    event_classes = score_classes(frame)
    lengths = _lengths_per_class(filter_length, event_classes)
    out = frame.copy(deep=True)
    values = frame[event_classes].to_numpy(dtype=np.float64, copy=True)
    # One call per distinct length; size (n, 1) filters each class over
    # time only, exactly like the reference call on the whole [T, C] array.
    for length in sorted(set(lengths.values())):
        if length == 1:
            continue
        columns = [
            i for i, c in enumerate(event_classes) if lengths[c] == length
        ]
        filtered = scipy.ndimage.median_filter(
            values[:, columns], size=(length, 1), mode="reflect"
        )
        for j, column in enumerate(columns):
            out[event_classes[column]] = filtered[:, j]
    return out


def median_filter(scores, filter_length):
    """Class-wise median filter over time (in frames).

    Matches the DCASE baseline, ``scipy.ndimage.median_filter(scores,
    size=(n, 1))`` on the ``[T, C]`` array: the default ``'reflect'`` edge
    mode (the signal is mirrored about its first/last frame edge, ``d c b a
    | a b c d | d c b a``), no smoothing across classes. The onset/offset
    columns are copied unchanged and the input is never modified.

    Arguments
    ---------
    scores : pandas.DataFrame or dict
        One score DataFrame, or ``{clip_id: DataFrame}``.
    filter_length : int, dict or sequence
        Window length in frames: one int for all classes, a dict
        ``{class: int}``, or a sequence in class-column order. ``1`` leaves a
        class unchanged.

    Returns
    -------
    pandas.DataFrame or dict
        Same type as ``scores`` (dict keys and order kept), new objects.

    Example
    -------
    >>> from speechbrain_sed_condmix.scores import frame_scores_to_dataframe
    >>> df = frame_scores_to_dataframe(
    ...     [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], ["a", "b"]
    ... )
    >>> median_filter(df, {"a": 3, "b": 1})[["a", "b"]].to_numpy().tolist()
    [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    if isinstance(scores, pd.DataFrame):
        return _median_filter_frame(scores, filter_length)
    if isinstance(scores, Mapping):
        return {
            clip_id: _median_filter_frame(frame, filter_length)
            for clip_id, frame in scores.items()
        }
    raise TypeError(
        f"scores must be a DataFrame or a dict of DataFrames, got "
        f"{type(scores).__name__}."
    )


def _thresholds_per_class(threshold, event_classes):
    """Resolve ``threshold`` to an array in class-column order."""
    if isinstance(threshold, Mapping):
        threshold = check_per_class(threshold, event_classes, "threshold")
        return np.array([float(threshold[c]) for c in event_classes])
    return np.full(len(event_classes), float(threshold))


def _events_of_frame(frame, threshold, with_score=False):
    """List ``(onset, offset, label[, score])`` runs with score > threshold.

    sed_scores_eval's ``scores_to_event_list`` finds the runs; with
    ``with_score``, each event also carries the highest score of its frames.
    """
    event_classes = score_classes(frame)
    thresholds = _thresholds_per_class(threshold, event_classes)
    events = [
        (float(onset), float(offset), label)
        for onset, offset, label in scores_to_event_list(frame, thresholds)
    ]
    if with_score:
        values = frame[event_classes].to_numpy(dtype=np.float64)
        onsets = frame["onset"].to_numpy(dtype=np.float64)
        offsets = frame["offset"].to_numpy(dtype=np.float64)
        column = {name: i for i, name in enumerate(event_classes)}
        scored = []
        for onset, offset, label in events:
            # Event boundaries are frame boundaries taken from these arrays,
            # so the searches find them exactly.
            first = np.searchsorted(onsets, onset)
            last = np.searchsorted(offsets, offset)
            peak = values[first : last + 1, column[label]].max()
            scored.append((onset, offset, label, float(peak)))
        events = scored
    events.sort(key=lambda e: (e[0], e[1], str(e[2])))
    return events


def scores_to_events(scores, threshold, with_score=False):
    """Binarise scores into detected events (DESED TSV format).

    A frame is active when ``score > threshold`` (strict, as in the DCASE
    baseline); each run of consecutive active frames of a class becomes one
    event from the onset of its first frame to the offset of its last.

    Arguments
    ---------
    scores : pandas.DataFrame or dict
        One score DataFrame, or ``{clip_id: DataFrame}``.
    threshold : float or dict
        Decision threshold, or ``{class: threshold}``.
    with_score : bool
        Add a ``score`` column: the highest score inside each event.

    Returns
    -------
    pandas.DataFrame
        For one DataFrame: columns ``onset, offset, event_label`` (and
        ``score``). For a dict: columns ``filename, onset, offset,
        event_label`` (and ``score``) with filename ``<clip_id>.wav`` (clips
        without detections have no row). Rows are sorted by clip, onset,
        offset and label.

    Example
    -------
    >>> from speechbrain_sed_condmix.scores import frame_scores_to_dataframe
    >>> df = frame_scores_to_dataframe([[0.2], [0.7], [0.9], [0.1]], ["Dog"])
    >>> scores_to_events(df, 0.5).values.tolist()
    [[0.064, 0.192, 'Dog']]
    >>> scores_to_events(df, 0.5, with_score=True).values.tolist()
    [[0.064, 0.192, 'Dog', 0.9]]
    >>> scores_to_events({"clip1": df}, 0.5).values.tolist()
    [['clip1.wav', 0.064, 0.192, 'Dog']]
    """
    columns = EVENT_COLUMNS + (["score"] if with_score else [])
    if isinstance(scores, pd.DataFrame):
        events = _events_of_frame(scores, threshold, with_score)
        return pd.DataFrame(events, columns=columns).astype(
            {"onset": float, "offset": float}
        )
    if isinstance(scores, Mapping):
        rows = []
        for clip_id in sorted(scores):
            rows.extend(
                (f"{clip_id}.wav", *event)
                for event in _events_of_frame(
                    scores[clip_id], threshold, with_score
                )
            )
        return pd.DataFrame(rows, columns=["filename", *columns]).astype(
            {"onset": float, "offset": float}
        )
    raise TypeError(
        f"scores must be a DataFrame or a dict of DataFrames, got "
        f"{type(scores).__name__}."
    )


def _plain(value):
    """Python floats/ints/dicts/lists (no numpy types) for JSON and YAML."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


class PostProcessing:
    """How frame scores become events, saved with a model.

    Two methods:

    * ``"median"``: the class-wise median filter, then ``score >
      threshold`` (one float or per class) on the filtered scores; each
      event's score is its highest filtered frame score;
    * ``"csebbs"``: cSEBB boxes (``csebbs.csebbs_boxes``) from the raw
      scores, kept when their confidence (the box's mean score) is above
      ``csebbs["detection_threshold"]`` (``threshold`` when absent).
      Needs the optional ``sebbs`` package.

    The median filter also gives the frame scores that are written and
    plotted with either method.

    Arguments
    ---------
    classes : sequence of str
        Event classes, in score-column order.
    median_filter : int, sequence or dict
        Median filter length(s) in frames (see :func:`median_filter`).
    threshold : float or dict
        Decision threshold(s).
    csebbs : dict, optional
        cSEBB parameters (see ``tuning.tune_csebbs``).
    method : str, optional
        ``"median"`` or ``"csebbs"``; default ``"csebbs"`` when ``csebbs``
        is given, else ``"median"``.
    info : dict, optional
        Free-form provenance (what it was tuned on, validation values),
        kept through :meth:`to_dict` / :meth:`from_dict`.

    Example
    -------
    >>> from speechbrain_sed_condmix.scores import frame_scores_to_dataframe
    >>> pp = PostProcessing(["Dog", "Cat"], median_filter=3,
    ...                     threshold={"Dog": 0.5, "Cat": 0.6})
    >>> raw = frame_scores_to_dataframe(
    ...     [[0.9, 0.1], [0.8, 0.7], [0.1, 0.7], [0.0, 0.7]], ["Dog", "Cat"])
    >>> pp.events(raw).values.tolist()
    [[0.0, 0.128, 'Dog', 0.9], [0.064, 0.256, 'Cat', 0.7]]
    >>> PostProcessing.from_dict(pp.to_dict()).to_dict() == pp.to_dict()
    True
    """

    def __init__(
        self,
        classes,
        median_filter=1,
        threshold=0.5,
        csebbs=None,
        method=None,
        info=None,
    ):
        self.classes = [str(c) for c in classes]
        self.median_filter = _lengths_per_class(median_filter, self.classes)
        self.threshold = (
            _plain(check_per_class(threshold, self.classes, "threshold"))
            if isinstance(threshold, Mapping)
            else float(threshold)
        )
        self.csebbs = None
        if csebbs is not None:
            self.csebbs = {k: _plain(v) for k, v in csebbs.items()}
            for key, value in self.csebbs.items():
                if key not in CSEBBS_KEYS:
                    raise ValueError(f"unknown cSEBB parameter {key!r}.")
                if isinstance(value, Mapping):
                    check_per_class(value, self.classes, f"cSEBB {key}")
        if method is None:
            method = "csebbs" if self.csebbs else "median"
        if method not in POSTPROCESSING_METHODS:
            raise ValueError(
                f"method must be one of {POSTPROCESSING_METHODS}: {method!r}"
            )
        if method == "csebbs" and not self.csebbs:
            raise ValueError("method 'csebbs' needs cSEBB parameters.")
        self.method = method
        self.info = _plain(dict(info or {}))

    def filter(self, scores):
        """Median-filter frame scores (a DataFrame or a dict of them).

        Arguments
        ---------
        scores : pandas.DataFrame or dict
            Raw frame scores.

        Returns
        -------
        pandas.DataFrame or dict
            Filtered scores, same type.
        """
        return median_filter(scores, self.median_filter)

    def event_scores(self, scores):
        """Scores to evaluate with PSDS: filtered frames or cSEBB boxes.

        Arguments
        ---------
        scores : pandas.DataFrame or dict
            Raw frame scores.

        Returns
        -------
        pandas.DataFrame or dict
            sed_scores_eval DataFrame(s), same type.
        """
        if self.method == "csebbs":
            return csebbs_scores(scores, self.csebbs)
        return self.filter(scores)

    def events(self, scores):
        """Detected events of one clip.

        Arguments
        ---------
        scores : pandas.DataFrame
            Raw frame scores of one clip.

        Returns
        -------
        pandas.DataFrame
            Columns ``onset, offset, event_label, score``, sorted by onset,
            offset and label.
        """
        columns = [*EVENT_COLUMNS, "score"]
        if self.method == "median":
            events = scores_to_events(
                self.filter(scores), self.threshold, with_score=True
            )
            return events[columns]
        threshold = self.csebbs.get("detection_threshold")
        if threshold is None:
            threshold = self.threshold
        thresholds = dict(
            zip(self.classes, _thresholds_per_class(threshold, self.classes))
        )
        rows = [
            (round(on, TIME_DECIMALS), round(off, TIME_DECIMALS), label, conf)
            for on, off, label, conf in csebbs_boxes(scores, self.csebbs)
            if conf > thresholds[label]
        ]
        rows.sort(key=lambda e: (e[0], e[1], str(e[2])))
        return pd.DataFrame(rows, columns=columns).astype(
            {"onset": float, "offset": float, "score": float}
        )

    def to_dict(self):
        """Plain, JSON- and YAML-ready parameters.

        Returns
        -------
        dict
            ``classes``, ``method``, ``median_filter``, ``threshold``,
            ``csebbs`` and ``info``.
        """
        return {
            "classes": list(self.classes),
            "method": self.method,
            "median_filter": dict(self.median_filter),
            "threshold": _plain(self.threshold),
            "csebbs": _plain(self.csebbs),
            "info": _plain(self.info),
        }

    @classmethod
    def from_dict(cls, params, method=None):
        """Build from :meth:`to_dict` output.

        Arguments
        ---------
        params : mapping
            The parameters.
        method : str, optional
            Override the stored method.

        Returns
        -------
        PostProcessing
            The post-processing.
        """
        return cls(
            params["classes"],
            median_filter=params.get("median_filter", 1),
            threshold=params.get("threshold", 0.5),
            csebbs=params.get("csebbs"),
            method=method or params.get("method"),
            info=params.get("info"),
        )

    def save(self, path):
        """Write the parameters as JSON.

        Arguments
        ---------
        path : str or pathlib.Path
            Output file.

        Returns
        -------
        pathlib.Path
            The file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path):
        """Read parameters written by :meth:`save`.

        Arguments
        ---------
        path : str or pathlib.Path
            The JSON file.

        Returns
        -------
        PostProcessing
            The post-processing.
        """
        return cls.from_dict(json.loads(Path(path).read_text()))


def events_table(tables):
    """One events table from per-file tables, rounded as ``sed-detect``
    writes it.

    Files without events add no rows; their empty tables stay out of the
    concatenation (pandas deprecates concatenating them).

    Arguments
    ---------
    tables : list of pandas.DataFrame
        Each with ``filename``, ``onset``, ``offset``, ``event_label``,
        ``score``.

    Returns
    -------
    pandas.DataFrame
        Those columns, in that order.

    Example
    -------
    >>> import warnings
    >>> columns = ["filename", "onset", "offset", "event_label", "score"]
    >>> empty = pd.DataFrame(columns=columns)
    >>> dog = pd.DataFrame([["a.wav", 0.5, 1.25, "Dog", 0.91234]],
    ...                    columns=columns)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error")
    ...     events_table([empty, dog])
      filename  onset  offset event_label   score
    0    a.wav    0.5    1.25         Dog  0.9123
    >>> len(events_table([empty]))
    0
    """
    columns = ["filename", "onset", "offset", "event_label", "score"]
    tables = [t for t in tables if len(t)]
    table = pd.concat(tables) if tables else pd.DataFrame(columns=columns)
    return table[columns].round({"onset": 3, "offset": 3, "score": 4})
