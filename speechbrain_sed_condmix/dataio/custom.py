"""Preparation of any sound-event dataset in the generic TSV format.

The format is that of the DCASE Task 4 metadata, with your own classes:

* strong TSV, header ``filename onset offset event_label``: one row per
  event (times in seconds); a row with only a filename is a clip without
  events;
* weak TSV, header ``filename event_labels``: the clip's labels separated
  by commas;
* unlabeled audio: a folder (every audio file in it) or a list file with
  one file name per line;
* durations TSV (optional), header ``filename duration``; without it the
  durations are read from the audio.

Each subset is a dict: ``{"tsv": ..., "audio": ..., "durations": ...}``
(``durations`` optional; ``{"audio": folder}`` or ``{"audio": folder,
"list": file}`` for unlabeled audio). Audio in any format soundfile reads,
at any sample rate and channel count, is resampled and downmixed once.

``prepare_sed_dataset`` writes the same outputs as ``prepare_desed``:
manifests ``train_strong.json``, ``train_weak.json``, ``unlabeled.json``,
``valid.json``, ``test.json`` (those that apply), and ``valid_gt.tsv``,
``valid_durations.tsv``, ``test_gt.tsv``, ``test_durations.tsv``. Only a
strong or weak training set is required:

* without ``valid_strong``, ``valid_fraction`` of the strong training clips
  are held out for validation (with no strong training set, the test set
  validates too, which makes the checkpoint choice optimistic: a warning
  says so);
* without ``test_strong``, the validation set is also the test set.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from speechbrain_sed_condmix.dataio.prep import (
    CACHE_DIR,
    DataProblem,
    SEDDataError,
    atomic_write_text,
    check_strong,
    check_unlabeled,
    check_weak,
    digest_path,
    manifest_entries,
    merge_clip_events,
    read_marker,
    read_tsv,
    report_problems,
    resample_all,
    write_eval_tsvs,
    write_marker,
)

logger = logging.getLogger(__name__)

#: Name of the file that records a finished preparation.
MARKER_NAME = "sed_prepare.json"
#: The class list the preparation used, one per line.
CLASSES_FILE = "classes.txt"
#: Audio files taken from an unlabeled folder.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
_MARKER_VERSION = 1

#: The subsets ``prepare_sed_dataset`` accepts, with their label kind.
SUBSET_KINDS = {
    "train_strong": "strong",
    "train_weak": "weak",
    "train_unlabeled": "unlabeled",
    "valid_strong": "strong",
    "test_strong": "strong",
}

__all__ = ["SEDDataError", "load_classes", "prepare_sed_dataset"]


def load_classes(classes=None, classes_file=None):
    """The class list, from a list or a text file (one class per line).

    Arguments
    ---------
    classes : sequence of str, optional
        The classes, in output order.
    classes_file : str or Path, optional
        A file with one class per line (blank lines and ``#`` comments are
        skipped). Used when ``classes`` is not given.

    Returns
    -------
    list of str
        The classes.

    Example
    -------
    >>> load_classes(["b", "a"])
    ['b', 'a']
    >>> p = getfixture("tmp_path") / "classes.txt"
    >>> _ = p.write_text("bark\\n# a comment\\n\\nchime\\n")
    >>> load_classes(classes_file=p)
    ['bark', 'chime']
    """
    if classes is None and classes_file is None:
        raise ValueError("give a class list (classes) or a classes_file")
    if classes is None:
        lines = Path(classes_file).read_text().splitlines()
        classes = [c.strip() for c in lines]
        classes = [c for c in classes if c and not c.startswith("#")]
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError(f"empty class list ({classes_file or classes})")
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names {duplicates}")
    return classes


def prepare_sed_dataset(
    save_folder,
    train_strong=None,
    train_weak=None,
    train_unlabeled=None,
    valid_strong=None,
    test_strong=None,
    classes=None,
    classes_file=None,
    sample_rate=16000,
    audio_duration=None,
    valid_fraction=0.1,
    split_seed=42,
    skip_bad=False,
    end_tolerance=0.01,
    num_workers=1,
    progress=True,
):
    """Check a dataset in the generic format, resample it, write manifests.

    See the module docstring for the format and the outputs.

    Arguments
    ---------
    save_folder : str or Path
        Where the cache, manifests and TSVs go.
    train_strong, train_weak, valid_strong, test_strong : dict, optional
        ``{"tsv": path, "audio": folder}``, with an optional
        ``"durations"`` TSV. At least one of ``train_strong`` and
        ``train_weak`` is required.
    train_unlabeled : dict, optional
        ``{"audio": folder}``, with an optional ``"list"`` file of names.
    classes : sequence of str, optional
        The event classes, in the model's output order.
    classes_file : str or Path, optional
        A file with one class per line, used when ``classes`` is None.
    sample_rate : int
        Target sample rate of the cache (the model's).
    audio_duration : float, optional
        The model's clip length: a validation or test clip longer than
        this is an error (its tail would never be scored).
    valid_fraction : float
        Fraction of ``train_strong`` held out when no ``valid_strong``.
    split_seed : int
        Seed of that hold-out split.
    skip_bad : bool
        Drop bad rows and files with a warning instead of raising.
    end_tolerance : float
        Seconds by which an event may end past the clip's end.
    num_workers : int
        Processes used to resample.
    progress : bool
        Show a progress bar while resampling.

    Returns
    -------
    dict
        Manifest name to path, e.g. ``{"train_strong": Path(...), ...}``.

    Raises
    ------
    SEDDataError
        Listing every problem found (unless ``skip_bad`` drops them).

    Example
    -------
    >>> import soundfile as sf
    >>> root = getfixture("tmp_path")
    >>> (root / "audio").mkdir()
    >>> for name in ("a", "b", "c"):
    ...     sf.write(root / "audio" / f"{name}.wav", np.zeros(8000), 8000)
    >>> _ = (root / "strong.tsv").write_text(
    ...     "filename\\tonset\\toffset\\tevent_label\\n"
    ...     "a.wav\\t0.1\\t0.5\\tknock\\nb.wav\\t0.2\\t0.9\\tknock\\nc.wav\\n")
    >>> out = prepare_sed_dataset(
    ...     root / "prep", train_strong={"tsv": root / "strong.tsv",
    ...     "audio": root / "audio"}, classes=["knock"],
    ...     valid_fraction=0.34, progress=False)
    >>> sorted(out)
    ['test', 'train_strong', 'valid']
    """
    save_folder = Path(save_folder)
    classes = load_classes(classes, classes_file)
    given = {
        "train_strong": train_strong,
        "train_weak": train_weak,
        "train_unlabeled": train_unlabeled,
        "valid_strong": valid_strong,
        "test_strong": test_strong,
    }
    # None, or a dict of Nones (a YAML placeholder), means "not given".
    given = {
        k: _subset_spec(k, v)
        for k, v in given.items()
        if v and not (isinstance(v, dict) and set(v.values()) == {None})
    }
    if "train_strong" not in given and "train_weak" not in given:
        raise ValueError(
            "prepare_sed_dataset needs a strong (train_strong) or weak "
            "(train_weak) training set"
        )
    if not ({"train_strong", "valid_strong", "test_strong"} & set(given)):
        raise ValueError(
            "evaluation needs strong labels: give valid_strong or "
            "test_strong (or train_strong to hold validation clips out of)"
        )
    options = {
        "version": _MARKER_VERSION,
        "subsets": {
            name: {k: str(Path(v).resolve()) for k, v in spec.items()}
            for name, spec in given.items()
        },
        "classes": classes,
        "sample_rate": int(sample_rate),
        "audio_duration": audio_duration,
        "valid_fraction": float(valid_fraction),
        "split_seed": int(split_seed),
        "skip_bad": bool(skip_bad),
        "end_tolerance": float(end_tolerance),
    }
    marker = save_folder / MARKER_NAME
    fingerprint = _fingerprint(given)
    outputs = read_marker(marker, options, fingerprint)
    if outputs is not None:
        logger.info("Dataset already prepared in %s; skipping.", save_folder)
        return outputs

    clips, problems = {}, []
    for name, spec in given.items():
        clips[name] = _read_subset(
            name, spec, set(classes), end_tolerance, problems
        )
    if audio_duration is not None:
        _check_eval_lengths(clips, given, audio_duration, problems)
    report_problems(problems, skip_bad)
    merge_clip_events(clips)
    resample_all(
        clips, save_folder / CACHE_DIR, sample_rate, num_workers, progress
    )
    outputs = _write_outputs(clips, save_folder, valid_fraction, split_seed)
    atomic_write_text(save_folder / CLASSES_FILE, "\n".join(classes) + "\n")
    write_marker(marker, options, fingerprint, outputs)
    return outputs


def _subset_spec(name, spec):
    if name not in SUBSET_KINDS:
        raise ValueError(f"unknown subset {name!r}")
    if isinstance(spec, (str, os.PathLike)) and name == "train_unlabeled":
        spec = {"audio": spec}
    if not isinstance(spec, dict) or "audio" not in spec:
        raise ValueError(
            f"{name}: expected a dict with 'audio' (and 'tsv' for labelled "
            f"sets), got {spec!r}"
        )
    spec = {k: v for k, v in spec.items() if v is not None}
    allowed = {"audio", "list"} if name == "train_unlabeled" else None
    if allowed is None:
        allowed = {"audio", "tsv", "durations"}
        if "tsv" not in spec:
            raise ValueError(f"{name}: 'tsv' (the annotation file) missing")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {unknown}")
    return spec


def _read_subset(name, spec, classes, end_tolerance, problems):
    kind = SUBSET_KINDS[name]
    audio_dir = Path(spec["audio"])
    if not audio_dir.is_dir():
        problems.append(
            DataProblem(str(audio_dir), None, "audio folder not found")
        )
        return []
    for key in ("tsv", "list", "durations"):
        if key in spec and not Path(spec[key]).is_file():
            problems.append(
                DataProblem(str(spec[key]), None, f"{key} file not found")
            )
            return []
    infos = {}
    if kind == "unlabeled":
        if "list" in spec:
            lines = Path(spec["list"]).read_text().splitlines()
            names = [n.strip() for n in lines if n.strip()]
        else:
            names = sorted(
                p.name
                for p in audio_dir.iterdir()
                if p.suffix.lower() in AUDIO_SUFFIXES
            )
        if not names:
            problems.append(DataProblem(str(audio_dir), None, "no audio"))
        rows = [(None, n) for n in names]
        clips = check_unlabeled(rows, audio_dir, infos, problems)
    elif kind == "weak":
        clips = check_weak(spec["tsv"], audio_dir, classes, infos, problems)
    else:
        clips = check_strong(
            spec["tsv"], audio_dir, classes, end_tolerance, infos, problems
        )
    if "durations" in spec:
        _apply_durations(Path(spec["durations"]), clips, problems)
    return clips


def _apply_durations(tsv, clips, problems):
    """Replace the durations read from the audio by the listed ones."""
    by_name = {clip.filename: clip for clip in clips}
    for line, row in read_tsv(tsv, ("filename", "duration"), problems):
        clip = by_name.get(row["filename"])
        if clip is None:
            continue  # e.g. a clip dropped for another problem
        try:
            duration = float(row["duration"])
        except ValueError:
            duration = float("nan")
        if not duration > 0 or not np.isfinite(duration):
            problems.append(
                DataProblem(str(tsv), line, f"bad duration {row['duration']!r}")
            )
            continue
        late = [e for e in clip.events if e[1] > duration + 0.01]
        if late:
            problems.append(
                DataProblem(
                    str(tsv),
                    line,
                    f"duration {duration} s ends before the event {late[0]}",
                )
            )
            continue
        clip.duration = duration


def _check_eval_lengths(clips, given, audio_duration, problems):
    # Evaluation clips are cut to the model's clip length: the events of a
    # longer clip's tail would count as misses.
    for name in ("valid_strong", "test_strong"):
        for clip in clips.get(name, []):
            if clip.duration > float(audio_duration) + 0.01:
                problems.append(
                    DataProblem(
                        str(Path(given[name]["audio"]) / clip.filename),
                        None,
                        f"{clip.duration:.3f} s long, more than the "
                        f"model's audio_duration ({audio_duration} s): cut "
                        "evaluation clips to that length",
                    )
                )


def _write_outputs(clips, save_folder, valid_fraction, split_seed):
    entries = {
        name: manifest_entries(subset_clips, name, SUBSET_KINDS[name])
        for name, subset_clips in clips.items()
    }
    evaluation = {}  # name -> (clips, manifest entries)
    if "valid_strong" in clips:
        evaluation["valid"] = (clips["valid_strong"], entries["valid_strong"])
    elif "train_strong" in clips:
        train = clips["train_strong"]
        rng = np.random.default_rng(split_seed)
        n_valid = max(1, int(round(valid_fraction * len(train))))
        if n_valid >= len(train):
            raise SEDDataError(
                [
                    DataProblem(
                        "train_strong",
                        None,
                        f"{len(train)} clip(s) are too few to hold out "
                        "validation clips: give valid_strong",
                    )
                ]
            )
        held = set(rng.choice(len(train), n_valid, replace=False).tolist())
        valid_clips = [c for i, c in enumerate(train) if i in held]
        keep = {Path(c.filename).stem for c in valid_clips}
        evaluation["valid"] = (
            valid_clips,
            {k: v for k, v in entries["train_strong"].items() if k in keep},
        )
        entries["train_strong"] = {
            k: v for k, v in entries["train_strong"].items() if k not in keep
        }
        logger.info(
            "No valid_strong: %d strong training clip(s) held out to validate.",
            n_valid,
        )
    if "test_strong" in clips:
        evaluation["test"] = (clips["test_strong"], entries["test_strong"])
    if "valid" not in evaluation:
        logger.warning(
            "No validation set: the test set also selects the checkpoint, "
            "so its scores are optimistic."
        )
        evaluation["valid"] = evaluation["test"]
    if "test" not in evaluation:
        logger.warning("No test set: the validation set is also tested.")
        evaluation["test"] = evaluation["valid"]

    outputs = {}
    names = {
        "train_strong": "train_strong",
        "train_weak": "train_weak",
        "train_unlabeled": "unlabeled",
    }
    for name, out_name in names.items():
        if name in entries:
            outputs[out_name] = _write_manifest(
                save_folder, out_name, entries[name]
            )
    for name, (eval_clips, eval_entries) in evaluation.items():
        outputs[name] = _write_manifest(save_folder, name, eval_entries)
        write_eval_tsvs(eval_clips, save_folder, name)
    return outputs


def _write_manifest(save_folder, name, entries):
    path = save_folder / f"{name}.json"
    atomic_write_text(path, json.dumps(entries, indent=1))
    return path


def _fingerprint(given):
    """Cheap summary of the input: file stats and audio folder listings."""
    digest = hashlib.sha256()
    for name, spec in sorted(given.items()):
        for key, value in sorted(spec.items()):
            digest_path(digest, f"{name}:{key}", value)
    return digest.hexdigest()
