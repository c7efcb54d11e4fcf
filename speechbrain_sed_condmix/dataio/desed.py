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

import csv
import hashlib
import json
import logging
import math
import os
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from speechbrain_sed_condmix.dataio.layout import (
    DESED_CLASSES,
    DESED_LAYOUT,
    subset_layout,
)

logger = logging.getLogger(__name__)

#: The subsets prepared by default (all of DESED_LAYOUT).
DEFAULT_SUBSETS = tuple(layout.name for layout in DESED_LAYOUT)

#: Name of the file that records a finished preparation.
MARKER_NAME = "desed_prepare.json"
#: Placeholder in manifest paths, replaced by the cache folder when loading.
CACHE_PLACEHOLDER = "{cache_root}"
_MARKER_VERSION = 1


@dataclass(frozen=True)
class DataProblem:
    """One problem found in the input data.

    Arguments
    ---------
    file : str
        The file at fault (a TSV or an audio file, or a missing folder).
    line : int or None
        1-based line number in a TSV (the header is line 1), if any.
    reason : str
        What is wrong.
    """

    file: str
    line: int | None
    reason: str

    def __str__(self):
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


class DesedDataError(ValueError):
    """Raised once with every problem found in the dataset.

    Arguments
    ---------
    problems : list of DataProblem
        All the problems found.

    Example
    -------
    >>> err = DesedDataError([DataProblem("weak.tsv", 3, "empty labels")])
    >>> print(err)
    1 problem(s) found in the data:
      weak.tsv:3: empty labels
    """

    def __init__(self, problems):
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) found in the data:\n{lines}"
        )


@dataclass
class _Clip:
    """A clip as read from the metadata (internal)."""

    filename: str
    source: Path
    duration: float
    events: list
    labels: list


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
    >>> from speechbrain_sed_condmix.dataio.synth import generate_mini_desed
    >>> root = getfixture("tmp_path")
    >>> data = generate_mini_desed(root / "data", scale="tiny")
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
    outputs = _read_marker(marker, options, fingerprint)
    if outputs is not None:
        logger.info("DESED already prepared in %s; skipping.", save_folder)
        return outputs

    clips, problems = _read_subsets(
        data_folder, subsets, set(classes), end_tolerance
    )
    if problems:
        if not skip_bad:
            raise DesedDataError(problems)
        logger.warning(
            "skip_bad: dropping %d bad row(s) or file(s):\n%s",
            len(problems),
            "\n".join(f"  {p}" for p in problems),
        )

    n_merged = 0
    for subset_clips in clips.values():
        for clip in subset_clips:
            clip.events, merged = merge_same_class_events(clip.events)
            n_merged += merged
    if n_merged:
        logger.info(
            "Merged %d overlapping or touching same-class event(s).", n_merged
        )

    cache = save_folder / "audio_16k"
    _resample_all(clips, cache, sample_rate, num_workers, progress)
    outputs = _write_outputs(
        clips, save_folder, weak_train_fraction, weak_split_seed
    )
    _atomic_write_text(
        marker,
        json.dumps(
            {
                "options": options,
                "fingerprint": fingerprint,
                "outputs": {k: str(v) for k, v in outputs.items()},
            },
            indent=2,
        ),
    )
    return outputs


def merge_same_class_events(events):
    """Merge events of the same class that overlap or touch.

    Arguments
    ---------
    events : list of tuple
        ``(onset, offset, label)`` triples.

    Returns
    -------
    merged : list of tuple
        Events sorted by onset, with same-class overlaps merged.
    n_merged : int
        How many events were absorbed into another.

    Example
    -------
    >>> merge_same_class_events([(0, 1, "a"), (1, 2, "a"), (0.5, 3, "b")])
    ([(0, 2, 'a'), (0.5, 3, 'b')], 1)
    """
    by_class = defaultdict(list)
    for onset, offset, label in events:
        by_class[label].append((onset, offset))
    merged, n_merged = [], 0
    for label, spans in by_class.items():
        spans.sort()
        current = list(spans[0])
        for onset, offset in spans[1:]:
            if onset <= current[1]:
                current[1] = max(current[1], offset)
                n_merged += 1
            else:
                merged.append((current[0], current[1], label))
                current = [onset, offset]
        merged.append((current[0], current[1], label))
    merged.sort(key=lambda event: (event[0], event[2]))
    return merged, n_merged


