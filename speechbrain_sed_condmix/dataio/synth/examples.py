"""A small non-DESED example dataset in the generic format.

Three classes with their own names, made by three of the mini-DESED sound
makers, written in the layout that ``prepare_sed_dataset`` reads. Generated
audio, not a recording.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

from pathlib import Path

import numpy as np

from speechbrain_sed_condmix.dataio.synth.mini_desed import (
    EBR_DB,
    SAME_CLASS_GAP_MS,
    write_text,
    write_wav,
)
from speechbrain_sed_condmix.dataio.synth.sounds import (
    EVENT_DURATIONS,
    render_clip,
)

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
    >>> import soundfile as sf
    >>> sf.info(str(next((root / "unlabeled").glob("*.wav")))).channels
    2
    """
    if scale not in CUSTOM_EXAMPLE_SCALES:
        raise ValueError(f"Unknown scale {scale!r}")
    out_dir = Path(out_dir)
    names = sorted(CUSTOM_EXAMPLE_CLASSES)
    write_text(
        out_dir / "README.txt",
        _CUSTOM_README.format(classes=", ".join(names), scale=scale, seed=seed),
    )
    write_text(out_dir / "classes.txt", "\n".join(names) + "\n")
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
            audio = render_clip(rng, length_ms, source, EBR_DB["synthetic"], sr)
            if not labelled:  # exercise the downmix at prep
                audio = np.stack([audio, 0.8 * audio], axis=1)
            name = f"{subset}_{i:04d}.wav"
            write_wav(audio_dir / name, audio, sr)
            durations.append(f"{name}\t{length_ms / 1000:.3f}")
            rows += [
                f"{name}\t{on / 1000:.3f}\t{off / 1000:.3f}\t{lab}"
                for on, off, lab in events
            ] or [f"{name}\t\t\t"]
        if labelled:
            header = "filename\tonset\toffset\tevent_label"
            write_text(
                out_dir / subset / "strong.tsv",
                "\n".join([header, *rows]) + "\n",
            )
        if subset == "test":
            text = "\n".join(["filename\tduration", *durations]) + "\n"
            write_text(out_dir / subset / "durations.tsv", text)
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
            and onset < off + SAME_CLASS_GAP_MS
            and on < onset + dur_ms + SAME_CLASS_GAP_MS
            for on, off, lab in events
        )
        if not clash:
            events.append((onset, onset + dur_ms, label))
    return sorted(events)
