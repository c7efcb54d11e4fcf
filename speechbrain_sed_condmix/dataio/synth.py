"""mini-DESED: synthetic, procedurally generated audio in DESED's layout.

This module writes a small stand-in for the DESED dataset so that the whole
pipeline (preparation, training, evaluation) can run end to end without
downloading anything. The audio is **generated from noise and oscillators; it
is NOT DESED** and holds no recording of any kind. Only the folder layout,
the TSV formats, the 10 class names, the 44.1 kHz sample rate and the clip
lengths imitate the real dataset (see ``layout.py``).

Each class is a procedurally synthesised sound with its own character
(tonal beeps, inharmonic clinks, formant bursts, pitch glides, syllabic
voice, motor hums and noise textures), varied per instance in pitch,
duration, loudness and event-to-background ratio, mixed over a coloured
noise background that changes from clip to clip. Everything is deterministic
given ``(scale, seed)``: every clip draws from its own seeded generator, so
files do not depend on the order in which they are written.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sfft

from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES, DESED_LAYOUT

#: Sample rate of the written audio (DESED ships 44.1 kHz clips).
SAMPLE_RATE = 44100

#: Nominal clip length in seconds.
CLIP_SECONDS = 10.0

#: Clips per subset for each scale.
SCALES = {
    "tiny": {
        "synth_train": 24,
        "strong_train": 12,
        "weak": 16,
        "unlabeled": 24,
        "synth_val": 12,
        "validation": 16,
    },
    "small": {
        "synth_train": 400,
        "strong_train": 150,
        "weak": 250,
        "unlabeled": 400,
        "synth_val": 100,
        "validation": 200,
    },
}

#: Range of event durations (seconds) per class: short for impulsive
#: sounds, long for textures, roughly as in DESED. No event is shorter than
#: 0.4 s: on the 64 ms label grid a shorter event can no longer be detected
#: with the 0.7 intersection that PSDS1 asks, even by a perfect system.
EVENT_DURATIONS = {
    "Alarm_bell_ringing": (1.0, 5.0),
    "Blender": (2.0, 8.0),
    "Cat": (0.5, 2.0),
    "Dishes": (0.4, 1.2),
    "Dog": (0.4, 1.2),
    "Electric_shaver_toothbrush": (1.5, 7.0),
    "Frying": (2.0, 9.0),
    "Running_water": (2.0, 9.0),
    "Speech": (0.8, 4.0),
    "Vacuum_cleaner": (2.5, 9.0),
}

#: Name of the marker written last into a complete generation.
MARKER_NAME = "mini_desed.json"

#: DESED ships the unlabeled file list although the recipes glob the folder.
UNLABELED_TSV = "metadata/train/unlabel_in_domain.tsv"

# Bump when the generated content changes, so old markers are not trusted.
_GENERATOR_VERSION = 1
_SYNTHETIC_SUBSETS = ("synth_train", "synth_val")
# Share of real-like clips that are shorter than 10 s (DESED: about 10 %).
_SHORT_FRACTION = 0.12
# Share of validation clips without any event (DESED validation has some).
_EMPTY_FRACTION = 0.025
# Probabilities of 0..4 events in a clip of a strong or unlabeled subset.
_EVENT_COUNT_PROBS = np.array([0.05, 0.30, 0.30, 0.20, 0.15])
# Same-class events keep this gap so none overlap or touch (sed_scores_eval
# rejects those, and the prep code would merge them).
_SAME_CLASS_GAP_MS = 200
# Event-to-background ratio (dB): cleaner for synthetic soundscapes, as in
# DESED where the real recordings are harder.
_EBR_DB = {"synthetic": (6.0, 24.0), "real": (2.0, 18.0)}
_ID_CHARS = np.array(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
)
_README = """\
mini-DESED: GENERATED, SYNTHETIC AUDIO. THIS IS NOT DESED.

Every file in this folder was produced procedurally (noise and oscillators)
by speechbrain_sed_condmix.dataio.synth.generate_mini_desed. No recording of
any kind is included. Only the folder layout, the TSV formats, the 10 DESED
class names, the 44.1 kHz sample rate and the clip lengths imitate the real
DESED dataset, so that the preparation and training code can be exercised
end to end. Results obtained on this data say nothing about DESED.

