"""The DCASE Task 4 CNN mel front end (linear mel, then log and min-max).

The front end is split in two steps because mixup is applied to the linear
magnitude mel, before the log: ``mel(wav)`` gives the linear mel and
``normalize(mel)`` the network input. ``forward(wav)`` chains both.

The settings are those of the DCASE 2023 Task 4 baseline: 16 kHz audio, a
2048-point symmetric Hamming window, hop 256, 128 HTK mel bands over
0-8 kHz, magnitude (power 1) mel, dB with ``amin=1e-5`` clamped to
[-50, 80], then per-clip min-max scaling to [-1, 1]. A 10 s clip gives 626
frames.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import torch
from torch import nn
from torchaudio.transforms import MelSpectrogram


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
    ):
        super().__init__()
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
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        # The STFT and the dB conversion lose too much precision in half
        # precision, so the front end stays in fp32 under autocast.
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self.melspec(wav.float())

    def normalize(self, mel):
        """Log compression, clamp and per-clip min-max scaling to [-1, 1].

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
        """
        with torch.autocast(device_type=mel.device.type, enabled=False):
            x = 20.0 * torch.log10(torch.clamp(mel.float(), min=self.amin))
            x = torch.clamp(x, min=self.db_min, max=self.db_max)
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
