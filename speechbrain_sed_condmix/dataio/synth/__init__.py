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

Modules: ``dsp`` (spectral and envelope helpers), ``sounds`` (one
synthesiser per class, background, clip mixing), ``mini_desed`` (the
mini-DESED writer) and ``examples`` (a small dataset in the generic format
with its own classes). The names below are the public interface.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from speechbrain_sed_condmix.dataio.synth.examples import (
    CUSTOM_EXAMPLE_CLASSES,
    CUSTOM_EXAMPLE_RATE,
    CUSTOM_EXAMPLE_SCALES,
    CUSTOM_EXAMPLE_SECONDS,
    generate_custom_example,
)
from speechbrain_sed_condmix.dataio.synth.mini_desed import (
    CLIP_SECONDS,
    MARKER_NAME,
    SCALES,
    UNLABELED_TSV,
    generate_mini_desed,
)
from speechbrain_sed_condmix.dataio.synth.sounds import (
    EVENT_DURATIONS,
    SAMPLE_RATE,
    synthesize_event,
)

__all__ = [
    "CLIP_SECONDS",
    "CUSTOM_EXAMPLE_CLASSES",
    "CUSTOM_EXAMPLE_RATE",
    "CUSTOM_EXAMPLE_SCALES",
    "CUSTOM_EXAMPLE_SECONDS",
    "EVENT_DURATIONS",
    "MARKER_NAME",
    "SAMPLE_RATE",
    "SCALES",
    "UNLABELED_TSV",
    "generate_custom_example",
    "generate_mini_desed",
    "synthesize_event",
]
