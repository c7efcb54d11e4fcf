"""Score DataFrames of sed_scores_eval and their I/O (no torch needed).

The score format of ``sed_scores_eval``: one ``pandas.DataFrame`` per clip
with the columns ``onset, offset, <class_1>, ..., <class_K>`` (one row per
frame, gapless), or a dict ``{clip_id: DataFrame}`` where ``clip_id`` is the
file name without ``.wav``. Everything that makes, checks, reads or writes
such DataFrames lives here; post-processing, metrics and tuning build on it.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

with warnings.catch_warnings():
    # sed_scores_eval imports sed_eval, which imports dcase_util, whose utils
    # import setuptools' deprecated pkg_resources (dcase_util's own code, not
    # a call of ours). Only that warning, only during this import.
    warnings.filterwarnings(
        "ignore", "pkg_resources is deprecated", UserWarning
    )
    from sed_scores_eval.base_modules.io import (
        read_sed_scores,
        write_sed_scores,
    )
    from sed_scores_eval.base_modules.scores import (
        create_score_dataframe,
        validate_score_dataframe,
    )

#: Frame hop of the DCASE CRNN output (4 x 256 samples at 16 kHz), seconds.
FRAME_DURATION = 0.064

#: Decimals kept for frame times. 6 is also sed_scores_eval's default
#: ``time_decimals``, and rounding keeps k * 0.064 free of float noise
#: (0.192 instead of 0.19200000000000003) in the written TSVs.
TIME_DECIMALS = 6

#: Columns of a detected-event table of one clip (DESED TSV format).
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
    return create_score_dataframe(scores, timestamps, event_classes)


def score_classes(frame):
    """Return the class columns of a score DataFrame, validating it.

    Arguments
    ---------
    frame : pandas.DataFrame
        One clip's scores.

    Returns
    -------
    list of str
        The class columns, in order.

    Example
    -------
    >>> score_classes(frame_scores_to_dataframe(np.zeros((2, 2)), ["a", "b"]))
    ['a', 'b']
    """
    _, event_classes = validate_score_dataframe(frame)
    return list(event_classes)


def check_per_class(value, event_classes, what):
    """Check that a per-class mapping covers every class; return it.

    Arguments
    ---------
    value : mapping
        ``{class: value}``; extra keys are ignored.
    event_classes : sequence of str
        The classes that need an entry.
    what : str
        What ``value`` is, for the error message.

    Returns
    -------
    dict
        ``{class: value}`` in ``event_classes`` order.

    Raises
    ------
    ValueError
        When a class has no entry.

    Example
    -------
    >>> check_per_class({"b": 2, "a": 1, "x": 0}, ["a", "b"], "threshold")
    {'a': 1, 'b': 2}
    """
    missing = [c for c in event_classes if c not in value]
    if missing:
        raise ValueError(f"{what} has no entry for {missing}.")
    return {c: value[c] for c in event_classes}


def fresh_scores(scores):
    """Writeable float64 copies of score DataFrames and their classes.

    sed_scores_eval's and sebbs' compiled code needs writeable arrays, which
    DataFrames under pandas copy-on-write do not give; fresh copies do.

    Arguments
    ---------
    scores : dict
        ``{clip_id: score DataFrame}``, all with the same class columns.

    Returns
    -------
    frames : dict
        ``{clip_id: DataFrame}`` of new float64 DataFrames.
    event_classes : list of str or None
        The class columns (None for an empty dict).

    Example
    -------
    >>> df = frame_scores_to_dataframe([[0.5]], ["Dog"])
    >>> frames, classes = fresh_scores({"c": df})
    >>> classes, frames["c"] is df, frames["c"].equals(df)
    (['Dog'], False, True)
    """
    frames = {}
    event_classes = None
    for clip_id, frame in scores.items():
        classes = score_classes(frame)
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


@contextlib.contextmanager
def writeable_pandas():
    """Disable pandas copy-on-write while sed_scores_eval runs.

    Under copy-on-write ``DataFrame.to_numpy()`` returns read-only views,
    which sed_scores_eval 0.0.4's Cython code rejects ("buffer source array
    is read-only"). pandas < 3 lets us switch it off; pandas 3 is
    unsupported by sed_scores_eval 0.0.4 anyway.
    """
    if int(pd.__version__.split(".")[0]) < 3:
        with pd.option_context("mode.copy_on_write", False):
            yield
    else:
        yield


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
