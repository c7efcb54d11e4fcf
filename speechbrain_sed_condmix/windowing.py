"""Analysis windows of long signals and the stitching of their scores.

The model sees windows of its training clip length (10 s for DESED). A
longer signal is cut into windows every ``hop`` samples, the last one
ending at the end of the signal, and each stretch of the signal takes the
frame scores of one window (see :func:`stitch_window_scores`). The offline
detector and the streaming one (:mod:`speechbrain_sed_condmix.streaming`)
share these functions, so that a stream gives the frames of a file.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import numpy as np


def window_starts(n_samples, window, hop):
    """Start samples of the analysis windows of a signal.

    Windows start every ``hop`` samples while they end before the signal
    does; the last window ends exactly at the end of the signal, so no
    window of a long file is padded. A signal of at most one window gets
    one window at 0.

    Arguments
    ---------
    n_samples : int
        Signal length.
    window : int
        Window length.
    hop : int
        Hop between windows (``0 < hop <= window``).

    Returns
    -------
    list of int
        Sorted start samples.

    Example
    -------
    >>> window_starts(30, 10, 5)
    [0, 5, 10, 15, 20]
    >>> window_starts(25, 10, 5)
    [0, 5, 10, 15]
    >>> window_starts(7, 10, 5)
    [0]
    """
    if not 0 < hop <= window:
        raise ValueError(f"hop must be in (0, {window}], got {hop}")
    if n_samples <= window:
        return [0]
    starts = set(range(0, n_samples - window, hop))
    starts.add(n_samples - window)
    return sorted(starts)


def handover_sample(start, after, cover, frame_samples, look_ahead=None):
    """Sample where a window hands the scores over to the next window.

    Without ``look_ahead`` the handover is the midpoint of the two window
    centres (centre cropping: every frame comes from the window whose
    centre is nearest). With ``look_ahead`` (samples) the window is used
    while the frames have at least that much audio after them inside it,
    whatever the next window: this is what lets a stream settle frames as
    soon as their window has run. Either point is moved to the nearest
    frame boundary of the window and kept inside both windows.

    Arguments
    ---------
    start : int
        Start sample of the window.
    after : int
        Start sample of the next window.
    cover : int
        Samples covered by the window's frames (frames x frame_samples).
    frame_samples : int
        Samples per output frame.
    look_ahead : int, optional
        Right context, in samples, that a frame keeps in its window.

    Returns
    -------
    int
        The handover sample.

    Example
    -------
    >>> handover_sample(0, 4, 16, 2)  # centres 8 and 12
    10
    >>> handover_sample(0, 4, 16, 2, look_ahead=3)  # 16 - 3 = 13 -> 12
    12
    """
    if look_ahead is None:
        used = (after - start + cover) / 2  # the midpoint of the centres
    else:
        used = cover - look_ahead
    handover = start + round(used / frame_samples) * frame_samples
    return min(max(handover, after), start + cover)


def window_rows(scores, start, low, high, frame_samples):
    """The frames of one window's stretch ``[low, high)`` of the signal.

    Frame ``j`` of the window spans ``[start + j * frame_samples, start +
    (j + 1) * frame_samples)``. The first row starts at ``low`` (a
    handover inside a frame shortens it; with windows that do not overlap
    it also fills the gap before the window, less than one frame) and the
    last row ends at ``high`` at the latest.

    Arguments
    ---------
    scores : numpy.ndarray
        ``[frames, classes]`` of the window.
    start : int
        Start sample of the window.
    low, high : int
        The stretch, in samples (``low < high``).
    frame_samples : int
        Samples per output frame.

    Returns
    -------
    onsets, offsets : list of int
        Sample bounds of the rows.
    rows : list of numpy.ndarray
        The scores of the rows.

    Example
    -------
    >>> scores = np.arange(4.0)[:, None]
    >>> window_rows(scores, 3, 6, 11, 2)[:2]
    ([6, 7, 9], [7, 9, 11])
    """
    n_frames = len(scores)
    first = max((low - start) // frame_samples, 0)
    last = min(-(-(high - start) // frame_samples), n_frames)
    onsets, offsets, rows = [], [], []
    for j in range(first, last):
        onsets.append(low if j == first else start + j * frame_samples)
        offsets.append(min(high, start + (j + 1) * frame_samples))
        rows.append(scores[j])
    return onsets, offsets, rows


def stitch_window_scores(
    window_scores, starts, frame_samples, n_samples, look_ahead=None
):
    """Stitch the frame scores of overlapping windows (centre cropping).

    Window ``i`` starts at sample ``starts[i]``; its frame ``j`` spans
    samples ``[starts[i] + j * frame_samples, starts[i] + (j + 1) *
    frame_samples)``. Between two consecutive windows the handover point is
    given by :func:`handover_sample` (by default the midpoint of their
    centres). Each window gives the frames of its stretch; the first frame
    after a handover is cut to start at the handover. Frames starting at or
    after ``n_samples`` are dropped and the last offset is cut to
    ``n_samples``.

    Arguments
    ---------
    window_scores : numpy.ndarray
        ``[windows, frames, classes]``.
    starts : sequence of int
        Start sample of each window (increasing).
    frame_samples : int
        Samples per output frame (hop length x pooling).
    n_samples : int
        Length of the signal.
    look_ahead : int, optional
        Handover by right context instead of by centres (samples; see
        :func:`handover_sample`).

    Returns
    -------
    bounds : numpy.ndarray
        ``[rows + 1]`` frame boundaries, in samples.
    scores : numpy.ndarray
        ``[rows, classes]``.

    Example
    -------
    Two windows of 4 frames of 2 samples, at 0 and 3: the centres are 4
    and 7, the handover 6; window 1's frame [5, 7) is cut to [6, 7).

    >>> scores = np.stack([np.full((4, 1), 1.0), np.full((4, 1), 2.0)])
    >>> bounds, out = stitch_window_scores(scores, [0, 3], 2, 11)
    >>> bounds.tolist(), out[:, 0].tolist()
    ([0, 2, 4, 6, 7, 9, 11], [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    """
    window_scores = np.asarray(window_scores)
    n_windows, n_frames, _ = window_scores.shape
    if n_windows != len(starts):
        raise ValueError(f"{n_windows} windows of scores, {len(starts)} starts")
    cover = n_frames * frame_samples
    # Stretch of each window: [lows[i], highs[i]).
    highs = [
        handover_sample(
            starts[i], starts[i + 1], cover, frame_samples, look_ahead
        )
        for i in range(n_windows - 1)
    ]
    highs.append(starts[-1] + cover)
    lows = [0, *highs[:-1]]
    onsets, offsets, rows = [], [], []
    for i, start in enumerate(starts):
        low, high = lows[i], min(highs[i], n_samples)
        if high <= low:
            continue
        on, off, got = window_rows(
            window_scores[i], start, low, high, frame_samples
        )
        onsets += on
        offsets += off
        rows += got
    bounds = np.array([*onsets, offsets[-1]], dtype=np.int64)
    return bounds, np.stack(rows)