scale: {scale}
seed: {seed}
"""


# ---------------------------------------------------------------------------
# Spectral helpers
# ---------------------------------------------------------------------------


def _lowpass_gain(f, start=7000.0, stop=7800.0):
    """Raised-cosine roll-off: keeps the energy inside the 0-8 kHz front end."""
    gain = (f < stop).astype(float)
    band = (f > start) & (f < stop)  # only the transition band needs cos
    gain[band] = 0.5 + 0.5 * np.cos(np.pi * (f[band] - start) / (stop - start))
    return gain


def _band_gain(f, low, high, order=2):
    """Butterworth-like band-pass magnitude."""
    f = np.maximum(f, 1.0)
    return 1.0 / np.sqrt(
        (1.0 + (low / f) ** (2 * order)) * (1.0 + (f / high) ** (2 * order))
    )


def _peak_gain(f, centre, width):
    """Magnitude of a resonance centred at ``centre`` Hz."""
    return 1.0 / np.sqrt(1.0 + ((f - centre) / (0.5 * width)) ** 2)


def _filter(x, gain_fn, sr):
    """Zero-phase filtering in the frequency domain (zero-padded)."""
    n = x.size
    n_fft = sfft.next_fast_len(n, real=True)
    spec = sfft.rfft(x, n_fft)
    spec *= gain_fn(sfft.rfftfreq(n_fft, 1.0 / sr))
    return sfft.irfft(spec, n_fft)[:n]


def _noise(n, rng, sr, gain_fn):
    """Gaussian noise with magnitude response ``gain_fn``, made in one iFFT."""
    n_fft = sfft.next_fast_len(n, real=True)
    f = sfft.rfftfreq(n_fft, 1.0 / sr)
    spec = rng.standard_normal(2 * f.size).view(np.complex128)
    spec *= gain_fn(f)
    spec[0] = 0.0
    return sfft.irfft(spec, n_fft)[:n]


def _unit_rms(x):
    return x / np.sqrt(np.mean(x**2) + 1e-20)


def _smooth_random(n, rng, sr, rate):
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


def _saw(phase):
    """Sawtooth (all harmonics, -6 dB/octave) of a phase given in cycles."""
    return 2.0 * (phase % 1.0) - 1.0


def _phase(f0, sr, rng):
    """Cycles of an oscillator following the frequency track ``f0``."""
    return np.cumsum(f0) / sr + rng.random()


def _ramps(n, sr, attack, release):
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


def _spread(total, lengths, rng):
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


def _burst_lengths(n, sr, rng, count, low, high):
    """``count`` burst lengths in samples that fit inside ``n`` samples."""
    if count == 1:
        return np.array([n])
    lengths = rng.uniform(low, high, count) * sr
    return np.minimum(lengths, n / count).astype(np.int64)


# ---------------------------------------------------------------------------
# One synthesiser per class. Each returns ``n`` raw samples; the caller band
# limits, fades and normalises them.
# ---------------------------------------------------------------------------


def _alarm(n, rng, sr):
    # Harmonic tone gated on/off: electronic beeper or rattling electric bell.
    t = np.arange(n) / sr
    if rng.random() < 0.6:
        f0 = rng.uniform(800.0, 2200.0)
        ratios = np.array([1.0, 3.0, 5.0])  # square-ish beeper
        amps = np.array([1.0, rng.uniform(0.15, 0.4), rng.uniform(0.05, 0.2)])
        on, off = rng.uniform(0.08, 0.4), rng.uniform(0.06, 0.3)
        rattle = None
    else:
        f0 = rng.uniform(600.0, 1500.0)
        ratios = np.array([1.0, 2.0, 3.0])
        amps = np.array([1.0, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.3)])
        on, off = rng.uniform(0.6, 2.0), rng.uniform(0.15, 0.5)
        rattle = (rng.uniform(12.0, 25.0), rng.uniform(0.4, 0.9))
    keep = ratios * f0 < 6500.0
    ratios, amps = ratios[keep], amps[keep]
    phases = rng.uniform(0.0, 2 * np.pi, ratios.size)
    tone = np.zeros(n)
    for ratio, amp, phi in zip(ratios, amps, phases):
        tone += amp * np.sin(2 * np.pi * ratio * f0 * t + phi)
    if rattle is not None:
        rate, depth = rattle
        tone *= 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t))
    # Fit a whole number of beeps so that the last one ends with the event.
    dur = n / sr
    count = max(1, int(round((dur + off) / (on + off))))
    scale = dur / (count * on + (count - 1) * off)
    on, period = on * scale, (on + off) * scale
    pos = t % period
    ramp = min(0.005, on / 4)
    gate = np.clip(np.minimum(pos, on - pos) / ramp, 0.0, 1.0)
    return tone * gate


def _dishes(n, rng, sr):
    # Clinks in quick succession: inharmonic partials with exponential decay.
    # Clinks come every 0.1-0.3 s so that the labelled span holds sound, not
    # mostly silence (a sparse event is hard to localise at 64 ms frames).
    dur = n / sr
    most = max(1, int(dur / 0.1))
    count = int(rng.integers(max(1, int(dur / 0.3)), most + 1))
    lengths = _burst_lengths(n, sr, rng, count, 0.12, 0.3)
    x = np.zeros(n)
    for start, length in zip(_spread(n, lengths, rng), lengths):
        k = int(rng.integers(3, 6))
        freqs = rng.uniform(1500.0, 6500.0, (k, 1))
        taus = length / sr / rng.uniform(1.5, 3.0, (k, 1))
        amps = rng.uniform(0.3, 1.0, (k, 1))
        phases = rng.uniform(0.0, 2 * np.pi, (k, 1))
        t = np.arange(length) / sr
        partials = np.sin(2 * np.pi * freqs * t + phases)
        clink = (amps * np.exp(-t / taus) * partials).sum(axis=0)
        x[start : start + length] += rng.uniform(0.5, 1.0) * clink
    return x


def _dog(n, rng, sr):
    # Barks: short voiced+noisy bursts with a falling pitch, through formants.
    dur = n / sr
    f0 = rng.uniform(250.0, 550.0)
    formants = (
        (rng.uniform(450.0, 900.0), rng.uniform(150.0, 300.0), 1.0),
        (rng.uniform(1100.0, 1900.0), rng.uniform(200.0, 400.0), 0.7),
        (rng.uniform(2300.0, 3400.0), rng.uniform(300.0, 600.0), 0.35),
    )
    noisiness = rng.uniform(0.2, 0.6)
    bark, gap = rng.uniform(0.1, 0.22), rng.uniform(0.08, 0.25)
    count = max(1, min(4, int((dur + gap) / (bark + gap))))
    lengths = _burst_lengths(n, sr, rng, count, 0.1, 0.22)
    src = np.zeros(n)
    for start, length in zip(_spread(n, lengths, rng), lengths):
        t = np.arange(length) / sr
        span = length / sr
        glide = f0 * rng.uniform(0.9, 1.1) * (1.2 - 0.4 * t / span)
        voiced = _saw(_phase(glide, sr, rng))
        env = (1.0 - np.exp(-t / 0.008)) * np.exp(-t / (span / 2.5))
        burst = (1.0 - noisiness) * voiced
        burst += 0.6 * noisiness * rng.standard_normal(length)
        src[start : start + length] += env * burst

    def gain(f):
        """Spectral gain of the sound at frequency ``f`` (Hz)."""
        return sum(a * _peak_gain(f, c, w) for c, w, a in formants) + 0.02

    return _filter(src, gain, sr)


def _cat(n, rng, sr):
    # A meow: harmonic tone whose pitch rises then falls, brightest mid-way.
    t = np.arange(n) / sr
    u = np.linspace(0.0, 1.0, n)
    # A wide glide from a low start keeps meows apart from steady beeps.
    f_start = rng.uniform(350.0, 500.0)
    f_peak = f_start * rng.uniform(1.6, 2.2)
    f_end = f_start * rng.uniform(0.65, 0.95)
    top = rng.uniform(0.3, 0.6)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.minimum(u / top, 1.0))
    fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((u - top) / (1 - top), 0, 1))
    f0 = f_start + (f_peak - f_start) * rise + (f_end - f_peak) * fall
    f0 *= 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(5.0, 8.0) * t)
    phase = 2 * np.pi * _phase(f0, sr, rng)
    tilt = rng.uniform(1.0, 1.6)
    closed = 1.0 - np.sqrt(np.sin(np.pi * u))  # mouth opens then closes
    x = np.zeros(n)
    for k in range(1, max(2, int(6500.0 / f_peak)) + 1):
        x += np.exp(-np.log(k) * (tilt + 1.2 * closed)) * np.sin(k * phase)
    x += 0.03 * rng.standard_normal(n)  # a little breath
    return x * _ramps(n, sr, rng.uniform(0.04, 0.08), rng.uniform(0.1, 0.2))


# Vowel formants (F1, F2, F3 in Hz) of an adult voice.
_VOWELS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [300, 870, 2240],
        [530, 1840, 2480],
        [570, 840, 2410],
        [660, 1720, 2410],
        [440, 1020, 2240],
        [390, 1990, 2550],
    ],
    dtype=float,
)


def _speech(n, rng, sr):
    # Glottal-like pulse train with falling intonation, cut into syllables
    # (~4 Hz) whose formants glide from one vowel to the next.
    dur = n / sr
    u = np.linspace(0.0, 1.0, n)
    f0 = rng.uniform(95.0, 230.0) * (1.1 - rng.uniform(0.1, 0.3) * u)
    f0 *= 1.0 + 0.05 * _smooth_random(n, rng, sr, 3.0)
    src = _saw(_phase(f0, sr, rng))
    speaker = rng.uniform(0.92, 1.18)
    widths = np.array([80.0, 120.0, 180.0]) * rng.uniform(0.8, 1.3)
    rate = rng.uniform(3.5, 5.0)
    count = max(1, int(round(dur * rate)))
    lengths = _burst_lengths(n, sr, rng, count, 0.55 / rate, 0.9 / rate)
    x = np.zeros(n)
    for start, length in zip(_spread(n, lengths, rng), lengths):
        chunk = src[start : start + length] * _ramps(length, sr, 0.03, 0.05)
        vowels = _VOWELS[rng.integers(0, len(_VOWELS), 2)] * speaker
        out = []
        for formants in vowels:

            def gain(f, formants=formants):
                """Spectral gain of this vowel at frequency ``f`` (Hz)."""
                peaks = sum(
                    a * _peak_gain(f, c, w)
                    for c, w, a in zip(formants, widths, (1.0, 0.6, 0.3))
                )
                return peaks / np.sqrt(1.0 + (f / 500.0) ** 2)

            out.append(_filter(chunk, gain, sr))
        w = np.linspace(0.0, 1.0, length)
        syllable = out[0] * (1.0 - w) + out[1] * w
        if rng.random() < 0.5:  # a fricative or plosive consonant onset
            m = min(length, int(rng.uniform(0.02, 0.07) * sr))
            centre = rng.uniform(2500.0, 6000.0)
            cons = _noise(
                m, rng, sr, lambda f, c=centre: _peak_gain(f, c, 1500)
            )
            cons = _unit_rms(cons) * _ramps(m, sr, 0.005, 0.01)
            syllable[:m] += 0.4 * np.sqrt(np.mean(syllable**2)) * cons
        x[start : start + length] += syllable
    return x


def _blender(n, rng, sr):
    # Mid-band motor hum (sawtooth harmonics) plus chopping noise, both
    # following a slow random load; spins up at the start.
    t = np.arange(n) / sr
    load = _smooth_random(n, rng, sr, rng.uniform(0.4, 1.2))
    f0 = rng.uniform(140.0, 320.0) * (1.0 + rng.uniform(0.04, 0.12) * load)
    f0 *= 1.0 - 0.5 * np.exp(-t / rng.uniform(0.1, 0.3))
    motor = _saw(_phase(f0, sr, rng)) * (1.0 + 0.3 * load)
    chop = rng.uniform(0.3, 0.8) * rng.standard_normal(n)
    chop *= np.clip(1.0 + 0.5 * load, 0.1, None)
    centre, low, high = (
        rng.uniform(400.0, 900.0),
        rng.uniform(120.0, 200.0),
        rng.uniform(1200.0, 1600.0),
    )

    def gain(f):
        """Spectral gain of the sound at frequency ``f`` (Hz)."""
        return _band_gain(f, low, high) * (
            1.0 + 2.0 * _peak_gain(f, centre, 400)
        )

    return _filter(motor + chop, gain, sr)


def _vacuum(n, rng, sr):
    # Steady broadband roar, high-passed, with a low motor hum underneath.
    t = np.arange(n) / sr
    centre, width = rng.uniform(2000.0, 3800.0), rng.uniform(2000.0, 3500.0)
    low = rng.uniform(900.0, 1400.0)
    roar = _noise(
        n,
        rng,
        sr,
        lambda f: (
            _band_gain(f, low, 7500.0, 3) * (0.5 + _peak_gain(f, centre, width))
        ),
    )
    roar = _unit_rms(roar)
    f_hum = rng.uniform(90.0, 200.0)
    hum = sum(
        np.sin(2 * np.pi * k * f_hum * t + rng.uniform(0, 2 * np.pi)) / k
        for k in range(1, 5)
    )
    level = rng.uniform(0.15, 0.4)
    return roar + level * hum * _ramps(n, sr, rng.uniform(0.2, 0.5), 0.0)


def _shaver(n, rng, sr):
    # Narrow pulse train (flat, dense harmonic comb) emphasised at 2-5 kHz:
    # a bright, steady buzz; toothbrushes add a slow pressure wobble.
    f0 = rng.uniform(90.0, 260.0)
    f0 *= 1.0 + 0.01 * _smooth_random(n, rng, sr, 5.0)
    duty = rng.uniform(0.08, 0.2)
    pulses = (_phase(f0, sr, rng) % 1.0 < duty).astype(float) - duty
    if rng.random() < 0.4:
        t = np.arange(n) / sr
        pulses *= 1.0 + rng.uniform(0.2, 0.4) * np.sin(
            2 * np.pi * rng.uniform(1.0, 3.0) * t
        )
    centre, width = rng.uniform(2200.0, 4500.0), rng.uniform(800.0, 2000.0)

    def gain(f):
        """Spectral gain of the sound at frequency ``f`` (Hz)."""
        return _band_gain(f, 1000.0, 7000.0) * (
            0.3 + _peak_gain(f, centre, width)
        )

    return _filter(pulses, gain, sr)


def _frying(n, rng, sr):
    # Crackle (sparse random clicks of random size) over a high hiss.
    rate = rng.uniform(40.0, 200.0)
    clicks = rng.poisson(rate * n / sr) + 1
    pos = rng.integers(0, n, clicks)
    amps = rng.lognormal(0.0, 0.8, clicks) * rng.choice([-1.0, 1.0], clicks)
    impulses = np.bincount(pos, weights=amps, minlength=n)
    crackle = _unit_rms(
        _filter(impulses, lambda f: _band_gain(f, 2000.0, 7500.0), sr)
    )
    hiss = _unit_rms(
        _noise(n, rng, sr, lambda f: _band_gain(f, 3000.0, 7500.0))
    )
    return crackle + rng.uniform(0.2, 0.5) * hiss


def _water(n, rng, sr):
    # Band-limited noise with a fast random amplitude modulation, plus
    # bubbles (short upward chirps).
    low, high = rng.uniform(250.0, 500.0), rng.uniform(1800.0, 3000.0)
    base = _unit_rms(_noise(n, rng, sr, lambda f: _band_gain(f, low, high)))
    depth = rng.uniform(0.3, 0.6)
    am = 1.0 + depth * _smooth_random(n, rng, sr, rng.uniform(6.0, 15.0))
    x = base * np.clip(am, 0.1, None)
    count = rng.poisson(rng.uniform(15.0, 50.0) * n / sr) + 1
    width = int(0.04 * sr)
    t = np.arange(width) / sr
    span = rng.uniform(0.01, 0.04, (count, 1))
    f_start = rng.uniform(400.0, 2200.0, (count, 1))
    sweep = f_start * rng.uniform(0.1, 0.6, (count, 1)) / span
    chirp = np.sin(2 * np.pi * (f_start * t + 0.5 * sweep * t**2))
    env = np.exp(-t / (span / 3.0)) * (t < span)
    amps = rng.lognormal(0.0, 0.5, (count, 1))
    starts = rng.integers(0, max(n - width, 1), (count, 1))
    idx = np.minimum(starts + np.arange(width), n - 1)
    bubbles = np.bincount(
        idx.ravel(), weights=(amps * env * chirp).ravel(), minlength=n
    )
    return x + rng.uniform(0.3, 0.8) * _unit_rms(bubbles)


_SYNTHS = {
    "Alarm_bell_ringing": _alarm,
    "Blender": _blender,
    "Cat": _cat,
    "Dishes": _dishes,
    "Dog": _dog,
    "Electric_shaver_toothbrush": _shaver,
    "Frying": _frying,
    "Running_water": _water,
    "Speech": _speech,
    "Vacuum_cleaner": _vacuum,
}


def _event_samples(label, n, rng, sr):
    x = _SYNTHS[label](n, rng, sr)
    x = _filter(x, _lowpass_gain, sr)
    x *= _ramps(n, sr, 0.005, 0.005)  # no clicks at the event boundaries
    return _unit_rms(x)


def synthesize_event(label, duration, rng, sample_rate=SAMPLE_RATE):
    """Synthesise one sound event of a DESED class (generated, NOT DESED).

    The sound is procedural (noise and oscillators), band-limited below
    8 kHz, faded in and out over 5 ms and normalised to unit RMS. Pitch,
    rhythm, timbre and modulation vary with ``rng``.

    Arguments
    ---------
    label : str
        One of ``DESED_CLASSES``.
    duration : float
        Length of the event in seconds.
    rng : numpy.random.Generator
        Source of randomness.
    sample_rate : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        ``round(duration * sample_rate)`` float64 samples with unit RMS.

    Example
    -------
    >>> x = synthesize_event("Dog", 0.5, np.random.default_rng(0))
    >>> x.shape, bool(np.isfinite(x).all())
    ((22050,), True)
    >>> round(float(np.sqrt(np.mean(x**2))), 3)
    1.0
    """
    if label not in _SYNTHS:
        raise ValueError(
            f"Unknown class {label!r}; known: {', '.join(DESED_CLASSES)}"
        )
    n = int(round(duration * sample_rate))
    if n < 16:
        raise ValueError(f"duration {duration} s is too short")
    return _event_samples(label, n, rng, sample_rate)


def _background(n, rng, sr, level):
    """Coloured noise of random tilt with optional mains hum, RMS ``level``."""
    n_fft = sfft.next_fast_len(n, real=True)
    f = sfft.rfftfreq(n_fft, 1.0 / sr)
    beta = rng.uniform(0.0, 2.0)  # white (0) to brown (2) noise
    mag = (np.maximum(f, 30.0) / 1000.0) ** (-beta / 2) * _lowpass_gain(f)
    if rng.random() < 0.5:  # a broad room/ambience colouring
        mag *= 1.0 + rng.uniform(0.5, 3.0) * _peak_gain(
            f, rng.uniform(200.0, 3000.0), rng.uniform(300.0, 2000.0)
        )
    spec = rng.standard_normal(2 * f.size).view(np.complex128)
    spec *= mag
    spec[0] = 0.0
    # Parseval: the RMS of irfft(spec) is sqrt(2 * sum|X|^2) / n_fft.
    power = np.sum(spec.real**2 + spec.imag**2)  # no BLAS: single thread
    spec *= level * n_fft / np.sqrt(2.0 * power)
    if rng.random() < 0.6:  # low mains hum, added as spectral lines
        f_hum = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
        hum_amp = level * 10 ** (rng.uniform(-12.0, 0.0) / 20) * np.sqrt(2)
        for k in range(1, int(rng.integers(2, 6)) + 1):
            amp = hum_amp * rng.uniform(0.3, 1.0) / k
            phi = rng.uniform(0.0, 2 * np.pi)
            spec[int(round(k * f_hum * n_fft / sr))] += (
                amp * n_fft / 2 * np.exp(1j * phi)
            )
    x = sfft.irfft(spec, n_fft)[:n]
    # Slow drift of the ambience level.
    return x * (1.0 + 0.15 * _smooth_random(n, rng, sr, 0.3))


# ---------------------------------------------------------------------------
# Planning and writing
# ---------------------------------------------------------------------------


def _subset_rng(seed, subset_index):
    # Fixed-length keys: SeedSequence pads entropy with zeros, so keys of
    # different lengths could collide.
    return np.random.default_rng([seed, subset_index, 0, 0])


def _clip_rng(seed, subset_index, clip_index):
    return np.random.default_rng([seed, subset_index, 1, clip_index])


def _real_filename(rng, taken):
    while True:
        ident = "".join(rng.choice(_ID_CHARS, 11))
        start = int(rng.integers(0, 300))
        name = f"Y{ident}_{start}.000_{start + 10}.000.wav"
        if name not in taken:
            taken.add(name)
            return name


def _plan_subset(seed, subset_index, layout, count, taken):
    """Filenames, clip lengths, event counts and forced classes of a subset."""
    rng = _subset_rng(seed, subset_index)
    synthetic = layout.name in _SYNTHETIC_SUBSETS
    if synthetic:
        names = [f"{i}.wav" for i in range(count)]
    else:
        names = [_real_filename(rng, taken) for _ in range(count)]
    length_ms = np.full(count, int(CLIP_SECONDS * 1000))
    if not synthetic:
        # DESED clips whose video ended early are shorter than 10 s.
        n_short = max(1, int(round(_SHORT_FRACTION * count)))
        short = rng.choice(count, n_short, replace=False)
        length_ms[short] = 100 * rng.integers(50, 100, n_short)
    n_events = rng.choice(5, count, p=_EVENT_COUNT_PROBS)
    empty = np.zeros(count, dtype=bool)
    if layout.kind == "weak":
        n_events = np.maximum(n_events, 1)
    if layout.name == "validation":
        n_events = np.maximum(n_events, 1)
        n_empty = max(1, int(round(_EMPTY_FRACTION * count)))
        empty[rng.choice(count, n_empty, replace=False)] = True
        n_events[empty] = 0
    labelled = layout.kind != "unlabeled"
    n_classes = len(DESED_CLASSES)
    if labelled:
        # Every labelled subset must hold every class: needs >= 10 events.
        room = np.flatnonzero(~empty & (n_events < 4))
        while n_events.sum() < n_classes and room.size:
            n_events[rng.choice(room)] += 1
            room = np.flatnonzero(~empty & (n_events < 4))
        if n_events.sum() < n_classes:
            raise ValueError(
                f"{count} clips are too few to hold all classes in "
                f"{layout.name!r}"
            )
    # The first event slots, visiting clips in random order, go round-robin
    # over the classes; a clip's slots are consecutive, so its forced
    # classes differ and can always be placed.
    forced = [[] for _ in range(count)]
    classes = rng.permutation(n_classes)
    slot = 0
    for clip in rng.permutation(count):
        for _ in range(n_events[clip]):
            if slot < n_classes:
                forced[clip].append(int(classes[slot]))
                slot += 1
    return names, length_ms, n_events, forced


def _plan_events(rng, length_ms, n_events, forced):
    """Place events: ``[(onset_ms, offset_ms, label), ...]`` sorted by onset."""
    labels = list(forced)
    labels += [
        int(c)
        for c in rng.integers(0, len(DESED_CLASSES), n_events - len(forced))
    ]
    events = []
    for i, cls in enumerate(labels):
        label = DESED_CLASSES[cls]
        low, high = EVENT_DURATIONS[label]
        high = min(high, length_ms / 1000.0)
        for _ in range(20):
            dur_ms = int(round(rng.uniform(low, high) * 1000))
            onset = int(rng.integers(0, length_ms - dur_ms + 1))
            offset = onset + dur_ms
            clash = any(
                lab == label
                and onset < off + _SAME_CLASS_GAP_MS
                and on < offset + _SAME_CLASS_GAP_MS
                for on, off, lab in events
            )
            if not clash:
                events.append((onset, offset, label))
                break
        else:
            # Only extra (non-forced) events can fail: drop them.
            assert i >= len(forced)
    return sorted(events)


def _render_clip(rng, length_ms, events, ebr_range, sr):
    n = length_ms * sr // 1000
    level = 10 ** (rng.uniform(-48.0, -30.0) / 20)
    x = _background(n, rng, sr, level)
    for onset, offset, label in events:
        start = onset * sr // 1000
        stop = min(offset * sr // 1000, n)
        gain = level * 10 ** (rng.uniform(*ebr_range) / 20)
        x[start:stop] += gain * _event_samples(label, stop - start, rng, sr)
    peak = np.max(np.abs(x))
    if peak > 0.95:  # scale the whole mix: keeps event-to-background ratios
        x *= 0.95 / peak
    return x


def _tmp_path(path):
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_text(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_wav(path, audio, sr):
    tmp = _tmp_path(path)
    sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _check_out_dir(out_dir, scale, seed):
    """Return True if ``out_dir`` already holds this exact generation."""
    marker = out_dir / MARKER_NAME
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("scale") == scale and info.get("seed") == seed:
            return (
                info.get("complete") is True
                and info.get("version") == _GENERATOR_VERSION
            )
        raise FileExistsError(
            f"{out_dir} holds mini-DESED for scale={info.get('scale')!r}, "
            f"seed={info.get('seed')!r}; use another folder"
        )
    for layout in DESED_LAYOUT:
        folder = out_dir / layout.audio
        if folder.is_dir() and any(folder.glob("*.wav")):
            raise FileExistsError(
                f"{folder} already holds audio that mini-DESED did not "
                "write; refusing to overwrite it"
            )
    return False


def _marker(scale, seed, counts, complete):
    return json.dumps(
        {
            "generator": "speechbrain_sed_condmix.dataio.synth",
            "note": "Generated, synthetic audio. This is NOT DESED.",
            "version": _GENERATOR_VERSION,
            "scale": scale,
            "seed": seed,
            "sample_rate": SAMPLE_RATE,
            "counts": counts,
            "complete": complete,
        },
        indent=2,
    )


def generate_mini_desed(out_dir, scale="tiny", seed=0, progress=None):
    """Write mini-DESED: generated, synthetic audio in DESED's layout.

    The audio is procedural (noise and oscillators) and is **NOT DESED**; a
    ``README.txt`` in ``out_dir`` says so. The folders and TSVs follow
    ``DESED_LAYOUT`` exactly: strong TSVs (``filename onset offset
    event_label``; validation clips without events are one row with empty
    fields), the weak TSV (``filename event_labels``), durations TSVs for
    ``synth_val`` and ``validation``, and ``unlabel_in_domain.tsv``. Clips
    are 44.1 kHz mono 16-bit WAV, 10 s long except about 12 % of the
    real-like clips (5-9.9 s). Every labelled subset holds all 10 classes;
    same-class events never overlap or touch.

    The result depends only on ``(scale, seed)`` (byte-identical files). A
    marker ``mini_desed.json`` is written last; if it already records a
    complete generation with the same scale and seed, the call returns at
    once. A folder holding another generation, or audio that mini-DESED
    did not write, raises ``FileExistsError``.

    Arguments
    ---------
    out_dir : str or Path
        Dataset root to create or fill.
    scale : str
        ``"tiny"`` (about 100 clips, seconds) or ``"small"`` (1500 clips,
        about two minutes); see ``SCALES``.
    seed : int
        Non-negative random seed.
    progress : bool or None
        Show a progress bar over clips; ``None`` shows it only on a TTY.

    Returns
    -------
    pathlib.Path
        ``Path(out_dir)``.

    Example
    -------
    >>> root = generate_mini_desed(getfixture("tmp_path") / "mini")
    >>> (root / "metadata/train/weak.tsv").read_text().splitlines()[0]
    'filename\\tevent_labels'
    >>> generate_mini_desed(root) == root  # already complete: returns at once
    True
    """
    if scale not in SCALES:
        raise ValueError(
            f"Unknown scale {scale!r}; choose one of {', '.join(SCALES)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    seed = int(seed)
    out_dir = Path(out_dir)
    if _check_out_dir(out_dir, scale, seed):
        return out_dir
    counts = dict(SCALES[scale])
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "README.txt", _README.format(scale=scale, seed=seed))
    # An incomplete marker claims the folder, so a rerun may overwrite it.
    _write_text(out_dir / MARKER_NAME, _marker(scale, seed, counts, False))

    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(
        total=sum(counts.values()),
        desc="mini-DESED (synthetic)",
        unit="clip",
        disable=not progress,
    )
    taken = set()
    for subset_index, layout in enumerate(DESED_LAYOUT):
        count = counts[layout.name]
        names, lengths, n_events, forced = _plan_subset(
            seed, subset_index, layout, count, taken
        )
        synthetic = layout.name in _SYNTHETIC_SUBSETS
        ebr = _EBR_DB["synthetic" if synthetic else "real"]
        audio_dir = out_dir / layout.audio
        audio_dir.mkdir(parents=True, exist_ok=True)
        strong, weak, durations = [], [], []
        for i, name in enumerate(names):
            rng = _clip_rng(seed, subset_index, i)
            length_ms = int(lengths[i])
            events = _plan_events(rng, length_ms, int(n_events[i]), forced[i])
            audio = _render_clip(rng, length_ms, events, ebr, SAMPLE_RATE)
            _write_wav(audio_dir / name, audio, SAMPLE_RATE)
            durations.append(f"{name}\t{length_ms / 1000:.3f}")
            if events:
                strong += [
                    f"{name}\t{on / 1000:.3f}\t{off / 1000:.3f}\t{lab}"
                    for on, off, lab in events
                ]
            else:
                strong.append(f"{name}\t\t\t")
            labels = sorted({lab for _, _, lab in events})
            weak.append(f"{name}\t{','.join(labels)}")
            bar.update(1)
        if layout.kind == "strong":
            rows = ["filename\tonset\toffset\tevent_label"] + strong
        elif layout.kind == "weak":
            rows = ["filename\tevent_labels"] + weak
        else:
            rows = ["filename"] + names
        path = UNLABELED_TSV if layout.metadata is None else layout.metadata
        _write_text(out_dir / path, "\n".join(rows) + "\n")
        if layout.durations is not None:
            text = "\n".join(["filename\tduration"] + durations) + "\n"
            _write_text(out_dir / layout.durations, text)
    bar.close()
    _write_text(out_dir / MARKER_NAME, _marker(scale, seed, counts, True))
    return out_dir


# ---------------------------------------------------------------------------
# A dataset in another shape: the generic format with custom classes
# ---------------------------------------------------------------------------

#: Classes of the custom example and the sound maker each one uses.
CUSTOM_EXAMPLE_CLASSES = {
    "bark": "Dog",
    "chime": "Alarm_bell_ringing",
    "tap_water": "Running_water",
}

#: Sample rate and clip length of the custom example.
CUSTOM_EXAMPLE_RATE = 22050
CUSTOM_EXAMPLE_SECONDS = 5.0

#: Clips per subset of the custom example, per scale.
CUSTOM_EXAMPLE_SCALES = {
    "tiny": {"train": 16, "unlabeled": 16, "valid": 8, "test": 8},
    "small": {"train": 160, "unlabeled": 160, "valid": 40, "test": 40},
}

_CUSTOM_README = """\
GENERATED, SYNTHETIC AUDIO (NOT DESED, NOT A RECORDING).

