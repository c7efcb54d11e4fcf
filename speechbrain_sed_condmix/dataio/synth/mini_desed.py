"""The mini-DESED writer: plans subsets and clips, writes audio and TSVs.

The folders and TSVs follow ``DESED_LAYOUT``; the audio comes from
:mod:`~speechbrain_sed_condmix.dataio.synth.sounds`. Generated, synthetic
audio: this is NOT DESED.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES, DESED_LAYOUT
from speechbrain_sed_condmix.dataio.synth.sounds import (
    EVENT_DURATIONS,
    SAMPLE_RATE,
    render_clip,
)

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
    # Label-scarce: few labelled clips, many unlabeled ones, so that
    # semi-supervised learning has room to help; synth_val selects and
    # tunes, the larger validation split only reports.
    "ssl": {
        "synth_train": 100,
        "strong_train": 12,
        "weak": 56,
        "unlabeled": 1200,
        "synth_val": 100,
        "validation": 320,
    },
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
SAME_CLASS_GAP_MS = 200
# Event-to-background ratio (dB): cleaner for synthetic soundscapes, as in
# DESED where the real recordings are harder.
EBR_DB = {"synthetic": (6.0, 24.0), "real": (2.0, 18.0)}
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
                and onset < off + SAME_CLASS_GAP_MS
                and on < offset + SAME_CLASS_GAP_MS
                for on, off, lab in events
            )
            if not clash:
                events.append((onset, offset, label))
                break
        else:
            # Only extra (non-forced) events can fail: drop them.
            assert i >= len(forced)
    return sorted(events)


def _tmp_path(path):
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_wav(path, audio, sr):
    """Write 16-bit PCM WAV to ``path`` through a temporary file (atomic)."""
    tmp = _tmp_path(path)
    sf.write(tmp, audio, sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _check_out_dir(out_dir, scale, seed, counts):
    """Return True if ``out_dir`` already holds this exact generation."""
    marker = out_dir / MARKER_NAME
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        same = info.get("scale") == scale and info.get("seed") == seed
        if same and info.get("counts", counts) != counts:
            raise FileExistsError(
                f"{out_dir} holds mini-DESED {scale!r}, seed {seed} with "
                f"{info['counts'].get('unlabeled')} unlabeled clips, not "
                f"{counts['unlabeled']}; use another folder"
            )
        if same:
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


def generate_mini_desed(
    out_dir, scale="tiny", seed=0, progress=None, unlabeled=None
):
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
        ``"tiny"`` (about 100 clips, seconds), ``"small"`` (1500 clips,
        about two minutes) or ``"ssl"`` (label-scarce: 100 strong
        synthetic, 56 weak and 1200 unlabeled training clips, 100
        synthetic validation clips for selection, 320 validation clips
        for reporting); see ``SCALES``.
    seed : int
        Non-negative random seed.
    progress : bool or None
        Show a progress bar over clips; ``None`` shows it only on a TTY.
    unlabeled : int, optional
        Number of unlabeled clips instead of the scale's (e.g. 8000 for a
        pretraining pool). The labelled subsets keep their size and their
        files, byte for byte (each subset draws from its own seed).

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
    counts = dict(SCALES[scale])
    if unlabeled is not None:
        if isinstance(unlabeled, bool) or int(unlabeled) != unlabeled:
            raise TypeError(f"unlabeled must be an int, got {unlabeled!r}")
        if unlabeled < 1:
            raise ValueError(f"unlabeled must be positive, got {unlabeled}")
        counts["unlabeled"] = int(unlabeled)
    if _check_out_dir(out_dir, scale, seed, counts):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "README.txt", _README.format(scale=scale, seed=seed))
    # An incomplete marker claims the folder, so a rerun may overwrite it.
    write_text(out_dir / MARKER_NAME, _marker(scale, seed, counts, False))

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
        ebr = EBR_DB["synthetic" if synthetic else "real"]
        audio_dir = out_dir / layout.audio
        audio_dir.mkdir(parents=True, exist_ok=True)
        strong, weak, durations = [], [], []
        for i, name in enumerate(names):
            rng = _clip_rng(seed, subset_index, i)
            length_ms = int(lengths[i])
            events = _plan_events(rng, length_ms, int(n_events[i]), forced[i])
            audio = render_clip(rng, length_ms, events, ebr, SAMPLE_RATE)
            write_wav(audio_dir / name, audio, SAMPLE_RATE)
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
        write_text(out_dir / path, "\n".join(rows) + "\n")
        if layout.durations is not None:
            text = "\n".join(["filename\tduration"] + durations) + "\n"
            write_text(out_dir / layout.durations, text)
    bar.close()
    write_text(out_dir / MARKER_NAME, _marker(scale, seed, counts, True))
    return out_dir