def load_manifest(path):
    """Read a manifest written by :func:`prepare_desed`.

    Arguments
    ---------
    path : str or Path
        Path of a ``<subset>.json`` manifest.

    Returns
    -------
    dict
        ``{clip_id: entry}`` with the cache placeholder resolved.

    Example
    -------
    >>> import json
    >>> p = getfixture("tmp_path") / "m.json"
    >>> _ = p.write_text(json.dumps({"a": {"wav": "{cache_root}/x/a.wav"}}))
    >>> load_manifest(p)["a"]["wav"].endswith("audio_16k/x/a.wav")
    True
    """
    path = Path(path)
    cache_root = str(path.parent / "audio_16k")
    data = json.loads(path.read_text())
    for entry in data.values():
        entry["wav"] = entry["wav"].replace(CACHE_PLACEHOLDER, cache_root)
    return data


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
            clips[name] = _check_unlabeled(rows, audio_dir, infos, problems)
        elif layout.kind == "weak":
            clips[name] = _check_weak(tsv, audio_dir, classes, infos, problems)
        else:
            clips[name] = _check_strong(
                tsv, audio_dir, classes, end_tolerance, infos, problems
            )
    return clips, problems


def _audio_info(path, infos, problems, tsv=None, line=None):
    """Return the clip's duration, or None (with a problem) if unusable."""
    if path in infos:
        return infos[path]
    duration = None
    if not path.is_file():
        where = str(tsv) if tsv is not None else str(path)
        problems.append(
            DataProblem(where, line, f"audio file not found: {path}")
        )
    else:
        try:
            info = sf.info(str(path))
            if info.frames == 0:
                problems.append(DataProblem(str(path), None, "empty audio"))
            else:
                duration = info.frames / info.samplerate
        except Exception as err:  # soundfile raises several error types
            message = str(err).splitlines()[0] if str(err) else type(err)
            problems.append(
                DataProblem(str(path), None, f"unreadable audio ({message})")
            )
    infos[path] = duration
    return duration


