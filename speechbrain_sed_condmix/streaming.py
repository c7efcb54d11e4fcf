"""Streaming detection: audio chunks in, settled events out.

:class:`EventStream` runs a :class:`~speechbrain_sed_condmix.inference.
SoundEventDetector` on audio that arrives in chunks of any size and yields
each event once it is final. It computes exactly the frames that offline
detection computes with the same windows (see
:mod:`speechbrain_sed_condmix.windowing`), only earlier:

* the model always sees whole windows of its clip length (10 s for the
  DESED models; ATST-Frame cannot take more), one every ``hop`` seconds,
  as soon as the audio of the window has arrived;
* a frame takes its score from the first window in which at least
  ``look_ahead`` seconds of audio follow it, so a frame is settled when
  that window has run, whatever comes later;
* the class-wise median filter needs half its length of settled frames
  after a frame; an event is emitted when the frame after its end is
  decided, or when the stream ends (an event still open is closed at the
  end of the audio).

Latency and cost (:meth:`EventStream.latency`): an event is emitted at
most ``look_ahead + hop + (median half-length + 1) frames`` (plus the 16 ms
the 156 frames leave uncovered in a 10 s window, and up to one frame as the
frames of a window need not sit on the previous window's grid) after its
offset, and
never before the first whole window (10 s) has arrived. A
shorter ``look_ahead`` answers sooner but scores frames with less future
context in the bidirectional GRU (and the transformer), so the scores drift
from those of offline detection with centred windows; the default,
``(window - hop) / 2``, keeps every frame near a window centre, as offline
detection does. A shorter ``hop`` lowers the latency but runs one window
per hop: the compute per second of audio is ``window cost / hop``.

Digital silence (peak under ``silence_peak``) is not run through the
network and gives no events, as offline. Streaming uses the median filter
post-processing; a model whose post-processing is cSEBB (which needs the
whole recording) is streamed with its median filter and thresholds.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from speechbrain_sed_condmix.postprocessing import median_filter
from speechbrain_sed_condmix.scores import TIME_DECIMALS
from speechbrain_sed_condmix.windowing import window_rows

logger = logging.getLogger(__name__)


class StreamEvent(NamedTuple):
    """One settled event of a stream.

    ``onset`` and ``offset`` are seconds from the start of the stream,
    ``score`` the highest median-filtered frame score of the event, and
    ``emitted_at`` the seconds of audio received when it was settled.
    """

    onset: float
    offset: float
    event_label: str
    score: float
    emitted_at: float


class EventStream:
    """Incremental detection on a stream of audio chunks.

    Usually reached through ``SoundEventDetector.stream(chunks, ...)``.

    Arguments
    ---------
    detector : SoundEventDetector
        A loaded detector.
    hop : float
        Seconds between the model's windows (at most the window length).
    look_ahead : float, optional
        Seconds of audio a frame keeps after it in its window; default
        ``(window - hop) / 2`` (centred windows, as offline detection).
    sample_rate : int, optional
        Rate of the chunks; must be the model's (resample before, e.g.
        ``ffmpeg -ar 16000``).

    Example
    -------
    >>> stream = EventStream(detector, hop=1.0)  # doctest: +SKIP
    >>> for chunk in microphone_chunks():  # doctest: +SKIP
    ...     for event in stream.push(chunk):
    ...         print(event)
    >>> events = stream.finish()  # doctest: +SKIP
    """

    def __init__(self, detector, hop=1.0, look_ahead=None, sample_rate=None):
        self.detector = detector
        rate = detector.sample_rate
        if sample_rate is not None and int(sample_rate) != rate:
            raise ValueError(
                f"the stream is at {sample_rate} Hz but the model takes "
                f"{rate} Hz: resample it first (e.g. ffmpeg -ar {rate})"
            )
        self.rate = rate
        self.window = detector.window_samples
        self.frame = detector.frame_samples
        self.cover = int(detector.hparams.encoder.n_frames) * self.frame
        self.hop = int(round(float(hop) * rate))
        if not 0 < self.hop <= self.window:
            raise ValueError(
                f"hop must be in (0, {self.window / rate:g}] s, got {hop}"
            )
        if look_ahead is None:
            look_ahead = (self.cover - self.hop) / 2 / rate
        look = float(look_ahead) * rate
        # Frames of a window used before the handover (a frame multiple).
        self.used = int(round((self.cover - look) / self.frame)) * self.frame
        if look < 0 or self.used < self.hop or self.used > self.cover:
            most = (self.cover - self.hop) / rate
            raise ValueError(
                f"look_ahead must be in [0, {most:.3f}] s with a hop of "
                f"{self.hop / rate:g} s (window {self.window / rate:g} s), "
                f"got {look_ahead}"
            )
        self.look_ahead = (self.cover - self.used) / rate
        post = detector.postprocessing
        if post.method != "median":
            logger.warning(
                "Streaming uses the median filter and thresholds; this "
                "model's %s post-processing needs the whole recording.",
                post.method,
            )
        self.classes = list(detector.classes)
        self.lengths = dict(post.median_filter)
        self.margin = max(self.lengths.values()) // 2
        threshold = post.threshold
        self.thresholds = [
            float(threshold[c] if isinstance(threshold, dict) else threshold)
            for c in self.classes
        ]
        self._audio = torch.zeros(0)
        self._audio_start = 0  # absolute sample of self._audio[0]
        self._received = 0
        self._next_start = 0  # next regular window
        self._last = None  # (start, scores) of the last window run
        self._settled = 0  # end sample of the settled frames
        self._bounds = []  # onset sample of each kept frame row
        self._rows = []
        self._row0 = 0  # absolute index of self._rows[0]
        self._decided = 0  # frames whose filtered score is final
        self._open = [None] * len(self.classes)  # (onset row, best score)
        self._finished = False

    def latency(self):
        """Longest delay, in seconds, from an event's offset to its emission.

        Returns
        -------
        float
            ``look_ahead + hop + (margin + 1) * frame + window - cover``.
        """
        samples = (
            self.window - self.used + self.hop + (self.margin + 1) * self.frame
        )
        return samples / self.rate

    # ------------------------------------------------------------------
    # Audio in

    def push(self, chunk):
        """Add audio; return the events it settles.

        Arguments
        ---------
        chunk : numpy.ndarray or torch.Tensor
            ``[samples]`` or ``[samples, channels]`` (averaged), at the
            model's rate.

        Returns
        -------
        list of StreamEvent
            Events settled by this chunk (often none).
        """
        if self._finished:
            raise RuntimeError("the stream is finished")
        wav = mono_chunk(chunk)
        self._audio = torch.cat([self._audio, wav])
        self._received += len(wav)
        starts = []
        while self._next_start + self.window <= self._received:
            starts.append(self._next_start)
            self._next_start += self.hop
        events = []
        for start, scores in self._run(starts):
            self._settle(start, scores, start + self.used)
            self._last = (start, scores)
            events += self._decide(final=False)
        self._drop_old_audio()
        return events

    def finish(self):
        """End the stream: run its last window and close open events.

        Returns
        -------
        list of StreamEvent
            The remaining events.
        """
        if self._finished:
            return []
        self._finished = True
        n = self._received
        if n == 0:
            return []
        if self._last is None:  # shorter than one window: padded window
            start, scores = next(self._run([0]))
        elif self._last[0] + self.window < n:  # a window ending at the end
            start, scores = next(self._run([n - self.window]))
        else:  # the last regular window ends at the end
            start, scores = self._last
        self._settle(start, scores, min(start + self.cover, n))
        self._bounds.append(self._settled)
        return self._decide(final=True)

    # ------------------------------------------------------------------
    # Windows and frames

    def _run(self, starts):
        """``(start, [frames, classes])`` of windows, batched."""
        det = self.detector
        for first in range(0, len(starts), det.batch_size):
            chunk = starts[first : first + det.batch_size]
            pieces = [self._piece(s) for s in chunk]
            loud = [
                i
                for i, p in enumerate(pieces)
                if float(p.abs().max()) >= det.silence_peak
            ]
            n_frames = self.cover // self.frame
            out = np.zeros((len(chunk), n_frames, len(self.classes)))
            if loud:
                batch = torch.stack([det._window(pieces[i], 0) for i in loud])
                scores = det.forward(batch).cpu().numpy()
                out[loud] = scores
            yield from zip(chunk, out.astype(np.float32))

    def _piece(self, start):
        begin = start - self._audio_start
        return self._audio[begin : begin + self.window]

    def _drop_old_audio(self):
        keep_from = min(self._next_start, self._received - self.window)
        keep_from = max(keep_from, self._audio_start)
        self._audio = self._audio[keep_from - self._audio_start :]
        self._audio_start = keep_from

    def _settle(self, start, scores, high):
        if high <= self._settled:
            return
        onsets, _, rows = window_rows(
            scores, start, self._settled, high, self.frame
        )
        self._bounds += onsets
        self._rows += rows
        self._settled = high

    # ------------------------------------------------------------------
    # Frames to events

    def _decide(self, final):
        n_rows = self._row0 + len(self._rows)
        decided = n_rows if final else max(n_rows - self.margin, 0)
        if decided <= self._decided and not final:
            return []
        if decided <= self._decided:  # the end brought no new frame
            return self._close_all(self._received)
        # Raw rows around the newly decided frames: the median filter of a
        # frame reads at most `margin` frames on each side.
        lo = max(self._decided - self.margin, self._row0)
        hi = min(decided + self.margin, n_rows)
        bounds = self._bounds[lo - self._row0 : hi - self._row0 + 1]
        if len(bounds) < hi - lo + 1:  # the end of the last row
            bounds = [*bounds, self._settled]
        values = np.stack(self._rows[lo - self._row0 : hi - self._row0])
        filtered = self._median_filtered(bounds, values)
        filtered = filtered[self._decided - lo : decided - lo]
        events = []
        emitted_at = round(self._received / self.rate, TIME_DECIMALS)
        for offset, row in enumerate(filtered):
            index = self._decided + offset
            for c, value in enumerate(row):
                state = self._open[c]
                if value > self.thresholds[c]:
                    if state is None:
                        self._open[c] = (index, value)
                    elif value > state[1]:
                        self._open[c] = (state[0], value)
                elif state is not None:
                    events.append(self._event(c, state, index, emitted_at))
                    self._open[c] = None
        self._decided = decided
        if final:
            events += self._close_all(self._received)
        events.sort(key=lambda e: (e.onset, e.offset, e.event_label))
        self._drop_old_rows()
        return events

    def _median_filtered(self, bounds, values):
        """The class-wise median filter of rows ``values`` [rows, classes]."""
        times = np.round(np.asarray(bounds) / self.rate, TIME_DECIMALS)
        frame = pd.DataFrame({"onset": times[:-1], "offset": times[1:]})
        for index, name in enumerate(self.classes):
            frame[name] = values[:, index].astype(np.float64)
        return median_filter(frame, self.lengths)[self.classes].to_numpy()

    def _close_all(self, received):
        """Close the events still open at the end of the stream."""
        emitted_at = round(received / self.rate, TIME_DECIMALS)
        events = [
            self._event(c, state, self._decided, emitted_at)
            for c, state in enumerate(self._open)
            if state is not None
        ]
        self._open = [None] * len(self.classes)
        return events

    def _event(self, c, state, stop, emitted_at):
        onset_row, best = state
        return StreamEvent(
            round(self._bound(onset_row) / self.rate, TIME_DECIMALS),
            round(self._bound(stop) / self.rate, TIME_DECIMALS),
            self.classes[c],
            float(best),
            emitted_at,
        )

    def _bound(self, row):
        index = row - self._row0
        if index < len(self._bounds):
            return self._bounds[index]
        return self._settled

    def _drop_old_rows(self):
        opened = [s[0] for s in self._open if s is not None]
        keep = min([self._decided - self.margin, *opened])
        drop = max(keep - self._row0, 0)
        if drop:
            del self._rows[:drop]
            del self._bounds[:drop]
            self._row0 += drop


def stream_events(detector, chunks, **kwargs):
    """Generator of settled events over an iterable of audio chunks.

    Arguments
    ---------
    detector : SoundEventDetector
        A loaded detector.
    chunks : iterable
        Audio chunks (``[samples]`` or ``[samples, channels]``).
    **kwargs
        ``hop``, ``look_ahead``, ``sample_rate`` of :class:`EventStream`.

    Yields
    ------
    StreamEvent
        Each event once it is final.
    """
    stream = EventStream(detector, **kwargs)
    for chunk in chunks:
        yield from stream.push(chunk)
    yield from stream.finish()


def pcm_chunks(stream, samples, channels=1, pcm_format="s16le"):
    """Read raw little-endian PCM as float chunks of ``samples`` frames.

    Arguments
    ---------
    stream : binary file object
        E.g. ``sys.stdin.buffer``.
    samples : int
        Sample frames per chunk (the last one may be shorter).
    channels : int
        Interleaved channels.
    pcm_format : str
        ``"s16le"`` (scaled to [-1, 1)) or ``"f32le"``.

    Yields
    ------
    numpy.ndarray
        ``[samples, channels]`` float32.

    Example
    -------
    >>> import io
    >>> raw = (np.array([0, 16384, -32768, 8192], "<i2")).tobytes()
    >>> [c[:, 0].tolist() for c in pcm_chunks(io.BytesIO(raw), 3)]
    [[0.0, 0.5, -1.0], [0.25]]
    """
    dtype = np.dtype("<i2" if pcm_format == "s16le" else "<f4")
    frame_bytes = dtype.itemsize * channels
    pending = b""
    while True:
        data = stream.read(samples * frame_bytes - len(pending))
        if not data:
            break
        pending += data
        if len(pending) < samples * frame_bytes:
            continue
        yield _pcm_array(pending, dtype, channels)
        pending = b""
    usable = len(pending) - len(pending) % frame_bytes
    if usable:
        yield _pcm_array(pending[:usable], dtype, channels)


def _pcm_array(data, dtype, channels):
    values = np.frombuffer(data, dtype=dtype).reshape(-1, channels)
    values = values.astype(np.float32)
    if dtype.kind == "i":
        values /= 32768.0
    return values


def file_chunks(detector, path, samples, realtime=False):
    """A file's waveform in chunks, paced at real time if asked.

    Arguments
    ---------
    detector : SoundEventDetector
        Reads the file at its sample rate.
    path : str or pathlib.Path
        Audio file.
    samples : int
        Samples per chunk.
    realtime : bool
        Yield each chunk when its audio would have been played.

    Yields
    ------
    torch.Tensor
        Chunks of the mono waveform.
    """
    wav = detector.load_audio(path)
    import time

    start = time.perf_counter()
    for first in range(0, len(wav), samples):
        if realtime:
            # A chunk of live audio exists once its last sample is played.
            end = min(first + samples, len(wav))
            due = start + end / detector.sample_rate
            time.sleep(max(due - time.perf_counter(), 0.0))
        yield wav[first : first + samples]


def mono_chunk(chunk):
    """Return a stream chunk as a finite mono float32 CPU tensor.

    Arguments
    ---------
    chunk : array-like
        ``[samples]`` or ``[samples, channels]`` (channels are averaged).

    Returns
    -------
    torch.Tensor
        ``[samples]``.

    Example
    -------
    >>> mono_chunk([[1.0, 3.0], [0.0, 2.0]]).tolist()
    [2.0, 1.0]
    """
    wav = torch.as_tensor(chunk, dtype=torch.float32).detach().cpu()
    if wav.dim() == 2:
        wav = wav.mean(dim=1)
    if wav.dim() != 1:
        raise ValueError(
            "a chunk must be [samples] or [samples, channels], got "
            f"shape {tuple(wav.shape)}"
        )
    if not torch.isfinite(wav).all():
        raise ValueError("the chunk holds NaN or inf samples")
    return wav
