"""The causal CRNN's parts and its stateful streaming.

``CRNN(causal=True)`` (``causal: True`` in the CRNN recipes) builds:

* :func:`make_cnn_causal`: the CNN with each convolution's time padding moved
  to the past (``k_t - 1`` zero frames before, none after), so that a
  convolution output reads no later frame than its own. The average
  pooling over time (2 frames, twice) joins frames ``2j`` and ``2j + 1``
  into output frame ``j``: the 4 mel frames of a 64 ms output frame, no
  later one. The convolutions look 0 frames ahead;
* a unidirectional GRU (:class:`~speechbrain_sed_condmix.lobes.rnn.
  UnidirectionalGRU`) with ``2 * rnn_hidden`` cells, so the frame
  embeddings keep the BiGRU's width;
* the same heads: the strong head is per frame; offline, the attention
  pooling of the weak head runs over the whole clip as before, and in a
  stream over the frames seen so far (:meth:`CausalCRNNStreamer.weak`);
* with :func:`mel_scaling`, a front end whose dB values are scaled with
  fixed bounds instead of the clip's minimum and maximum (which would
  read the whole clip).

The look-ahead of the whole model is that of the front end: the STFT is
centred (``center=True``), so mel frame ``t`` reads ``n_fft / 2`` samples
after its centre ``t * hop``. An output frame ``j`` covers the samples
``[1024 j, 1024 (j + 1))`` (4 mel hops of 256) and its last mel frame,
centred at ``1024 j + 768``, reads up to ``1024 (j + 1) + 768``: with the
DESED settings, 48 ms of audio after the end of the output frame
(:func:`look_ahead_samples`).

:class:`CausalCRNNStreamer` runs such a model on audio that arrives in
pieces: it keeps the last ``k_t - 1`` input frames of every convolution,
the frames that wait for their pooling partner, the GRU's hidden state and
the running sums of the weak head. :class:`StreamingMel` keeps the STFT's
audio buffer and its reflected start and end. Together they compute the
frames that one offline pass over the whole audio computes, to float
rounding.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_sed_condmix.lobes.features import complex_magnitude


def mel_scaling(causal):
    """The ``CNNMelFrontEnd`` scaling a model needs: fixed when causal.

    Arguments
    ---------
    causal : bool
        Whether the model is causal.

    Returns
    -------
    str
        ``"fixed"`` (scaled with the dB clamp bounds) or ``"clip"``.

    Example
    -------
    >>> mel_scaling(True), mel_scaling(False)
    ('fixed', 'clip')
    """
    return "fixed" if causal else "clip"


def _pair(value):
    """Return ``value`` as a (time, freq) pair of ints."""
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def make_cnn_causal(cnn):
    """Move the time padding of a CRNN CNN's convolutions to the past.

    Each convolution keeps its frequency padding; its time padding is
    replaced by ``k_t - 1`` zero frames before the input (an
    ``nn.ZeroPad2d`` child ``pad{i}`` before ``conv{i}``, without
    parameters, so the state dict keys stay those of the CNN). With odd
    time kernels and ``(k_t - 1) / 2`` frames of time padding, as the
    CRNN's, the output sizes are unchanged (``cnn.output_size`` holds).

    Arguments
    ---------
    cnn : speechbrain_sed_condmix.lobes.crnn.CNN
        The CNN, changed in place.

    Returns
    -------
    speechbrain_sed_condmix.lobes.crnn.CNN
        ``cnn``.

    Raises
    ------
    ValueError
        For a time stride other than 1, or time padding other than
        ``(k_t - 1) / 2``.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.crnn import CNN
    >>> cnn = make_cnn_causal(CNN(n_filters=[4, 8], pooling=[(2, 2), (1, 2)]))
    >>> x = torch.randn(1, 1, 16, 8)
    >>> y = cnn.eval()(x)
    >>> y.shape, cnn.output_size(16, 8)
    (torch.Size([1, 8, 8, 2]), (8, 2))
    >>> x2 = x.clone()
    >>> x2[:, :, 10:] = 5.0  # change input frames 10..15
    >>> torch.equal(cnn(x2)[:, :, :5], y[:, :, :5])  # outputs 0..4 keep
    True
    """
    layers = nn.Sequential()
    for name, layer in cnn.cnn.named_children():
        if isinstance(layer, nn.Conv2d):
            k_t = _pair(layer.kernel_size)[0]
            p_t, p_f = _pair(layer.padding)
            if _pair(layer.stride)[0] != 1 or 2 * p_t != k_t - 1:
                raise ValueError(
                    f"a causal CNN needs time stride 1 and time padding "
                    f"(k_t - 1) / 2; {name} has stride {layer.stride}, "
                    f"kernel {layer.kernel_size}, padding {layer.padding}"
                )
            layer.padding = (0, p_f)
            layers.add_module(
                "pad" + name[len("conv") :], nn.ZeroPad2d((0, 0, k_t - 1, 0))
            )
        layers.add_module(name, layer)
    cnn.cnn = layers
    return cnn


def look_ahead_samples(n_fft, hop_length, pooling):
    """Samples of audio an output frame reads after its own end.

    Arguments
    ---------
    n_fft : int
        STFT size of the centred front end (it reads ``n_fft // 2``
        samples after a mel frame's centre).
    hop_length : int
        Mel hop in samples.
    pooling : int
        Mel frames per output frame (the CNN's time pooling).

    Returns
    -------
    int
        ``n_fft // 2 - hop_length``: the last mel frame of an output frame
        is centred one hop before the output frame's end.

    Example
    -------
    >>> look_ahead_samples(2048, 256, 4)  # 48 ms at 16 kHz
    768
    """
    del pooling  # the last mel frame ends the output frame at any pooling
    return n_fft // 2 - hop_length


class StreamingMel:
    """A ``CNNMelFrontEnd``'s normalised frames, from audio in pieces.

    The offline front end pads the audio with ``n_fft // 2`` reflected
    samples at both ends (``center=True``). The stream reflects the start
    once ``n_fft // 2 + 1`` samples have arrived, emits each frame when its
    ``n_fft`` samples are there, and reflects the end in :meth:`finish`.
    Audio shorter than ``n_fft // 2 + 1`` samples is zero-padded to that
    length, as :func:`offline_mel` does. Needs ``scaling="fixed"``.

    Arguments
    ---------
    frontend : CNNMelFrontEnd
        The front end (``scaling="fixed"``).

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
    >>> fe = CNNMelFrontEnd(scaling="fixed")
    >>> wav = torch.randn(5000)
    >>> mel = StreamingMel(fe)
    >>> parts = [mel.push(wav[:1500]), mel.push(wav[1500:]), mel.finish()]
    >>> streamed = torch.cat(parts, dim=-1)
    >>> streamed.shape
    torch.Size([1, 128, 20])
    >>> torch.allclose(streamed, offline_mel(fe, wav), atol=1e-5)
    True
    """

    def __init__(self, frontend):
        if getattr(frontend, "scaling", None) != "fixed":
            raise ValueError(
                "streaming with carried state needs a front end scaled "
                "with fixed bounds (CNNMelFrontEnd scaling='fixed'): the "
                "per-clip min-max scaling reads the whole clip"
            )
        self.frontend = frontend
        spec = frontend.melspec.spectrogram
        self.n_fft = spec.n_fft
        self.hop = spec.hop_length
        self.half = spec.n_fft // 2
        self._padded = torch.zeros(0)  # padded signal from _first
        self._first = 0  # padded index of self._padded[0]
        self._head = torch.zeros(0)  # audio before the start reflection
        self._tail = torch.zeros(0)  # the last half + 1 samples
        self._started = False
        self._received = 0
        self._next = 0  # next frame

    def _frames(self, count):
        """Normalised frames ``self._next .. self._next + count - 1``."""
        spec = self.frontend.melspec.spectrogram
        begin = self._next * self.hop - self._first
        piece = self._padded[
            begin : begin + (count - 1) * self.hop + self.n_fft
        ]
        stft = torch.stft(
            piece.unsqueeze(0),
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            window=spec.window,
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        mel = self.frontend.melspec.mel_scale(complex_magnitude(stft))
        self._next += count
        keep = self._next * self.hop - self._first
        self._padded = self._padded[keep:]
        self._first += keep
        return self.frontend.normalize(mel)

    def _ready(self):
        available = self._first + len(self._padded)
        count = (available - self.n_fft) // self.hop + 1 - self._next
        if count <= 0:
            return torch.zeros(1, self.frontend.n_mels, 0)
        return self._frames(count)

    def push(self, wav):
        """Add audio; return the frames it completes.

        Arguments
        ---------
        wav : torch.Tensor
            ``[samples]``.

        Returns
        -------
        torch.Tensor
            ``[1, n_mels, new frames]`` (possibly 0 frames).
        """
        wav = wav.float()
        self._received += len(wav)
        self._tail = torch.cat([self._tail, wav])[-(self.half + 1) :]
        if not self._started:
            self._head = torch.cat([self._head, wav])
            if len(self._head) <= self.half:
                return torch.zeros(1, self.frontend.n_mels, 0)
            start = self._head[1 : self.half + 1].flip(0)
            self._padded = torch.cat([start, self._head])
            self._head = torch.zeros(0)
            self._started = True
        else:
            self._padded = torch.cat([self._padded, wav])
        return self._ready()

    def finish(self):
        """Reflect the end; return the last frames.

        Returns
        -------
        torch.Tensor
            ``[1, n_mels, frames]``: the stream then has given
            ``1 + samples // hop`` frames, as the offline front end.
        """
        out = torch.zeros(1, self.frontend.n_mels, 0)
        if self._received == 0:
            return out
        if not self._started:  # too short for the reflection: zeros
            short = self.half + 1 - len(self._head)
            out = self.push(torch.zeros(short))
        # padded[half + n + i] = x[n - 2 - i], i < half
        end = self._tail[:-1].flip(0)[: self.half]
        self._padded = torch.cat([self._padded, end])
        count = 1 + self._received // self.hop - self._next
        if count > 0:
            out = torch.cat([out, self._frames(count)], dim=-1)
        return out


def offline_mel(frontend, wav):
    """The front end's normalised frames of a whole waveform, one pass.

    Audio shorter than ``n_fft // 2 + 1`` samples is zero-padded to that
    length (the reflection needs it).

    Arguments
    ---------
    frontend : CNNMelFrontEnd
        The front end.
    wav : torch.Tensor
        ``[samples]``.

    Returns
    -------
    torch.Tensor
        ``[1, n_mels, 1 + samples // hop]``.

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd
    >>> offline_mel(CNNMelFrontEnd(), torch.randn(300)).shape
    torch.Size([1, 128, 5])
    """
    half = frontend.melspec.spectrogram.n_fft // 2
    if len(wav) <= half:
        wav = F.pad(wav, (0, half + 1 - len(wav)))
    return frontend.normalize(frontend.mel(wav.unsqueeze(0)))


class CausalCRNNStreamer:
    """Run a causal CRNN frame by frame with its state carried over.

    Arguments
    ---------
    model : CRNN
        A ``CRNN(causal=True)`` in eval mode (or its copy from
        :func:`~speechbrain_sed_condmix.lobes.fusion.optimize_for_inference`).

    Example
    -------
    >>> from speechbrain_sed_condmix.lobes.crnn import CRNN
    >>> model = CRNN(n_filters=[4, 8], pooling=[(2, 4), (2, 4)],
    ...              rnn_hidden=6, n_freq=16, causal=True).eval()
    >>> x = torch.randn(1, 16, 41)
    >>> streamer = CausalCRNNStreamer(model)
    >>> with torch.no_grad():
    ...     parts = [streamer.push(x[..., a:b])
    ...              for a, b in ((0, 3), (3, 4), (4, 30), (30, 41))]
    ...     offline = model(x)
    >>> [p.shape[-1] for p in parts]  # output frames (4 mel frames each)
    [0, 1, 6, 3]
    >>> torch.allclose(torch.cat(parts, -1), offline.strong, atol=1e-6)
    True
    >>> torch.allclose(streamer.weak(), offline.weak, atol=1e-6)
    True
    """

    def __init__(self, model):
        if not getattr(model, "causal", False):
            raise ValueError("CausalCRNNStreamer needs a CRNN(causal=True)")
        self.model = model
        self.layers = list(model.cnn.cnn)
        self._plan = _cnn_plan(self.layers)
        self._kept = {}  # layer index -> frames kept for the next push
        self._hidden = None
        self._weighted = None  # sum_t strong_tc a_tc
        self._attention = None  # sum_t a_tc
        self._strong_sum = None
        self._frames = 0

    def _cnn(self, x):
        """New input frames [B, C, T, F] -> new CNN output frames."""
        for index, kind, layer, k_t in self._plan:
            if kind == "pad":
                kept = self._kept.get(index)
                if kept is None:
                    kept = x.new_zeros(x.shape[0], x.shape[1], k_t, x.shape[3])
                x = torch.cat([kept, x], dim=2)
                self._kept[index] = x[:, :, x.shape[2] - k_t :]
            elif kind == "pool":
                kept = self._kept.get(index)
                if kept is not None and kept.shape[2]:
                    x = torch.cat([kept, x], dim=2)
                usable = x.shape[2] // k_t * k_t
                self._kept[index] = x[:, :, usable:]
                if usable == 0:
                    return None
                x = layer(x[:, :, :usable])
            else:
                x = layer(x)
        return x

    def push(self, x):
        """Strong scores of the output frames that new input completes.

        Arguments
        ---------
        x : torch.Tensor
            New normalised mel frames, [batch, n_mels, frames].

        Returns
        -------
        torch.Tensor
            ``[batch, classes, new output frames]``.
        """
        model = self.model
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], model.n_class, 0)
        bs_in = x.shape[0]
        x = self._cnn(x.unsqueeze(1).transpose(2, 3))
        if x is None:
            return torch.zeros(bs_in, model.n_class, 0)
        bs, chan, frames, freq = x.shape
        x = x.permute(0, 2, 1, 3).reshape(bs, frames, chan * freq)
        emb, self._hidden = model.rnn.rnn(x, self._hidden)
        strong = torch.sigmoid(model.dense(emb))  # [B, T, C]
        if model.attention:
            att = torch.softmax(model.dense_softmax(emb), dim=-1)
            att = torch.clamp(att, min=1e-7, max=1.0)
            self._weighted = _add(self._weighted, (strong * att).sum(1))
            self._attention = _add(self._attention, att.sum(1))
        self._strong_sum = _add(self._strong_sum, strong.sum(1))
        self._frames += frames
        return strong.transpose(1, 2)

    def weak(self):
        """Clip scores of the frames seen so far, [batch, classes].

        Returns
        -------
        torch.Tensor or None
            Attention-pooled (or mean) strong scores; None before the
            first output frame.
        """
        if self._frames == 0:
            return None
        if self.model.attention:
            return self._weighted / self._attention
        return self._strong_sum / self._frames


def _cnn_plan(layers):
    """The CNN's steps for a stream: ``(index, kind, layer, frames)``.

    ``kind`` is ``"pad"`` (the past frames a convolution reads, ``frames``
    of them), ``"pool"`` (time pooling of ``frames`` frames) or
    ``"layer"``. Identities, and dropout in eval mode, are left out: each
    module call costs a few microseconds, which count at a few frames per
    chunk.
    """
    plan = []
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.Identity):
            continue
        if isinstance(layer, nn.Dropout) and not layer.training:
            continue
        if isinstance(layer, nn.ZeroPad2d):
            plan.append((index, "pad", layer, layer.padding[2]))
        elif isinstance(layer, nn.AvgPool2d):
            plan.append((index, "pool", layer, _pair(layer.kernel_size)[0]))
        else:
            plan.append((index, "layer", layer, 0))
    return plan


def _add(total, value):
    return value if total is None else total + value
