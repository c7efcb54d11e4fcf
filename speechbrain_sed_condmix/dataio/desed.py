"""Preparation of DESED (or generated mini-DESED) for SpeechBrain.

``prepare_desed`` checks a dataset laid out like DESED, resamples its audio
once to 16 kHz mono into a cache, and writes one SpeechBrain JSON manifest per
subset, plus ground-truth and durations TSVs for the evaluation subsets.

Every problem in the input is gathered in one pass and reported together in a
single :class:`DesedDataError` that names the file, the line and the reason,
so that a broken download is fixed in one go rather than one error at a time.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from speechbrain_sed_condmix.dataio.layout import (
    DESED_CLASSES,
    DESED_LAYOUT,
    subset_layout,
)
from speechbrain_sed_condmix.dataio.prep import (
    CACHE_DIR,
    CACHE_PLACEHOLDER,
    DataProblem,
    SEDDataError,
    atomic_write_text,
    check_strong,
    check_unlabeled,
    check_weak,
    digest_path,
    load_manifest,
    manifest_entries,
    merge_clip_events,
    merge_same_class_events,
    read_marker,
    report_problems,
    resample_all,
    write_eval_tsvs,
    write_marker,
)

__all__ = [
    "CACHE_PLACEHOLDER",
    "DEFAULT_SUBSETS",
    "DataProblem",
    "DesedDataError",
    "load_manifest",
    "merge_same_class_events",
    "prepare_desed",
]

logger = logging.getLogger(__name__)

#: The subsets prepared by default (all of DESED_LAYOUT).
DEFAULT_SUBSETS = tuple(layout.name for layout in DESED_LAYOUT)

#: Name of the file that records a finished preparation.
MARKER_NAME = "desed_prepare.json"
_MARKER_VERSION = 1

#: The error ``prepare_desed`` raises (the generic ``SEDDataError``).
DesedDataError = SEDDataError


def prepare_desed(
    data_folder,
    save_folder,
    subsets=DEFAULT_SUBSETS,
    classes=DESED_CLASSES,
    sample_rate=16000,
    weak_train_fraction=0.9,
    weak_split_seed=42,
    skip_bad=False,
    end_tolerance=0.01,
    num_workers=1,
    progress=True,
):
    """Check DESED, resample it once, and write SpeechBrain manifests.

    Outputs in ``save_folder``:

    - ``audio_16k/<subset>/<file>.wav``: the mono, resampled cache;
    - ``<subset>.json`` manifests, with the weak set split into
      ``weak_train.json`` and ``weak_val.json`` (``DataFrame.sample`` with
      ``frac=0.9`` and ``random_state=42``, as in the DCASE recipes);
    - ``<subset>_gt.tsv`` and ``<subset>_durations.tsv`` for the evaluation
      subsets (``synth_val`` and ``validation``);
    - ``desed_prepare.json``, written last, which makes a second call with
      the same options on unchanged data a fast no-op.

    Every cache file is written to a temporary name and renamed, so an
    interrupted run never leaves a half-written file that a later run
    trusts. Same-class events that overlap or touch are merged (sed_scores_eval
    rejects them) and the count is logged. Clips listed with an empty label
    are kept as clips without events.

    Arguments
    ---------
    data_folder : str or Path
        Root of a DESED (or mini-DESED) dataset.
    save_folder : str or Path
        Where the cache, manifests and TSVs go.
    subsets : sequence of str
        Subsets to prepare (names of ``DESED_LAYOUT``).
    classes : sequence of str
        Allowed event labels.
    sample_rate : int
        Target sample rate of the cache.
    weak_train_fraction : float
        Fraction of the weak set used for training; the rest validates.
    weak_split_seed : int
        Random state of the weak split.
    skip_bad : bool
        If True, bad rows and files are dropped with a warning that lists
        them, instead of raising. A clip all of whose rows are bad is dropped.
        Missing folders and metadata files still raise.
    end_tolerance : float
        Seconds by which an event may end past the clip's end (rounding).
    num_workers : int
        Processes used to resample.
    progress : bool
        Show a progress bar while resampling.

    Returns
    -------
    dict
        Manifest name to path, e.g. ``{"weak_train": Path(...), ...}``.

    Raises
    ------
    DesedDataError
        Listing every problem found (unless ``skip_bad`` drops them).

    Example
    -------
    >>> data = getfixture("mini_desed_tiny")  # generated once (conftest.py)
    >>> root = getfixture("tmp_path")
    >>> out = prepare_desed(data, root / "prep", progress=False)
    >>> sorted(out)[:3]
    ['strong_train', 'synth_train', 'synth_val']
    """
    data_folder = Path(data_folder)
    save_folder = Path(save_folder)
    subsets = list(subsets)
    for name in subsets:
        subset_layout(name)  # raises on an unknown subset name
    options = {
        "version": _MARKER_VERSION,
        "data_folder": str(data_folder.resolve()),
        "subsets": subsets,
        "classes": list(classes),
        "sample_rate": int(sample_rate),
        "weak_train_fraction": float(weak_train_fraction),
        "weak_split_seed": int(weak_split_seed),
        "skip_bad": bool(skip_bad),
        "end_tolerance": float(end_tolerance),
    }
    marker = save_folder / MARKER_NAME
    fingerprint = _fingerprint(data_folder, subsets)
    outputs = read_marker(marker, options, fingerprint)
    if outputs is not None:
        logger.info("DESED already prepared in %s; skipping.", save_folder)
        return outputs

    clips, problems = _read_subsets(
        data_folder, subsets, set(classes), end_tolerance
    )
    report_problems(problems, skip_bad)
    merge_clip_events(clips)
    resample_all(
        clips, save_folder / CACHE_DIR, sample_rate, num_workers, progress
    )
    outputs = _write_outputs(
        clips, save_folder, weak_train_fraction, weak_split_seed
    )
    write_marker(marker, options, fingerprint, outputs)
    return outputs


# --------------------------------------------------------------------------
# Reading and checking the metadata


def _read_subsets(data_folder, subsets, classes, end_tolerance):
    clips, problems = {}, []
    for name in subsets:
        layout = subset_layout(name)
        audio_dir = data_folder / layout.audio
        if not audio_dir.is_dir():
            problems.append(
                DataProblem(str(audio_dir), None, "audio folder not found")
            )
            continue
        if layout.metadata is not None:
            tsv = data_folder / layout.metadata
            if not tsv.is_file():
                problems.append(
                    DataProblem(str(tsv), None, "metadata file not found")
                )
                continue
        infos = {}
        if layout.kind == "unlabeled":
            rows = [
                (None, path.name) for path in sorted(audio_dir.glob("*.wav"))
            ]
            if not rows:
                problems.append(
                    DataProblem(str(audio_dir), None, "no .wav files")
                )
            clips[name] = check_unlabeled(rows, audio_dir, infos, problems)
        elif layout.kind == "weak":
            clips[name] = check_weak(tsv, audio_dir, classes, infos, problems)
        else:
            clips[name] = check_strong(
                tsv, audio_dir, classes, end_tolerance, infos, problems
            )
    return clips, problems


# --------------------------------------------------------------------------
# Outputs


def _write_outputs(clips, save_folder, weak_train_fraction, weak_split_seed):
    outputs = {}
    for name, subset_clips in clips.items():
        layout = subset_layout(name)
        entries = manifest_entries(subset_clips, name, layout.kind)
        if layout.kind == "weak":
            ids = pd.Series(list(entries))
            train_ids = set(
                ids.sample(
                    frac=weak_train_fraction, random_state=weak_split_seed
                )
            )
            splits = {
                "weak_train": {
                    k: v for k, v in entries.items() if k in train_ids
                },
                "weak_val": {
                    k: v for k, v in entries.items() if k not in train_ids
                },
            }
        else:
            splits = {name: entries}
        for split, split_entries in splits.items():
            path = save_folder / f"{split}.json"
            atomic_write_text(path, json.dumps(split_entries, indent=1))
            outputs[split] = path
        if layout.durations is not None:
            write_eval_tsvs(subset_clips, save_folder, name)
    return outputs


def _fingerprint(data_folder, subsets):
    """Cheap summary of the input: metadata stats and audio file names."""
    digest = hashlib.sha256()
    for name in subsets:
        layout = subset_layout(name)
        if layout.metadata is not None:
            metadata = data_folder / layout.metadata
            if metadata.is_file():
                digest_path(digest, layout.metadata, metadata)
        audio_dir = data_folder / layout.audio
        if audio_dir.is_dir():
            digest_path(digest, layout.audio, audio_dir, suffix=".wav")
    return digest.hexdigest()
