"""Tests of the CNN mel front end against an independent numpy computation.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import numpy as np
import pytest
import torch

from speechbrain_sed_condmix.lobes.features import CNNMelFrontEnd

SR, N_FFT, HOP, N_MELS, F_MAX = 16000, 2048, 256, 128, 8000.0


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def _htk_filterbank(n_freqs, n_mels, sr, f_min, f_max):
    """Triangular filters on the HTK mel scale, [n_freqs, n_mels], no norm."""
    freqs = np.linspace(0.0, sr / 2.0, n_freqs)
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    )
    fb = np.zeros((n_freqs, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    return fb


def _numpy_mel(wav):
    """Magnitude mel of a 1-D signal with numpy only: [n_mels, frames]."""
    n = np.arange(N_FFT)
    window = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / (N_FFT - 1))
    padded = np.pad(wav.astype(np.float64), N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    frames = np.stack(
        [padded[i * HOP : i * HOP + N_FFT] for i in range(n_frames)]
    )
    mag = np.abs(np.fft.rfft(frames * window, axis=-1))  # [frames, freqs]
    fb = _htk_filterbank(N_FFT // 2 + 1, N_MELS, SR, 0.0, F_MAX)
    return (mag @ fb).T


def _numpy_normalize(mel):
    x = 20.0 * np.log10(np.maximum(mel, 1e-5))
    x = np.clip(x, -50.0, 80.0)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    return (x - lo) / (hi - lo + 1e-8) * 2.0 - 1.0


@pytest.fixture(scope="module")
def front_end():
    torch.set_num_threads(1)
    return CNNMelFrontEnd()


def test_symmetric_hamming_window(front_end):
    # The symmetric window starts and ends at 0.08 (a periodic one does not).
    w = front_end.melspec.spectrogram.window.double().numpy()
    assert w.shape == (N_FFT,)
    np.testing.assert_allclose(w[[0, -1]], [0.08, 0.08], atol=1e-6)
    np.testing.assert_allclose(w, w[::-1], atol=1e-6)


def test_mel_matches_numpy(front_end):
    rng = np.random.default_rng(0)
    t = np.arange(12000) / SR
    wav = np.stack(
        [
            0.3 * rng.standard_normal(t.size),
            np.sin(2 * np.pi * 440.0 * t) + 0.01 * rng.standard_normal(t.size),
        ]
    )
    out = front_end.mel(torch.from_numpy(wav).float()).double().numpy()
    ref = np.stack([_numpy_mel(w) for w in wav.astype(np.float32)])
    assert out.shape == ref.shape == (2, N_MELS, 1 + 12000 // HOP)
    # fp32 STFT vs fp64: relative agreement, with a floor for tiny bins
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_ten_seconds_gives_626_frames(front_end):
    out = front_end(torch.zeros(1, 160000))
    assert out.shape == (1, 128, 626)
    assert out.dtype == torch.float32


def test_normalize_matches_numpy(front_end):
    rng = np.random.default_rng(1)
    # Cover the amin floor, the -50 dB clamp and the +80 dB clamp.
    mel = 10.0 ** rng.uniform(-7.0, 5.0, size=(3, 8, 20))
    mel[2] *= 1e-3  # a different range per clip
    out = front_end.normalize(torch.from_numpy(mel).float()).numpy()
    ref = _numpy_normalize(mel)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.allclose(out.min(axis=(1, 2)), -1.0, atol=1e-6)
    assert np.allclose(out.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_forward_is_mel_then_normalize(front_end):
    wav = torch.randn(2, 4000)
    expected = front_end.normalize(front_end.mel(wav))
    assert torch.equal(front_end(wav), expected)
    assert float(expected.min()) == -1.0
    assert float(expected.max()) == pytest.approx(1.0, abs=1e-6)


def test_fp32_under_autocast(front_end):
    wav = torch.randn(1, 4000, dtype=torch.bfloat16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mel = front_end.mel(wav)
        out = front_end.normalize(mel)
    assert mel.dtype == torch.float32
    assert out.dtype == torch.float32
    ref = front_end.mel(wav.float())
    torch.testing.assert_close(mel, ref)
