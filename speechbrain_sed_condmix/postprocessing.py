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


def _lengths_per_class(filter_length, event_classes):
    """Resolve ``filter_length`` to a checked ``{class: int}`` dict."""
    if isinstance(filter_length, Mapping):
        missing = [c for c in event_classes if c not in filter_length]
        if missing:
            raise ValueError(f"filter_length has no entry for {missing}.")
        lengths = {c: filter_length[c] for c in event_classes}
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
        missing = [c for c in event_classes if c not in threshold]
        if missing:
            raise ValueError(f"threshold has no entry for {missing}.")
        return np.array([float(threshold[c]) for c in event_classes])
    return np.full(len(event_classes), float(threshold))


def _events_of_frame(frame, threshold):
    """List ``(onset, offset, label)`` runs with ``score > threshold``."""
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
            events.append(
                (float(onsets[start]), float(offsets[stop - 1]), name)
            )
    events.sort(key=lambda e: (e[0], e[1], str(e[2])))
    return events


def scores_to_events(scores, threshold):
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

    Returns
    -------
    pandas.DataFrame
        For one DataFrame: columns ``onset, offset, event_label``. For a dict:
        columns ``filename, onset, offset, event_label`` with filename
        ``<clip_id>.wav`` (clips without detections have no row). Rows are
        sorted by clip, onset, offset and label.

    Example
    -------
    >>> df = frame_scores_to_dataframe([[0.2], [0.7], [0.9], [0.1]], ["Dog"])
    >>> scores_to_events(df, 0.5).values.tolist()
    [[0.064, 0.192, 'Dog']]
    >>> scores_to_events({"clip1": df}, 0.5).values.tolist()
    [['clip1.wav', 0.064, 0.192, 'Dog']]
    """
    if isinstance(scores, pd.DataFrame):
        events = _events_of_frame(scores, threshold)
        return pd.DataFrame(events, columns=EVENT_COLUMNS).astype(
            {"onset": float, "offset": float}
        )
    if isinstance(scores, Mapping):
        rows = []
        for clip_id in sorted(scores):
            rows.extend(
                (f"{clip_id}.wav", *event)
                for event in _events_of_frame(scores[clip_id], threshold)
            )
        return pd.DataFrame(rows, columns=["filename", *EVENT_COLUMNS]).astype(
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
