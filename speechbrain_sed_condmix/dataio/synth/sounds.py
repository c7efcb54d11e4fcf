"""Sound synthesisers of mini-DESED: one procedural sound per DESED class.

Generated from noise and oscillators; no recording of any kind. Also the
coloured background noise and the mixing of events over it into a clip.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import numpy as np
from scipy import fft as sfft

from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
from speechbrain_sed_condmix.dataio.synth.dsp import (
    band_gain,
    burst_lengths,
    filtered_noise,
    lowpass_gain,
    oscillator_phase,
    peak_gain,
    ramps,
    saw,
    smooth_random,
    spectral_filter,
    spread,
    unit_rms,
)

#: Sample rate of the written audio (DESED ships 44.1 kHz clips).
SAMPLE_RATE = 44100

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


# One synthesiser per class. Each returns ``n`` raw samples; the caller band
# limits, fades and normalises them.


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
    lengths = burst_lengths(n, sr, rng, count, 0.12, 0.3)
    x = np.zeros(n)
    for start, length in zip(spread(n, lengths, rng), lengths):
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
    lengths = burst_lengths(n, sr, rng, count, 0.1, 0.22)
    src = np.zeros(n)
    for start, length in zip(spread(n, lengths, rng), lengths):
        t = np.arange(length) / sr
        span = length / sr
        glide = f0 * rng.uniform(0.9, 1.1) * (1.2 - 0.4 * t / span)
        voiced = saw(oscillator_phase(glide, sr, rng))
        env = (1.0 - np.exp(-t / 0.008)) * np.exp(-t / (span / 2.5))
        burst = (1.0 - noisiness) * voiced
        burst += 0.6 * noisiness * rng.standard_normal(length)
        src[start : start + length] += env * burst

    def gain(f):
        """Magnitude response of the filter at frequencies ``f``."""
        return sum(a * peak_gain(f, c, w) for c, w, a in formants) + 0.02

    return spectral_filter(src, gain, sr)


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
    phase = 2 * np.pi * oscillator_phase(f0, sr, rng)
    tilt = rng.uniform(1.0, 1.6)
    closed = 1.0 - np.sqrt(np.sin(np.pi * u))  # mouth opens then closes
    x = np.zeros(n)
    for k in range(1, max(2, int(6500.0 / f_peak)) + 1):
        x += np.exp(-np.log(k) * (tilt + 1.2 * closed)) * np.sin(k * phase)
    x += 0.03 * rng.standard_normal(n)  # a little breath
    return x * ramps(n, sr, rng.uniform(0.04, 0.08), rng.uniform(0.1, 0.2))


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
    f0 *= 1.0 + 0.05 * smooth_random(n, rng, sr, 3.0)
    src = saw(oscillator_phase(f0, sr, rng))
    speaker = rng.uniform(0.92, 1.18)
    widths = np.array([80.0, 120.0, 180.0]) * rng.uniform(0.8, 1.3)
    rate = rng.uniform(3.5, 5.0)
    count = max(1, int(round(dur * rate)))
    lengths = burst_lengths(n, sr, rng, count, 0.55 / rate, 0.9 / rate)
    x = np.zeros(n)
    for start, length in zip(spread(n, lengths, rng), lengths):
        chunk = src[start : start + length] * ramps(length, sr, 0.03, 0.05)
        vowels = _VOWELS[rng.integers(0, len(_VOWELS), 2)] * speaker
        out = []
        for formants in vowels:

            def gain(f, formants=formants):
                """Magnitude response of the vowel formants at ``f``."""
                peaks = sum(
                    a * peak_gain(f, c, w)
                    for c, w, a in zip(formants, widths, (1.0, 0.6, 0.3))
                )
                return peaks / np.sqrt(1.0 + (f / 500.0) ** 2)

            out.append(spectral_filter(chunk, gain, sr))
        w = np.linspace(0.0, 1.0, length)
        syllable = out[0] * (1.0 - w) + out[1] * w
        if rng.random() < 0.5:  # a fricative or plosive consonant onset
            m = min(length, int(rng.uniform(0.02, 0.07) * sr))
            centre = rng.uniform(2500.0, 6000.0)
            cons = filtered_noise(
                m, rng, sr, lambda f, c=centre: peak_gain(f, c, 1500)
            )
            cons = unit_rms(cons) * ramps(m, sr, 0.005, 0.01)
            syllable[:m] += 0.4 * np.sqrt(np.mean(syllable**2)) * cons
        x[start : start + length] += syllable
    return x


def _blender(n, rng, sr):
    # Mid-band motor hum (sawtooth harmonics) plus chopping noise, both
    # following a slow random load; spins up at the start.
    t = np.arange(n) / sr
    load = smooth_random(n, rng, sr, rng.uniform(0.4, 1.2))
    f0 = rng.uniform(140.0, 320.0) * (1.0 + rng.uniform(0.04, 0.12) * load)
    f0 *= 1.0 - 0.5 * np.exp(-t / rng.uniform(0.1, 0.3))
    motor = saw(oscillator_phase(f0, sr, rng)) * (1.0 + 0.3 * load)
    chop = rng.uniform(0.3, 0.8) * rng.standard_normal(n)
    chop *= np.clip(1.0 + 0.5 * load, 0.1, None)
    centre, low, high = (
        rng.uniform(400.0, 900.0),
        rng.uniform(120.0, 200.0),
        rng.uniform(1200.0, 1600.0),
    )

    def gain(f):
        """Magnitude response of the filter at frequencies ``f``."""
        return band_gain(f, low, high) * (1.0 + 2.0 * peak_gain(f, centre, 400))

    return spectral_filter(motor + chop, gain, sr)


def _vacuum(n, rng, sr):
    # Steady broadband roar, high-passed, with a low motor hum underneath.
    t = np.arange(n) / sr
    centre, width = rng.uniform(2000.0, 3800.0), rng.uniform(2000.0, 3500.0)
    low = rng.uniform(900.0, 1400.0)
    roar = filtered_noise(
        n,
        rng,
        sr,
        lambda f: (
            band_gain(f, low, 7500.0, 3) * (0.5 + peak_gain(f, centre, width))
        ),
    )
    roar = unit_rms(roar)
    f_hum = rng.uniform(90.0, 200.0)
    hum = sum(
        np.sin(2 * np.pi * k * f_hum * t + rng.uniform(0, 2 * np.pi)) / k
        for k in range(1, 5)
    )
    level = rng.uniform(0.15, 0.4)
    return roar + level * hum * ramps(n, sr, rng.uniform(0.2, 0.5), 0.0)


def _shaver(n, rng, sr):
    # Narrow pulse train (flat, dense harmonic comb) emphasised at 2-5 kHz:
    # a bright, steady buzz; toothbrushes add a slow pressure wobble.
    f0 = rng.uniform(90.0, 260.0)
    f0 *= 1.0 + 0.01 * smooth_random(n, rng, sr, 5.0)
    duty = rng.uniform(0.08, 0.2)
    pulses = (oscillator_phase(f0, sr, rng) % 1.0 < duty).astype(float) - duty
    if rng.random() < 0.4:
        t = np.arange(n) / sr
        pulses *= 1.0 + rng.uniform(0.2, 0.4) * np.sin(
            2 * np.pi * rng.uniform(1.0, 3.0) * t
        )
    centre, width = rng.uniform(2200.0, 4500.0), rng.uniform(800.0, 2000.0)

    def gain(f):
        """Magnitude response of the filter at frequencies ``f``."""
        return band_gain(f, 1000.0, 7000.0) * (
            0.3 + peak_gain(f, centre, width)
        )

    return spectral_filter(pulses, gain, sr)


def _frying(n, rng, sr):
    # Crackle (sparse random clicks of random size) over a high hiss.
    rate = rng.uniform(40.0, 200.0)
    clicks = rng.poisson(rate * n / sr) + 1
    pos = rng.integers(0, n, clicks)
    amps = rng.lognormal(0.0, 0.8, clicks) * rng.choice([-1.0, 1.0], clicks)
    impulses = np.bincount(pos, weights=amps, minlength=n)
    crackle = unit_rms(
        spectral_filter(impulses, lambda f: band_gain(f, 2000.0, 7500.0), sr)
    )
    hiss = unit_rms(
        filtered_noise(n, rng, sr, lambda f: band_gain(f, 3000.0, 7500.0))
    )
    return crackle + rng.uniform(0.2, 0.5) * hiss


def _water(n, rng, sr):
    # Band-limited noise with a fast random amplitude modulation, plus
    # bubbles (short upward chirps).
    low, high = rng.uniform(250.0, 500.0), rng.uniform(1800.0, 3000.0)
    base = unit_rms(
        filtered_noise(n, rng, sr, lambda f: band_gain(f, low, high))
    )
    depth = rng.uniform(0.3, 0.6)
    am = 1.0 + depth * smooth_random(n, rng, sr, rng.uniform(6.0, 15.0))
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
    return x + rng.uniform(0.3, 0.8) * unit_rms(bubbles)


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


def event_samples(label, n, rng, sr):
    """``n`` samples of ``label``'s sound: band-limited, faded, unit RMS."""
    x = _SYNTHS[label](n, rng, sr)
    x = spectral_filter(x, lowpass_gain, sr)
    x *= ramps(n, sr, 0.005, 0.005)  # no clicks at the event boundaries
    return unit_rms(x)


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
    return event_samples(label, n, rng, sample_rate)


