"""Spectral and envelope helpers of the mini-DESED sound synthesisers.

Noise shaped in the frequency domain, gains of simple spectral filters,
oscillator phases, fades and random segmentations. All take a
``numpy.random.Generator`` where they draw, so a seeded generator makes
them deterministic.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import numpy as np
from scipy import fft as sfft


def lowpass_gain(f, start=7000.0, stop=7800.0):
    """Raised-cosine roll-off: keeps the energy inside the 0-8 kHz front end."""
    gain = (f < stop).astype(float)
    band = (f > start) & (f < stop)  # only the transition band needs cos
    gain[band] = 0.5 + 0.5 * np.cos(np.pi * (f[band] - start) / (stop - start))
    return gain


def band_gain(f, low, high, order=2):
    """Butterworth-like band-pass magnitude."""
    f = np.maximum(f, 1.0)
    return 1.0 / np.sqrt(
        (1.0 + (low / f) ** (2 * order)) * (1.0 + (f / high) ** (2 * order))
    )


def peak_gain(f, centre, width):
    """Magnitude of a resonance centred at ``centre`` Hz."""
    return 1.0 / np.sqrt(1.0 + ((f - centre) / (0.5 * width)) ** 2)


def spectral_filter(x, gain_fn, sr):
    """Zero-phase filtering in the frequency domain (zero-padded)."""
    n = x.size
    n_fft = sfft.next_fast_len(n, real=True)
    spec = sfft.rfft(x, n_fft)
    spec *= gain_fn(sfft.rfftfreq(n_fft, 1.0 / sr))
    return sfft.irfft(spec, n_fft)[:n]


def filtered_noise(n, rng, sr, gain_fn):
    """Gaussian noise with magnitude response ``gain_fn``, made in one iFFT."""
    n_fft = sfft.next_fast_len(n, real=True)
    f = sfft.rfftfreq(n_fft, 1.0 / sr)
    spec = rng.standard_normal(2 * f.size).view(np.complex128)
    spec *= gain_fn(f)
    spec[0] = 0.0
    return sfft.irfft(spec, n_fft)[:n]


def unit_rms(x):
    """``x`` scaled to unit RMS (a silent signal stays silent)."""
    return x / np.sqrt(np.mean(x**2) + 1e-20)


def smooth_random(n, rng, sr, rate):
    """Zero-mean, unit-variance random curve changing about ``rate`` Hz."""
    knots = max(2, int(np.ceil(n / sr * rate)) + 2)
    values = rng.standard_normal(knots)
    # Cosine interpolation (no corners) on a ~1 ms grid, then linear
    # interpolation to every sample: smooth enough, and far cheaper.
    grid = max(2, int(n / sr * 1000) + 2)
    pos = np.linspace(0.0, knots - 1, grid)
    idx = np.minimum(pos.astype(np.int64), knots - 2)
    w = 0.5 - 0.5 * np.cos(np.pi * (pos - idx))
    coarse = values[idx] * (1.0 - w) + values[idx + 1] * w
    return np.interp(np.linspace(0.0, grid - 1, n), np.arange(grid), coarse)


def saw(phase):
    """Sawtooth (all harmonics, -6 dB/octave) of a phase given in cycles."""
    return 2.0 * (phase % 1.0) - 1.0


def oscillator_phase(f0, sr, rng):
    """Cycles of an oscillator following the frequency track ``f0``."""
    return np.cumsum(f0) / sr + rng.random()


def ramps(n, sr, attack, release):
    """Raised-cosine attack/release envelope of ``n`` samples."""
    env = np.ones(n)
    for length, sl in (
        (int(attack * sr), slice(None, None)),
        (int(release * sr), slice(None, None, -1)),
    ):
        length = min(length, n // 2)
        if length > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(length) / length)
            env[sl][:length] *= ramp
    return env


def spread(total, lengths, rng):
    """Burst start samples: the first at 0, the last ending at ``total``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 1:
        return np.zeros(1, dtype=np.int64)
    slack = max(total - int(lengths.sum()), 0)
    gaps = rng.dirichlet(np.ones(lengths.size - 1)) * slack
    starts = np.concatenate([[0.0], np.cumsum(lengths[:-1] + gaps)])
    starts = starts.astype(np.int64)
    starts[-1] = total - lengths[-1]
    return np.minimum(starts, total - lengths)


def burst_lengths(n, sr, rng, count, low, high):
    """``count`` burst lengths in samples that fit inside ``n`` samples."""
    if count == 1:
        return np.array([n])
    lengths = rng.uniform(low, high, count) * sr
    return np.minimum(lengths, n / count).astype(np.int64)
