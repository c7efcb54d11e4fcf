"""Post-processing of frame-level SED scores (no torch needed).

Everything here works on the score format of ``sed_scores_eval``: one
``pandas.DataFrame`` per clip with the columns ``onset, offset, <class_1>,
..., <class_K>`` (one row per frame, gapless), or a dict
``{clip_id: DataFrame}`` where ``clip_id`` is the file name without ``.wav``.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import scipy.ndimage
from sed_scores_eval.base_modules.io import read_sed_scores, write_sed_scores
from sed_scores_eval.base_modules.scores import validate_score_dataframe

#: Frame hop of the DCASE CRNN output (4 x 256 samples at 16 kHz), seconds.
FRAME_DURATION = 0.064

#: Decimals kept for frame times. 6 is also sed_scores_eval's default
#: ``time_decimals``, and rounding keeps k * 0.064 free of float noise
#: (0.192 instead of 0.19200000000000003) in the written TSVs.
TIME_DECIMALS = 6

EVENT_COLUMNS = ["onset", "offset", "event_label"]


def frame_scores_to_dataframe(
    scores, event_classes, frame_duration=FRAME_DURATION, duration=None
):
    """Wrap the frame probabilities of one clip into a score DataFrame.

    Frame ``k`` spans ``[k * frame_duration, (k + 1) * frame_duration)``, as
    in the DCASE baseline (156 frames -> 157 timestamps 0, 0.064, ...,
    9.984). Times are rounded to ``TIME_DECIMALS`` decimals.

    With ``duration=None`` every frame is kept, which is what the DCASE
    baseline does: the zero-padded tail of a clip shorter than 10 s is scored
    up to 9.984 s. With ``duration`` given, frames that start at or after
    ``duration`` are dropped and the offset of the last kept frame is cut to
    ``duration``, so padded audio produces no detections. Choose one
    convention per evaluation and keep it.

    Arguments
    ---------
    scores : array-like
        Probabilities of shape ``[T, C]`` for one clip.
    event_classes : sequence of str
        The ``C`` class names, in column order.
    frame_duration : float
        Length of one output frame in seconds.
    duration : float or None
        True clip length in seconds; ``None`` keeps all ``T`` frames.

    Returns
    -------
    pandas.DataFrame
        Columns ``onset, offset, *event_classes``, one row per frame.

    Example
    -------
    >>> df = frame_scores_to_dataframe(np.zeros((156, 2)), ["a", "b"])
    >>> len(df), float(df["offset"].iloc[-1])
    (156, 9.984)
    >>> df = frame_scores_to_dataframe(np.zeros((156, 1)), ["a"], duration=9.3)
    >>> len(df), float(df["onset"].iloc[-1]), float(df["offset"].iloc[-1])
    (146, 9.28, 9.3)
    """
    scores = np.array(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(
            f"scores must have shape [T, C], got shape {scores.shape}."
        )
    event_classes = list(event_classes)
    if len(event_classes) != scores.shape[1]:
        raise ValueError(
            f"{len(event_classes)} event classes given for "
            f"{scores.shape[1]} score columns."
        )
    if frame_duration <= 0:
        raise ValueError(f"frame_duration must be > 0, got {frame_duration}.")
    n_frames = scores.shape[0]
    if n_frames == 0:
        raise ValueError("scores has no frames.")
    # Multiply integers (not cumulative sums) so that no error accumulates.
    timestamps = np.round(
        np.arange(n_frames + 1) * frame_duration, TIME_DECIMALS
    )
    if duration is not None:
        duration = round(float(duration), TIME_DECIMALS)
        if duration <= 0:
            raise ValueError(f"duration must be > 0, got {duration}.")
        n_keep = int(np.sum(timestamps[:-1] < duration))
        scores = scores[:n_keep]
        timestamps = timestamps[: n_keep + 1].copy()
        timestamps[-1] = min(timestamps[-1], duration)
    data = {"onset": timestamps[:-1], "offset": timestamps[1:]}
    for index, name in enumerate(event_classes):
        data[name] = scores[:, index]
    return pd.DataFrame(data)


def _class_names(frame):
    """Return the class columns of a score DataFrame, validating it."""
    _, event_classes = validate_score_dataframe(frame)
    return list(event_classes)


def _check_mapping(value, event_classes, what):
    """Check that a per-class mapping covers every class; return it."""
    missing = [c for c in event_classes if c not in value]
    if missing:
        raise ValueError(f"{what} has no entry for {missing}.")
    return {c: value[c] for c in event_classes}


def _lengths_per_class(filter_length, event_classes):
    """Resolve ``filter_length`` to a checked ``{class: int}`` dict."""
    if isinstance(filter_length, Mapping):
        lengths = _check_mapping(filter_length, event_classes, "filter_length")
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
    event_classes = _class_names(frame)
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
        threshold = _check_mapping(threshold, event_classes, "threshold")
        return np.array([float(threshold[c]) for c in event_classes])
    return np.full(len(event_classes), float(threshold))


def _events_of_frame(frame, threshold, with_score=False):
    """List ``(onset, offset, label[, score])`` runs with score > threshold.

    With ``with_score``, each event also carries the highest score of its
    frames.
    """
    event_classes = _class_names(frame)
    thresholds = _thresholds_per_class(threshold, event_classes)
    values = frame[event_classes].to_numpy(dtype=np.float64)
    onsets = frame["onset"].to_numpy(dtype=np.float64)
    offsets = frame["offset"].to_numpy(dtype=np.float64)
    active = values > thresholds[None, :]
    # Pad with inactive frames so every run has a rising and falling edge.
    edges = np.diff(np.pad(active.astype(np.int8), ((1, 1), (0, 0))), axis=0)
    events = []
    for index, name in enumerate(event_classes):
        starts = np.flatnonzero(edges[:, index] == 1)
        stops = np.flatnonzero(edges[:, index] == -1)
        for start, stop in zip(starts, stops):
            event = (float(onsets[start]), float(offsets[stop - 1]), name)
            if with_score:
                event += (float(values[start:stop, index].max()),)
            events.append(event)
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


def write_scores(scores, folder):
    """Write ``{clip_id: DataFrame}`` as ``<folder>/<clip_id>.tsv`` files.

    A thin wrapper over ``sed_scores_eval.io.write_sed_scores`` (which
    validates every DataFrame); the folder is created if needed.

    Arguments
    ---------
    scores : dict
        ``{clip_id: score DataFrame}``.
    folder : str or pathlib.Path
        Output folder.

    Returns
    -------
    pathlib.Path
        The folder.

    Example
    -------
    >>> import tempfile
    >>> df = frame_scores_to_dataframe([[0.25], [0.5]], ["Dog"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = write_scores({"clip1": df}, tmp)
    ...     sorted(p.name for p in folder.iterdir())
    ['clip1.tsv']
    """
    if not isinstance(scores, Mapping):
        raise TypeError(
            f"scores must be a dict {{clip_id: DataFrame}}, got "
            f"{type(scores).__name__}."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_sed_scores(dict(scores), folder)
    return folder


def read_scores(folder):
    """Read a folder of ``<clip_id>.tsv`` score files into a dict.

    A thin wrapper over ``sed_scores_eval.io.read_sed_scores``; the folder
    must contain only ``.tsv`` files.

    Arguments
    ---------
    folder : str or pathlib.Path
        Folder written by :func:`write_scores`.

    Returns
    -------
    dict
        ``{clip_id: score DataFrame}``, sorted by clip id.

    Example
    -------
    >>> import tempfile
    >>> df = frame_scores_to_dataframe([[0.25], [0.5]], ["Dog"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     back = read_scores(write_scores({"clip1": df}, tmp))
    >>> back["clip1"].values.tolist()
    [[0.0, 0.064, 0.25], [0.064, 0.128, 0.5]]
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"score folder {folder} does not exist.")
    return read_sed_scores(folder)


def ground_truth_scores(entries, encoder):
    """Turn ground-truth events into frame scores: the oracle system.

    Each clip's events are encoded on the label grid (1 inside an event,
    0 elsewhere) and wrapped as a score DataFrame. Scoring them measures the
    ceiling that the label grid and the evaluation path allow.

    Arguments
    ---------
    entries : dict
        ``{clip_id: {"events": [(onset, offset, label), ...],
        "duration": seconds}}``, e.g. a manifest of ``prepare_desed``.
    encoder : FrameLabelEncoder
        The label encoder (its grid and classes are used).

    Returns
    -------
    dict
        ``{clip_id: score DataFrame}``.

    Example
    -------
    >>> from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    >>> enc = FrameLabelEncoder(classes=["a"])
    >>> s = ground_truth_scores(
    ...     {"x": {"events": [(0.0, 0.128, "a")], "duration": 10.0}}, enc
    ... )
    >>> s["x"]["a"].tolist()[:3]
    [1.0, 1.0, 0.0]
    """
    scores = {}
    for clip_id, entry in entries.items():
        frames = encoder.encode_strong(
            [tuple(event) for event in entry["events"]],
            duration=entry["duration"],
        )
        scores[clip_id] = frame_scores_to_dataframe(
            frames.numpy().T,
            encoder.classes,
            frame_duration=encoder.frame_duration,
            duration=entry["duration"],
        )
    return scores


# ----------------------------------------------------------------------
# Tuned post-processing: per-class thresholds and cSEBB (sebbs)

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
_SEBBS_PSDS_KEYS = (
    "dtc_threshold",
    "gtc_threshold",
    "cttc_threshold",
    "alpha_ct",
    "unit_of_time",
    "max_efpr",
)

POSTPROCESSING_METHODS = ("median", "csebbs")


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


def _csebbs_module():
    """Import ``sebbs.csebbs`` or raise an ImportError that says how."""
    try:
        from sebbs import csebbs
    except ImportError as error:
        raise ImportError(SEBBS_INSTALL_HINT) from error
    return csebbs


def _finite_or_none(value):
    """JSON-friendly threshold: ``inf`` (criterion off) becomes None."""
    value = float(value)
    return value if np.isfinite(value) else None


def _per_class_value(value, event_classes, none_means):
    """A float or ``{class: float}`` with None replaced by ``none_means``."""
    if isinstance(value, Mapping):
        return {
            c: none_means if value[c] is None else float(value[c])
            for c in event_classes
        }
    return none_means if value is None else float(value)


def _predictor(params, event_classes):
    """A ``CSEBBsPredictor`` from a cSEBB parameter dict."""
    csebbs = _csebbs_module()
    unknown = set(params) - set(CSEBBS_KEYS)
    if unknown:
        raise ValueError(f"unknown cSEBB parameter(s) {sorted(unknown)}.")
    missing = [k for k in CSEBBS_KEYS[:3] if k not in params]
    if missing:
        raise ValueError(f"cSEBB parameters lack {missing}.")
    for key in CSEBBS_KEYS:
        value = params.get(key)
        if isinstance(value, Mapping):
            _check_mapping(value, event_classes, f"cSEBB {key}")
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


def _fresh_scores(scores):
    """Writeable float64 copies of score DataFrames and their classes."""
    frames = {}
    event_classes = None
    for clip_id, frame in scores.items():
        classes = _class_names(frame)
        if event_classes is None:
            event_classes = classes
        elif classes != event_classes:
            raise ValueError(
                f"score columns of clip {clip_id!r} differ: {classes} vs "
                f"{event_classes}."
            )
        columns = ["onset", "offset", *classes]
        frames[clip_id] = pd.DataFrame(
            np.array(frame[columns].to_numpy(), dtype=np.float64),
            columns=columns,
        )
    return frames, event_classes


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
    frames, event_classes = _fresh_scores({"_": scores} if single else scores)
    if not frames:
        return {}
    from speechbrain_sed_condmix.metrics import writeable_pandas

    predictor = _predictor(params, event_classes)
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

    frames, event_classes = _fresh_scores(scores)
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
    >>> scores = {"c": frame_scores_to_dataframe(frames, ["Dog"])}
    >>> thr, f1 = tune_thresholds(scores, {"c": [(0.64, 2.56, "Dog")]},
    ...                           {"c": 10.0})
    >>> 0.0 < thr["Dog"] < 0.3, f1["Dog"]
    (True, 1.0)
    """
    from sed_scores_eval import collar_based, intersection_based

    from speechbrain_sed_condmix.metrics import (
        COLLAR_F1_PARAMS,
        INTERSECTION_F1_PARAMS,
        prepare_eval_inputs,
        writeable_pandas,
    )

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
    csebbs = _csebbs_module()
    from speechbrain_sed_condmix.metrics import (
        PSDS1_PARAMS,
        prepare_eval_inputs,
        writeable_pandas,
    )

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
            predictor = _predictor(params, event_classes)
            with writeable_pandas():
                candidates.append((predictor, predictor.predict(scores)))
    with writeable_pandas():
        best, values = csebbs.select_best_psds(
            candidates,
            truth,
            clip_durations,
            classwise=True,
            **{k: psds_params[k] for k in _SEBBS_PSDS_KEYS if k in psds_params},
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
    * ``"csebbs"``: cSEBB boxes (:func:`csebbs_boxes`) from the raw
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
        cSEBB parameters (see :func:`tune_csebbs`).
    method : str, optional
        ``"median"`` or ``"csebbs"``; default ``"csebbs"`` when ``csebbs``
        is given, else ``"median"``.
    info : dict, optional
        Free-form provenance (what it was tuned on, validation values),
        kept through :meth:`to_dict` / :meth:`from_dict`.

    Example
    -------
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
            _plain(_check_mapping(threshold, self.classes, "threshold"))
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
                    _check_mapping(value, self.classes, f"cSEBB {key}")
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
        import json

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
        import json

        return cls.from_dict(json.loads(Path(path).read_text()))


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
    frames, event_classes = _fresh_scores(scores)
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
        from speechbrain_sed_condmix.metrics import PSDS2_PARAMS

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
    from speechbrain_sed_condmix.metrics import compute_sed_metrics

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
