"""Tests of the mel front ends against independent computations.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import numpy as np
import pytest
import torch
from torchaudio.transforms import AmplitudeToDB

from speechbrain_sed_condmix.lobes.features import (
    ATSTMelFrontEnd,
    CNNMelFrontEnd,
    DualMelFrontEnd,
    complex_magnitude,
)

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


def test_mel_matches_the_torchaudio_transform(front_end):
    # the step-by-step STFT + magnitude against MelSpectrogram itself
    wav = torch.randn(3, 20000, generator=torch.Generator().manual_seed(2))
    expected = front_end.melspec(wav)
    out = front_end.mel(wav)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert front_end.mel(wav[0]).shape == (1, *expected.shape[1:])


def test_complex_magnitude_is_abs():
    gen = torch.Generator().manual_seed(3)
    spec = torch.randn(4, 300, dtype=torch.complex64, generator=gen) * 1e3
    # squares below float32's normal range (|z| < 1e-19) lose precision,
    # irrelevant under the front end's 1e-5 magnitude floor
    spec[0, :3] = torch.tensor([0, 1e-15, -2048j])
    torch.testing.assert_close(
        complex_magnitude(spec), spec.abs(), rtol=2e-7, atol=0
    )


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


# ------------------------------------------------------------- ATST front end

A_NFFT, A_HOP, A_MELS = 1024, 160, 64
A_LO, A_HI = -79.6482, 50.6842


def _numpy_power_mel(wav):
    """ATST power mel of a 1-D signal with numpy only: [64, frames]."""
    n = np.arange(A_NFFT)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / A_NFFT)  # periodic Hann
    padded = np.pad(wav.astype(np.float64), A_NFFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - A_NFFT) // A_HOP
    frames = np.stack(
        [padded[i * A_HOP : i * A_HOP + A_NFFT] for i in range(n_frames)]
    )
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    fb = _htk_filterbank(A_NFFT // 2 + 1, A_MELS, SR, 60.0, 7800.0)
    return (power @ fb).T


def _scale(db):
    return (torch.clamp(db, -50.0, 80.0) - A_LO) / (A_HI - A_LO) * 2.0 - 1.0


@pytest.fixture(scope="module")
def atst_front_end():
    return ATSTMelFrontEnd()


def test_atst_ten_seconds_gives_1001_frames(atst_front_end):
    mel = atst_front_end.mel(torch.randn(2, 160000))
    assert mel.shape == (2, 64, 1001)
    assert mel.dtype == torch.float32
    assert atst_front_end(torch.randn(2, 160000)).shape == (2, 64, 1001)


def test_atst_mel_matches_numpy(atst_front_end):
    rng = np.random.default_rng(2)
    t = np.arange(8000) / SR
    wav = np.stack(
        [
            0.3 * rng.standard_normal(t.size),
            np.sin(2 * np.pi * 1000.0 * t) + 0.01 * rng.standard_normal(t.size),
        ]
    )
    out = atst_front_end.mel(torch.from_numpy(wav).float()).double().numpy()
    ref = np.stack([_numpy_power_mel(w) for w in wav.astype(np.float32)])
    assert out.shape == ref.shape == (2, A_MELS, 1 + 8000 // A_HOP)
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-6 * ref.max())


def _loud_and_quiet(seed):
    g = torch.Generator().manual_seed(seed)
    # dB values spread over about 120 dB, the second clip 60 dB quieter
    mel = 10.0 ** (torch.rand(2, 64, 50, generator=g) * 12.0 - 5.0)
    mel[1] *= 1e-6
    return mel


def test_atst_normalize_per_clip_matches_torchaudio(atst_front_end):
    assert atst_front_end.per_clip_top_db
    mel = _loud_and_quiet(0)
    to_db = AmplitudeToDB(stype="power", top_db=80.0)
    ref = torch.stack([_scale(to_db(m.unsqueeze(0))[0]) for m in mel])
    torch.testing.assert_close(atst_front_end.normalize(mel), ref)


def test_atst_normalize_whole_batch_matches_torchaudio():
    fe = ATSTMelFrontEnd(per_clip_top_db=False)
    mel = _loud_and_quiet(1)
    # On a rank-3 batch torchaudio takes the top_db max over the batch.
    ref = _scale(AmplitudeToDB(stype="power", top_db=80.0)(mel))
    torch.testing.assert_close(fe.normalize(mel), ref)


def test_atst_top_db_modes_differ_on_quiet_clip(atst_front_end):
    mel = _loud_and_quiet(2)
    per_clip = atst_front_end.normalize(mel)
    batch = ATSTMelFrontEnd(per_clip_top_db=False).normalize(mel)
    # The loud clip holds the batch maximum: same result in both modes.
    torch.testing.assert_close(per_clip[0], batch[0])
    # The quiet one is floored at the loud clip's peak - 80 dB in batch mode.
    assert not torch.allclose(per_clip[1], batch[1])
    floor_db = 10.0 * torch.log10(mel.max()) - 80.0
    expected_floor = _scale(floor_db)
    torch.testing.assert_close(batch[1].min(), expected_floor)
    assert float(per_clip[1].min()) < float(expected_floor) - 0.1


def test_atst_normalize_range(atst_front_end):
    lo = (-50.0 - A_LO) / (A_HI - A_LO) * 2.0 - 1.0
    hi = (80.0 - A_LO) / (A_HI - A_LO) * 2.0 - 1.0
    g = torch.Generator().manual_seed(3)
    # clip 0 reaches +90 dB (clamped to 80), clip 1 peaks at 30 dB so its
    # floor lies below -50 dB and the -50 clamp is hit
    mel = torch.stack(
        [
            10.0 ** (torch.rand(64, 40, generator=g) * 18.0 - 9.0),
            10.0 ** (torch.rand(64, 40, generator=g) * 12.0 - 9.0),
        ]
    )
    mel[0, 0, 0], mel[1, 0, 0], mel[1, 0, 1] = 1e9, 1e3, 1e-12
    out = atst_front_end.normalize(mel)
    assert float(out.min()) >= lo - 1e-6 and float(out.max()) <= hi + 1e-6
    assert float(out[0].max()) == pytest.approx(hi, abs=1e-5)
    assert float(out[1].min()) == pytest.approx(lo, abs=1e-5)
    assert lo == pytest.approx(-0.5450, abs=1e-4)
    assert hi == pytest.approx(1.4499, abs=1e-4)


def test_atst_fp32_under_autocast(atst_front_end):
    wav = torch.randn(1, 4000, dtype=torch.bfloat16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mel = atst_front_end.mel(wav)
        out = atst_front_end.normalize(mel)
    assert mel.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(mel, atst_front_end.mel(wav.float()))


def test_dual_front_end(front_end, atst_front_end):
    dual = DualMelFrontEnd(front_end, atst_front_end)
    assert dual.cnn is front_end and dual.atst is atst_front_end
    wav = torch.randn(2, 16000)
    mels = dual.mel(wav)
    assert isinstance(mels, list) and len(mels) == 2
    assert torch.equal(mels[0], front_end.mel(wav))
    assert torch.equal(mels[1], atst_front_end.mel(wav))
    normed = dual.normalize(mels)
    assert torch.equal(normed[0], front_end(wav))
    assert torch.equal(normed[1], atst_front_end(wav))
    out = dual(wav)
    assert [tuple(x.shape) for x in out] == [(2, 128, 63), (2, 64, 101)]
