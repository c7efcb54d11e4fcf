"""Mel front ends: the DCASE Task 4 CNN one and the ATST-Frame one.

Each front end is split in two steps because mixup is applied to the
linear mel, before the log: ``mel(wav)`` gives the linear mel and
``normalize(mel)`` the network input. ``forward(wav)`` chains both.

The CNN settings are those of the DCASE 2023 Task 4 baseline: 16 kHz audio,
a 2048-point symmetric Hamming window, hop 256, 128 HTK mel bands over
0-8 kHz, magnitude (power 1) mel, dB with ``amin=1e-5`` clamped to
[-50, 80], then per-clip min-max scaling to [-1, 1]. A 10 s clip gives 626
frames.

The ATST settings are those of ATST-Frame / ATST-SED: 16 kHz audio, a
1024-point Hann window, hop 160, 64 HTK mel bands over 60-7800 Hz, power
mel, dB with an 80 dB dynamic range, clamped to [-50, 80], then a fixed
min-max map. A 10 s clip gives 1001 frames. :class:`DualMelFrontEnd` runs
both for the CNN + ATST model.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import torch
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn
from torchaudio.transforms import MelSpectrogram

#: The STFT and the dB conversion lose too much precision in half precision,
#: so the front ends' ``mel`` steps stay in fp32 under autocast: SpeechBrain's
#: decorator switches autocast off and casts their inputs to fp32.
_fp32_under_autocast = fwd_default_precision(cast_inputs=torch.float32)


def _waveform_batch(wav):
    """``wav`` as a fp32 [batch, samples] tensor ([samples] gains a batch).

    The cast also covers calls outside autocast (e.g. fp64 input), where the
    decorator casts nothing.
    """
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    return wav.float()


def complex_magnitude(spec):
    """``|spec|`` of a complex tensor, as ``sqrt(re**2 + im**2)``.

    ``torch.abs`` on complex numbers computes an overflow-safe ``hypot``,
    which takes more than a third of the CNN front end on CPU; the plain
    formula is about twice as fast and agrees to one float ulp. STFT values
    of audio are far from float32's overflow (a full-scale 2048-point frame
    gives at most ``2048**2`` once squared); magnitudes under 1e-19, whose
    squares are subnormal, lose relative precision, far below the front
    end's 1e-5 floor.

    Arguments
    ---------
    spec : torch.Tensor
        Complex tensor (e.g. an STFT).

    Returns
    -------
    torch.Tensor
        Real magnitudes, same shape.

    Example
    -------
    >>> complex_magnitude(torch.tensor([3 + 4j, -1j]))
    tensor([5., 1.])
    """
    parts = torch.view_as_real(spec)
    out = parts[..., 0].square()
    return out.addcmul_(parts[..., 1], parts[..., 1]).sqrt_()


class CNNMelFrontEnd(nn.Module):
    """Log-mel front end of the DCASE CRNN baseline, in two steps.

    Arguments
    ---------
    sample_rate : int
        Sampling rate of the input waveform in Hz.
    n_fft : int
        FFT size.
    win_length : int
        Window length in samples (symmetric Hamming window).
    hop_length : int
        Hop between frames in samples.
    n_mels : int
        Number of mel bands.
    f_min : float
        Lowest mel filter edge in Hz.
    f_max : float
        Highest mel filter edge in Hz.
    amin : float
        Floor applied to the magnitude before the log.
    db_clamp : tuple of float
        (min, max) clamp of the dB values.
    scaling : str
        ``"clip"``: min-max scaling per clip, as the reference (each
        frame depends on the whole clip). ``"fixed"``: the clamp range
        ``db_clamp`` maps to [-1, 1], so that each frame depends on its
        own STFT frame only, as a causal model streaming live audio needs.

    Example
    -------
    >>> fe = CNNMelFrontEnd()
    >>> wav = torch.randn(2, 16000)
    >>> mel = fe.mel(wav)
    >>> mel.shape
    torch.Size([2, 128, 63])
    >>> x = fe.normalize(mel)
    >>> float(x.min()), float(x.max())
    (-1.0, 1.0)
    >>> torch.equal(fe(wav), x)
    True
    """

    def __init__(
        self,
        sample_rate=16000,
        n_fft=2048,
        win_length=2048,
        hop_length=256,
        n_mels=128,
        f_min=0.0,
        f_max=8000.0,
        amin=1e-5,
        db_clamp=(-50.0, 80.0),
        scaling="clip",
    ):
        super().__init__()
        if scaling not in ("clip", "fixed"):
            raise ValueError(
                f"scaling must be 'clip' or 'fixed', got {scaling!r}"
            )
        self.scaling = scaling
        self.amin = float(amin)
        self.db_min, self.db_max = (float(v) for v in db_clamp)
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.melspec = MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            window_fn=torch.hamming_window,
            wkwargs={"periodic": False},
            power=1.0,
            center=True,
            pad_mode="reflect",
            norm=None,
            mel_scale="htk",
        )

    @_fp32_under_autocast
    def mel(self, wav):
        """Linear magnitude mel spectrogram.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform, [batch, samples] (or [samples]).

        Returns
        -------
        torch.Tensor
            fp32 magnitude mel, [batch, n_mels, frames] with
            ``frames = 1 + samples // hop_length``.

        Example
        -------
        >>> CNNMelFrontEnd().mel(torch.zeros(1, 2560)).shape
        torch.Size([1, 128, 11])
        """
        return self._magnitude_mel(_waveform_batch(wav))

    def _magnitude_mel(self, wav):
        # torchaudio's Spectrogram(power=1) step by step, with the faster
        # magnitude (see complex_magnitude), then its mel filterbank.
        spec = self.melspec.spectrogram
        stft = torch.stft(
            wav,
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            window=spec.window,
            center=spec.center,
            pad_mode=spec.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return self.melspec.mel_scale(complex_magnitude(stft))

    def normalize(self, mel):
        """Log compression, clamp and min-max scaling to [-1, 1].

        With ``scaling="fixed"`` the min and max are those of ``db_clamp``
        instead of the clip's, e.g. -50 dB -> -1 and 80 dB -> 1.

        Arguments
        ---------
        mel : torch.Tensor
            Linear magnitude mel, [batch, n_mels, frames].

        Returns
        -------
        torch.Tensor
            ``(x - min) / (max - min + 1e-8) * 2 - 1`` of the clamped dB
            values ``x``, with min/max taken per clip over (mel, time).

        Example
        -------
        >>> fe = CNNMelFrontEnd()
        >>> fe.normalize(torch.tensor([[[1e-6, 1.0, 10.0]]]))
        tensor([[[-1.0000,  0.4286,  1.0000]]])
        >>> fixed = CNNMelFrontEnd(scaling="fixed")
        >>> fixed.normalize(torch.tensor([[[1e-6, 1.0, 1e4]]]))
        tensor([[[-1.0000, -0.2308,  1.0000]]])
        """
        with torch.autocast(device_type=mel.device.type, enabled=False):
            x = 20.0 * torch.log10(torch.clamp(mel.float(), min=self.amin))
            x = torch.clamp(x, min=self.db_min, max=self.db_max)
            if self.scaling == "fixed":
                span = self.db_max - self.db_min
                return (x - self.db_min) / span * 2.0 - 1.0
            x_min = x.amin(dim=(1, 2), keepdim=True)
            x_max = x.amax(dim=(1, 2), keepdim=True)
            return (x - x_min) / (x_max - x_min + 1e-8) * 2.0 - 1.0

    def forward(self, wav):
        """Compute the normalised log-mel network input.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform, [batch, samples].

        Returns
        -------
        torch.Tensor
            Normalised log-mel, [batch, n_mels, frames], in [-1, 1].

        Example
        -------
        >>> CNNMelFrontEnd()(torch.randn(1, 2560)).shape
        torch.Size([1, 128, 11])
        """
        return self.normalize(self.mel(wav))


class ATSTMelFrontEnd(nn.Module):
    """Mel front end of the ATST-Frame encoder, in two steps.

    ``mel(wav)`` gives the fp32 power mel (Hann window, power 2, HTK mel
    scale, no filter norm) and ``normalize(mel)`` the encoder input: dB
    (``10 * log10(max(x, 1e-10))``), a floor ``top_db`` below the maximum,
    a clamp to ``db_clamp`` and a fixed min-max map
    ``(x - lo) / (hi - lo) * 2 - 1`` with ``(lo, hi) = scale``. A 10 s clip
    at 16 kHz gives 1001 frames. Mixup is applied to the power mel, which
    is why the two steps are separate.

    The reference SED code applies ``AmplitudeToDB(top_db=80)`` to a
    (batch, mels, frames) tensor, where torchaudio takes the maximum over
    the whole batch, so one loud clip raises the floor of all the others.
    ATST-Frame was pretrained with the floor taken per clip, which is the
    default here (``per_clip_top_db=True``); ``False`` gives the batch-wide
    reference behaviour.

    Arguments
    ---------
    sample_rate : int
        Sampling rate of the input waveform in Hz.
    n_fft : int
        FFT size.
    win_length : int
        Window length in samples (periodic Hann window).
    hop_length : int
        Hop between frames in samples.
    n_mels : int
        Number of mel bands.
    f_min : float
        Lowest mel filter edge in Hz.
    f_max : float
        Highest mel filter edge in Hz.
    top_db : float or None
        Dynamic range kept below the maximum, in dB (None: no floor).
    db_clamp : tuple of float
        (min, max) clamp of the dB values.
    scale : tuple of float
        (min, max) dB values mapped to -1 and 1.
    per_clip_top_db : bool
        Take the ``top_db`` reference maximum per clip (True) or over the
        whole batch (False, as in the reference SED code).

    Example
    -------
    >>> fe = ATSTMelFrontEnd()
    >>> mel = fe.mel(torch.randn(2, 16000))
    >>> mel.shape
    torch.Size([2, 64, 101])
    >>> x = fe.normalize(mel)
    >>> bool(x.min() >= -0.546) and bool(x.max() <= 1.451)
    True
    >>> torch.equal(fe(torch.zeros(1, 160000)), fe.normalize(
    ...     fe.mel(torch.zeros(1, 160000))))
    True
    """

    def __init__(
        self,
        sample_rate=16000,
        n_fft=1024,
        win_length=1024,
        hop_length=160,
        n_mels=64,
        f_min=60.0,
        f_max=7800.0,
        top_db=80.0,
        db_clamp=(-50.0, 80.0),
        scale=(-79.6482, 50.6842),
        per_clip_top_db=True,
    ):
        super().__init__()
        self.top_db = None if top_db is None else float(top_db)
        self.db_min, self.db_max = (float(v) for v in db_clamp)
        self.scale_min, self.scale_max = (float(v) for v in scale)
        self.per_clip_top_db = bool(per_clip_top_db)
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.melspec = MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            window_fn=torch.hann_window,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm=None,
            mel_scale="htk",
        )

    @_fp32_under_autocast
    def mel(self, wav):
        """Power mel spectrogram.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform, [batch, samples] (or [samples]).

        Returns
        -------
        torch.Tensor
            fp32 power mel, [batch, n_mels, frames] with
            ``frames = 1 + samples // hop_length``.

        Example
        -------
        >>> ATSTMelFrontEnd().mel(torch.zeros(160000)).shape
        torch.Size([1, 64, 1001])
        """
        return self.melspec(_waveform_batch(wav))

    def normalize(self, mel):
        """dB, top_db floor, clamp and fixed min-max scaling.

        Arguments
        ---------
        mel : torch.Tensor
            Power mel, [batch, n_mels, frames].

        Returns
        -------
        torch.Tensor
            Encoder input of the same shape, within
            ``[(db_clamp[0] - lo) / (hi - lo) * 2 - 1,
            (db_clamp[1] - lo) / (hi - lo) * 2 - 1]``.

        Example
        -------
        >>> fe = ATSTMelFrontEnd(scale=(-50.0, 80.0))  # -50 dB -> -1
        >>> # -90, 0, 80, 90 dB: floor at 90 - 80 = 10 dB, clamp at 80 dB
        >>> fe.normalize(torch.tensor([[[1e-9, 1.0, 1e8, 1e9]]]))
        tensor([[[-0.0769, -0.0769,  1.0000,  1.0000]]])
        """
        with torch.autocast(device_type=mel.device.type, enabled=False):
            x = 10.0 * torch.log10(torch.clamp(mel.float(), min=1e-10))
            if self.top_db is not None:
                if self.per_clip_top_db:
                    peak = x.amax(dim=(-2, -1), keepdim=True)
                else:
                    peak = x.amax()
                x = torch.maximum(x, peak - self.top_db)
            x = torch.clamp(x, min=self.db_min, max=self.db_max)
            span = self.scale_max - self.scale_min
            return (x - self.scale_min) / span * 2.0 - 1.0

    def forward(self, wav):
        """Compute the normalised ATST encoder input.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform, [batch, samples].

        Returns
        -------
        torch.Tensor
            Normalised mel, [batch, n_mels, frames].

        Example
        -------
        >>> ATSTMelFrontEnd()(torch.randn(3, 1600)).shape
        torch.Size([3, 64, 11])
        """
        return self.normalize(self.mel(wav))


class DualMelFrontEnd(nn.Module):
    """Two front ends fed with the same waveform (CNN and ATST branches).

    Methods return lists in the order ``[cnn, atst]``, so mixup can be
    applied to both linear mels between ``mel()`` and ``normalize()``.

    Arguments
    ---------
    cnn : torch.nn.Module
        Front end of the CNN branch (e.g. :class:`CNNMelFrontEnd`).
    atst : torch.nn.Module
        Front end of the ATST branch (e.g. :class:`ATSTMelFrontEnd`).

    Example
    -------
    >>> fe = DualMelFrontEnd(CNNMelFrontEnd(), ATSTMelFrontEnd())
    >>> mels = fe.mel(torch.randn(2, 16000))
    >>> [tuple(m.shape) for m in mels]
    [(2, 128, 63), (2, 64, 101)]
    >>> [tuple(x.shape) for x in fe.normalize(mels)]
    [(2, 128, 63), (2, 64, 101)]
    """

    def __init__(self, cnn, atst):
        super().__init__()
        self.cnn = cnn
        self.atst = atst

    def mel(self, wav):
        """Linear mels of both branches.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform, [batch, samples].

        Returns
        -------
        list of torch.Tensor
            ``[cnn.mel(wav), atst.mel(wav)]``.

        Example
        -------
        >>> fe = DualMelFrontEnd(CNNMelFrontEnd(), ATSTMelFrontEnd())
        >>> len(fe.mel(torch.zeros(1, 2560)))
        2
        """
        return [self.cnn.mel(wav), self.atst.mel(wav)]

    def normalize(self, mels):
        """Normalise each branch's mel with its own front end.

        Arguments
        ---------
        mels : sequence of torch.Tensor
            ``[cnn_mel, atst_mel]`` as returned by :meth:`mel`.

        Returns
        -------
        list of torch.Tensor
            ``[cnn.normalize(cnn_mel), atst.normalize(atst_mel)]``.

        Example
        -------
        >>> fe = DualMelFrontEnd(CNNMelFrontEnd(), ATSTMelFrontEnd())
        >>> cnn_x, atst_x = fe.normalize(fe.mel(torch.randn(1, 2560)))
        >>> float(cnn_x.max())
        1.0
        """
        cnn_mel, atst_mel = mels
        return [self.cnn.normalize(cnn_mel), self.atst.normalize(atst_mel)]

    def forward(self, wav):
        """Normalised inputs of both branches.

        Arguments
        ---------
        wav : torch.Tensor
            Waveform, [batch, samples].

        Returns
        -------
        list of torch.Tensor
            ``[cnn(wav), atst(wav)]``.

        Example
        -------
        >>> fe = DualMelFrontEnd(CNNMelFrontEnd(), ATSTMelFrontEnd())
        >>> [tuple(x.shape) for x in fe(torch.randn(1, 160000))]
        [(1, 128, 626), (1, 64, 1001)]
        """
        return self.normalize(self.mel(wav))