def _read_tsv(tsv, required, problems):
    """Yield ``(line_number, row_dict)``; report a bad header."""
    with open(tsv, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or not set(required) <= set(header):
            problems.append(
                DataProblem(
                    str(tsv),
                    1,
                    f"header {header} lacks columns {list(required)}",
                )
            )
            return
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines carry nothing
            line = reader.line_num
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            yield line, dict(zip(header, (cell.strip() for cell in row)))


def _check_unlabeled(rows, audio_dir, infos, problems):
    clips = []
    for _, filename in rows:
        source = audio_dir / filename
        duration = _audio_info(source, infos, problems)
        if duration is not None:
            clips.append(_Clip(filename, source, duration, [], []))
    return clips


def _check_weak(tsv, audio_dir, classes, infos, problems):
    clips, seen = [], {}
    for line, row in _read_tsv(tsv, ("filename", "event_labels"), problems):
        filename = row["filename"]
        bad = []
        if not filename:
            bad.append("empty filename")
        elif filename in seen:
            bad.append(f"duplicate of line {seen[filename]}")
        labels = [lab.strip() for lab in row["event_labels"].split(",")]
        labels = [lab for lab in labels if lab]
        if not labels:
            bad.append("empty weak labels")
        unknown = [lab for lab in labels if lab not in classes]
        if unknown:
            bad.append(f"unknown label(s) {unknown}")
        problems.extend(DataProblem(str(tsv), line, r) for r in bad)
        if not filename:
            continue
        seen.setdefault(filename, line)
        duration = _audio_info(audio_dir / filename, infos, problems, tsv, line)
        if bad or duration is None:
            continue
        clips.append(
            _Clip(
                filename,
                audio_dir / filename,
                duration,
                [],
                sorted(set(labels)),
            )
        )
    return clips


def _check_strong(tsv, audio_dir, classes, end_tolerance, infos, problems):
    required = ("filename", "onset", "offset", "event_label")
    events = defaultdict(list)
    order, seen_rows, has_bad = [], {}, set()
    for line, row in _read_tsv(tsv, required, problems):
        filename = row["filename"]
        if not filename:
            problems.append(DataProblem(str(tsv), line, "empty filename"))
            continue
        if filename not in events:
            order.append(filename)
            events[filename] = []
        duration = _audio_info(audio_dir / filename, infos, problems, tsv, line)
        label = row["event_label"]
        if not label and not row["onset"] and not row["offset"]:
            continue  # a clip without events
        reasons = _event_problems(row, classes, duration, end_tolerance)
        key = (filename, row["onset"], row["offset"], label)
        if key in seen_rows:
            reasons.append(f"duplicate of line {seen_rows[key]}")
        seen_rows.setdefault(key, line)
        if reasons:
            has_bad.add(filename)
            problems.extend(DataProblem(str(tsv), line, r) for r in reasons)
            continue
        events[filename].append(
            (float(row["onset"]), float(row["offset"]), label)
        )
    clips = []
    for filename in order:
        duration = infos.get(audio_dir / filename)
        if duration is None:
            continue
        if filename in has_bad and not events[filename]:
            continue  # every event row was bad: no honest label remains
        labels = sorted({label for _, _, label in events[filename]})
        clips.append(
            _Clip(
                filename,
                audio_dir / filename,
                duration,
                events[filename],
                labels,
            )
        )
    return clips


def _event_problems(row, classes, duration, end_tolerance):
    reasons = []
    label = row["event_label"]
    if not label:
        reasons.append("empty event_label with a time given")
    elif label not in classes:
        reasons.append(f"unknown label {label!r}")
    try:
        onset, offset = float(row["onset"]), float(row["offset"])
    except ValueError:
        reasons.append(
            f"onset/offset not numbers ({row['onset']!r}, {row['offset']!r})"
        )
        return reasons
    if not (math.isfinite(onset) and math.isfinite(offset)):
        reasons.append("onset/offset not finite")
        return reasons
    if onset < 0 or offset < 0:
        reasons.append(f"negative time ({onset}, {offset})")
    if onset >= offset:
        reasons.append(f"onset {onset} >= offset {offset}")
    if duration is not None and offset > duration + end_tolerance:
        reasons.append(
            f"event ends at {offset} s, past the clip's end ({duration:.3f} s)"
        )
    return reasons


# --------------------------------------------------------------------------
# Resampling into the cache


def _resample_all(clips, cache, sample_rate, num_workers, progress):
    jobs = []
    for name, subset_clips in clips.items():
        for clip in subset_clips:
            target = cache / name / clip.filename
            if not target.is_file():
                jobs.append((str(clip.source), str(target), sample_rate))
    if not jobs:
        return
    bar = tqdm(
        total=len(jobs),
        desc="Resampling to 16 kHz",
        disable=not progress,
        unit="clip",
    )
    with bar:
        if num_workers > 1:
            with ProcessPoolExecutor(
                num_workers, initializer=_one_thread_per_worker
            ) as pool:
                for _ in pool.map(_resample_one, jobs, chunksize=8):
                    bar.update()
        else:
            for job in jobs:
                _resample_one(job)
                bar.update()


def _one_thread_per_worker():
    # Workers run side by side: one thread each avoids oversubscription.
    # Only worker processes call this, so the caller keeps its threads.
    import torch

    torch.set_num_threads(1)


def _resample_one(job):
    # torch is imported here so that checks and no-op reruns stay fast.
    import torch
    import torchaudio

    source, target, sample_rate = job
    audio, sr = sf.read(source, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio.mean(axis=1))
    if sr != sample_rate:
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name, then rename: a killed run leaves no
    # partial file under the final name.
    fd, tmp = tempfile.mkstemp(
        suffix=".wav", prefix=".part-", dir=target.parent
    )
    os.close(fd)
    try:
        sf.write(tmp, wav.numpy(), sample_rate, subtype="PCM_16")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------
# Outputs


def _write_outputs(clips, save_folder, weak_train_fraction, weak_split_seed):
    outputs = {}
    for name, subset_clips in clips.items():
        layout = subset_layout(name)
        entries = {
            Path(clip.filename).stem: {
                "wav": f"{CACHE_PLACEHOLDER}/{name}/{clip.filename}",
                "duration": round(clip.duration, 6),
                "kind": layout.kind,
                "events": [list(event) for event in clip.events],
                "labels": clip.labels,
            }
            for clip in subset_clips
        }
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
            _atomic_write_text(path, json.dumps(split_entries, indent=1))
            outputs[split] = path
        if layout.durations is not None:
            _write_eval_tsvs(subset_clips, save_folder, name)
    return outputs


def _write_eval_tsvs(clips, save_folder, name):
    rows = []
    for clip in clips:
        if clip.events:
            rows.extend((clip.filename, *event) for event in clip.events)
        else:
            rows.append((clip.filename, np.nan, np.nan, ""))
    gt = pd.DataFrame(
        rows, columns=["filename", "onset", "offset", "event_label"]
    )
    durations = pd.DataFrame(
        [(clip.filename, round(clip.duration, 6)) for clip in clips],
        columns=["filename", "duration"],
    )
    _atomic_write_text(
        save_folder / f"{name}_gt.tsv", gt.to_csv(sep="\t", index=False)
    )
    _atomic_write_text(
        save_folder / f"{name}_durations.tsv",
        durations.to_csv(sep="\t", index=False),
    )


def _atomic_write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fingerprint(data_folder, subsets):
    """Cheap summary of the input: metadata stats and audio file names."""
    digest = hashlib.sha256()
    for name in subsets:
        layout = subset_layout(name)
        for rel in (layout.metadata,):
            if rel is None:
                continue
            path = data_folder / rel
            if path.is_file():
                stat = path.stat()
                digest.update(
                    f"{rel}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                )
        audio_dir = data_folder / layout.audio
        if audio_dir.is_dir():
            names = sorted(
                entry.name
                for entry in os.scandir(audio_dir)
                if entry.name.endswith(".wav")
            )
            digest.update(f"{layout.audio}:{len(names)}".encode())
            digest.update("\n".join(names).encode())
    return digest.hexdigest()


def _read_marker(marker, options, fingerprint):
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("options") != options:
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    outputs = {k: Path(v) for k, v in record.get("outputs", {}).items()}
    if not outputs or not all(p.is_file() for p in outputs.values()):
        return None
    return outputs
