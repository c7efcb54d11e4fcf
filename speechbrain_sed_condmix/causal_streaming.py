"""Streaming with carried state, for causal models (``causal: True``).

A causal CRNN (:mod:`speechbrain_sed_condmix.lobes.causal`) needs no
window of future audio: :class:`CausalEventStream` keeps the STFT's audio
buffer, each convolution's last input frames, the frames waiting for their
pooling partner and the GRU's hidden state, and computes each output frame
once, when its audio has arrived. So:

* each chunk costs only its own frames (no window is recomputed);
* there is no start-up: the first 64 ms frame is scored once 112 ms of
  audio have arrived (the frame and the STFT's 48 ms after it);
* the frame scores are those of offline detection of the same audio with
  the same model, one pass over the whole recording
  (:func:`causal_frame_scores`, which ``SoundEventDetector`` uses for a
  causal model), to float rounding; the events too, with the same
  post-processing.

Latency (:meth:`CausalEventStream.latency`): an output frame is scored
``look_ahead`` (48 ms with the DESED front end: half the 2048-point STFT,
less one 16 ms mel hop) after its end. The post-processing is the model's
median filter, computed as frames arrive: a filtered frame waits for half
the filter length of later frames, so an event is emitted
``look_ahead + (median half-length + 1) frames`` after its offset: 304 ms
with the recipes' 7-frame filter, 176 ms with 3 frames, 112 ms with 1
frame (``median_filter=`` of :meth:`SoundEventDetector.stream`, or
``sed-detect --stream --median-filter``). A chunk's events come when the
chunk has arrived, so chunks add up to their own length.

The silence rule of windowed detection (silent windows give no events) is
not applied: a causal model scores every frame, offline and streamed.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import numpy as np
import scipy.ndimage
import torch

from speechbrain_sed_condmix.lobes.causal import (
    CausalCRNNStreamer,
    StreamingMel,
    look_ahead_samples,
    offline_mel,
)
from speechbrain_sed_condmix.streaming import EventStream, mono_chunk

#: Recordings up to this long run in one offline pass; longer ones run
#: through the carried state in pieces of STATE_PIECE_SECONDS (the same
#: scores, to float rounding, with bounded memory).
ONE_PASS_SECONDS = 300.0
STATE_PIECE_SECONDS = 60.0


def is_causal(detector):
    """Whether a detector's model is causal (its ``causal`` attribute).

    Arguments
    ---------
    detector : SoundEventDetector
        A loaded detector.

    Returns
    -------
    bool
        True for a ``CRNN(causal=True)``.
    """
    return bool(getattr(detector.mods.model, "causal", False))


def causal_frame_scores(detector, wav):
    """Frame scores of a causal model over a whole waveform.

    Arguments
    ---------
    detector : SoundEventDetector
        A detector whose model is causal.
    wav : torch.Tensor
        ``[samples]`` at the model's rate.

    Returns
    -------
    bounds : numpy.ndarray
        Sample bounds of the frames, ``[frames + 1]`` (the last one is at
        most the waveform's length).
    scores : numpy.ndarray
        ``[frames, classes]``.
    """
    frontend = detector.mods.frontend
    wav = wav.float().cpu()
    with torch.no_grad():
        if len(wav) <= ONE_PASS_SECONDS * detector.sample_rate:
            mel = offline_mel(frontend, wav).to(detector.device)
            strong = detector.model(mel).strong
        else:
            mels, net = (
                StreamingMel(frontend),
                CausalCRNNStreamer(detector.model),
            )
            piece = int(STATE_PIECE_SECONDS * detector.sample_rate)
            parts = [
                net.push(mels.push(wav[i : i + piece]).to(detector.device))
                for i in range(0, len(wav), piece)
            ]
            parts.append(net.push(mels.finish().to(detector.device)))
            strong = torch.cat(parts, dim=-1)
    scores = strong[0].float().transpose(0, 1).cpu().numpy()
    frame = detector.frame_samples
    bounds = np.arange(len(scores) + 1) * frame
    bounds[-1] = min(bounds[-1], max(len(wav), bounds[-2] + 1))
    return bounds, scores


class CausalEventStream(EventStream):
    """Incremental detection with a causal model's carried state.

    Usually reached through ``SoundEventDetector.stream(chunks)`` for a
    causal model. The frames-to-events step is that of
    :class:`~speechbrain_sed_condmix.streaming.EventStream`.

    Arguments
    ---------
    detector : SoundEventDetector
        A loaded detector whose model is causal.
    sample_rate : int, optional
        Rate of the chunks; must be the model's.
    median_filter : int, optional
        Median filter length (frames) for every class instead of the
        model's: shorter answers sooner (see :meth:`latency`). The
        offline events equal to the stream's are then those with the same
        post-processing.

    Example
    -------
    >>> stream = CausalEventStream(detector)  # doctest: +SKIP
    >>> for chunk in microphone_chunks():  # doctest: +SKIP
    ...     for event in stream.push(chunk):
    ...         print(event)
    >>> events = stream.finish()  # doctest: +SKIP
    """

    def __init__(self, detector, sample_rate=None, median_filter=None):
        if not is_causal(detector):
            raise ValueError(
                "CausalEventStream needs a causal model (causal: True in "
                "the recipe); this one streams with windows (EventStream)"
            )
        self.detector = detector
        rate = detector.sample_rate
        if sample_rate is not None and int(sample_rate) != rate:
            raise ValueError(
                f"the stream is at {sample_rate} Hz but the model takes "
                f"{rate} Hz: resample it first (e.g. ffmpeg -ar {rate})"
            )
        self.rate = rate
        self.frame = detector.frame_samples
        frontend = detector.mods.frontend
        self._mel = StreamingMel(frontend)
        self._net = CausalCRNNStreamer(detector.model)
        spec = frontend.melspec.spectrogram
        pooling = self.frame // spec.hop_length
        self.look_ahead = (
            look_ahead_samples(spec.n_fft, spec.hop_length, pooling) / rate
        )
        post = detector.postprocessing
        self.classes = list(detector.classes)
        if median_filter is None:
            self.lengths = dict(post.median_filter)
        else:
            if int(median_filter) < 1:
                raise ValueError(
                    f"median_filter must be at least 1 frame, got "
                    f"{median_filter}"
                )
            self.lengths = {c: int(median_filter) for c in self.classes}
        self.margin = max(self.lengths.values()) // 2
        threshold = post.threshold
        self.thresholds = [
            float(threshold[c] if isinstance(threshold, dict) else threshold)
            for c in self.classes
        ]
        self._received = 0
        self._settled = 0
        self._bounds = []
        self._rows = []
        self._row0 = 0
        self._decided = 0
        self._open = [None] * len(self.classes)
        self._finished = False

    def latency(self):
        """Delay, in seconds, from an event's offset to its emission.

        Returns
        -------
        float
            ``look_ahead + (margin + 1) * frame``, plus the rest of the
            chunk in which that audio arrives.
        """
        return self.look_ahead + (self.margin + 1) * self.frame / self.rate

    def _median_filtered(self, bounds, values):
        """The median filter of the post-processing, on the array itself.

        The same scipy call per filter length as
        :func:`~speechbrain_sed_condmix.postprocessing.median_filter`
        (``mode="reflect"``), without a DataFrame per decision: a frame at a
        time, the DataFrame took most of a stream's time.
        """
        out = values.astype(np.float64)
        for length in sorted(set(self.lengths.values())):
            if length == 1:
                continue
            columns = [
                i
                for i, c in enumerate(self.classes)
                if self.lengths[c] == length
            ]
            out[:, columns] = scipy.ndimage.median_filter(
                out[:, columns], size=(length, 1), mode="reflect"
            )
        return out

    def _add_rows(self, mel):
        device = self.detector.device
        # inference_mode: less bookkeeping per operation than no_grad, which
        # counts for the few frames of a chunk (about 17 % of a stream).
        with torch.inference_mode():
            strong = self._net.push(mel.to(device))
        rows = strong[0].float().transpose(0, 1).cpu().numpy()
        first = self._row0 + len(self._rows)
        self._bounds += [(first + i) * self.frame for i in range(len(rows))]
        self._rows += list(rows)
        self._settled = (first + len(rows)) * self.frame

    def push(self, chunk):
        """Add audio; return the events it settles.

        Arguments
        ---------
        chunk : numpy.ndarray or torch.Tensor
            ``[samples]`` or ``[samples, channels]`` (averaged).

        Returns
        -------
        list of StreamEvent
            Events settled by this chunk (often none).
        """
        if self._finished:
            raise RuntimeError("the stream is finished")
        wav = mono_chunk(chunk)
        self._received += len(wav)
        self._add_rows(self._mel.push(wav))
        return self._decide(final=False)

    def finish(self):
        """End the stream: its last frames, then close open events.

        Returns
        -------
        list of StreamEvent
            The remaining events.
        """
        if self._finished:
            return []
        self._finished = True
        if self._received == 0:
            return []
        self._add_rows(self._mel.finish())
        if not self._bounds:  # shorter than one output frame
            return []
        last = self._bounds[-1] if self._bounds else 0
        self._settled = min(self._settled, max(self._received, last + 1))
        self._bounds.append(self._settled)
        return self._decide(final=True)

    def weak(self):
        """Clip scores of the audio so far (the weak head, causal).

        Returns
        -------
        dict or None
            ``{class: score}``; None before the first frame.
        """
        weak = self._net.weak()
        if weak is None:
            return None
        return dict(zip(self.classes, weak[0].float().cpu().tolist()))