A small dataset in the generic format of prepare_sed_dataset, written by
speechbrain_sed_condmix.dataio.synth.generate_custom_example: 3 classes
({classes}), 5 s clips at 22.05 kHz (unlabeled clips in stereo), strong
labels and unlabeled audio only.

  classes.txt                  one class per line
  <subset>/strong.tsv          filename onset offset event_label
  <subset>/audio/*.wav         train, valid, test
  unlabeled/*.wav              no labels
  test/durations.tsv           filename duration

scale: {scale}
seed: {seed}
"""


def generate_custom_example(out_dir, scale="tiny", seed=0):
    """Write a small non-DESED dataset in the generic format.

    Three classes with their own names (``CUSTOM_EXAMPLE_CLASSES``, made
    by three of the mini-DESED sound makers), 5 s clips at 22.05 kHz,
    strong labels (train, valid, test) and stereo unlabeled clips. The
    audio is generated and says nothing about real recordings.

    Arguments
    ---------
    out_dir : str or Path
        Folder to write (created; existing files are overwritten).
    scale : str
        ``"tiny"`` (48 clips) or ``"small"`` (400 clips).
    seed : int
        Random seed.

    Returns
    -------
    pathlib.Path
        ``Path(out_dir)``.

    Example
    -------
    >>> root = generate_custom_example(getfixture("tmp_path") / "ex")
    >>> (root / "classes.txt").read_text().split()
    ['bark', 'chime', 'tap_water']
    >>> sf.info(str(next((root / "unlabeled").glob("*.wav")))).channels
    2
    """
    if scale not in CUSTOM_EXAMPLE_SCALES:
        raise ValueError(f"Unknown scale {scale!r}")
    out_dir = Path(out_dir)
    names = sorted(CUSTOM_EXAMPLE_CLASSES)
    _write_text(
        out_dir / "README.txt",
        _CUSTOM_README.format(classes=", ".join(names), scale=scale, seed=seed),
    )
    _write_text(out_dir / "classes.txt", "\n".join(names) + "\n")
    sr, length_ms = CUSTOM_EXAMPLE_RATE, int(CUSTOM_EXAMPLE_SECONDS * 1000)
    for index, (subset, count) in enumerate(
        CUSTOM_EXAMPLE_SCALES[scale].items()
    ):
        labelled = subset != "unlabeled"
        audio_dir = out_dir / subset / ("audio" if labelled else "")
        audio_dir.mkdir(parents=True, exist_ok=True)
        rows, durations = [], []
        for i in range(count):
            rng = np.random.default_rng([seed, 100 + index, 1, i])
            events = _custom_events(rng, length_ms, names)
            source = [
                (on, off, CUSTOM_EXAMPLE_CLASSES[lab])
                for on, off, lab in events
            ]
            audio = _render_clip(
                rng, length_ms, source, _EBR_DB["synthetic"], sr
            )
            if not labelled:  # exercise the downmix at prep
                audio = np.stack([audio, 0.8 * audio], axis=1)
            name = f"{subset}_{i:04d}.wav"
            _write_wav(audio_dir / name, audio, sr)
            durations.append(f"{name}\t{length_ms / 1000:.3f}")
            rows += [
                f"{name}\t{on / 1000:.3f}\t{off / 1000:.3f}\t{lab}"
                for on, off, lab in events
            ] or [f"{name}\t\t\t"]
        if labelled:
            header = "filename\tonset\toffset\tevent_label"
            _write_text(
                out_dir / subset / "strong.tsv",
                "\n".join([header, *rows]) + "\n",
            )
        if subset == "test":
            text = "\n".join(["filename\tduration", *durations]) + "\n"
            _write_text(out_dir / subset / "durations.tsv", text)
    return out_dir


def _custom_events(rng, length_ms, names):
    """1 to 3 events of the custom classes; same-class events keep a gap."""
    events = []
    for _ in range(int(rng.integers(1, 4))):
        label = names[int(rng.integers(len(names)))]
        low, high = EVENT_DURATIONS[CUSTOM_EXAMPLE_CLASSES[label]]
        high = min(high, 0.8 * length_ms / 1000)
        dur_ms = int(round(rng.uniform(low, max(low, high)) * 1000))
        onset = int(rng.integers(0, length_ms - dur_ms + 1))
        clash = any(
            lab == label
            and onset < off + _SAME_CLASS_GAP_MS
            and on < onset + dur_ms + _SAME_CLASS_GAP_MS
            for on, off, lab in events
        )
        if not clash:
            events.append((onset, onset + dur_ms, label))
    return sorted(events)