def background_noise(n, rng, sr, level):
    """Coloured noise of random tilt with optional mains hum, RMS ``level``."""
    n_fft = sfft.next_fast_len(n, real=True)
    f = sfft.rfftfreq(n_fft, 1.0 / sr)
    beta = rng.uniform(0.0, 2.0)  # white (0) to brown (2) noise
    mag = (np.maximum(f, 30.0) / 1000.0) ** (-beta / 2) * lowpass_gain(f)
    if rng.random() < 0.5:  # a broad room/ambience colouring
        mag *= 1.0 + rng.uniform(0.5, 3.0) * peak_gain(
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
    return x * (1.0 + 0.15 * smooth_random(n, rng, sr, 0.3))


def render_clip(rng, length_ms, events, ebr_range, sr):
    """Mix events over a background noise into one clip.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness (background, levels, sounds).
    length_ms : int
        Clip length in milliseconds.
    events : list of tuple
        ``(onset_ms, offset_ms, label)``, labels of ``EVENT_DURATIONS``.
    ebr_range : tuple of float
        Range of the event-to-background ratio in dB, drawn per event.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    numpy.ndarray
        ``length_ms * sr // 1000`` samples, peak at most 0.95.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> x = render_clip(rng, 500, [(100, 400, "Dog")], (6.0, 24.0), 16000)
    >>> x.shape, bool(np.abs(x).max() <= 0.95)
    ((8000,), True)
    """
    n = length_ms * sr // 1000
    level = 10 ** (rng.uniform(-48.0, -30.0) / 20)
    x = background_noise(n, rng, sr, level)
    for onset, offset, label in events:
        start = onset * sr // 1000
        stop = min(offset * sr // 1000, n)
        gain = level * 10 ** (rng.uniform(*ebr_range) / 20)
        x[start:stop] += gain * event_samples(label, stop - start, rng, sr)
    peak = np.max(np.abs(x))
    if peak > 0.95:  # scale the whole mix: keeps event-to-background ratios
        x *= 0.95 / peak
    return x
