"""Shared parts of dataset preparation: checks, resampling, outputs.

``prepare_desed`` (DESED layout) and ``prepare_sed_dataset`` (any dataset in
the generic TSV format) read their metadata with the same checks, gather
every problem into one :class:`SEDDataError`, resample and downmix the audio
once into a cache, and write the same manifests and evaluation TSVs.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import csv
import json
import logging
import math
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from speechbrain_sed_condmix.dataio.resample import (
    one_thread_per_worker,
    resample_file,
)

logger = logging.getLogger(__name__)

#: Placeholder in manifest paths, replaced by the cache folder when loading.
CACHE_PLACEHOLDER = "{cache_root}"
#: Folder of the resampled cache, next to the manifests.
CACHE_DIR = "audio_16k"


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


class SEDDataError(ValueError):
    """Raised once with every problem found in the dataset.

    ``DesedDataError`` is the same class (its historical name).

    Arguments
    ---------
    problems : list of DataProblem
        All the problems found.

    Example
    -------
    >>> err = SEDDataError([DataProblem("weak.tsv", 3, "empty labels")])
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
class Clip:
    """A clip as read from the metadata (internal)."""

    filename: str
    source: Path
    duration: float
    events: list
    labels: list


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
    """Read a manifest written by a ``prepare_*`` function.

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
    cache_root = str(path.parent / CACHE_DIR)
    data = json.loads(path.read_text())
    for entry in data.values():
        entry["wav"] = entry["wav"].replace(CACHE_PLACEHOLDER, cache_root)
    return data


def audio_info(path, infos, problems, tsv=None, line=None):
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
            elif (bad := non_finite_samples(path, info)) is not None:
                problems.append(DataProblem(str(path), None, bad))
            else:
                duration = info.frames / info.samplerate
        except Exception as err:  # soundfile raises several error types
            message = str(err).splitlines()[0] if str(err) else type(err)
            problems.append(
                DataProblem(str(path), None, f"unreadable audio ({message})")
            )
    infos[path] = duration
    return duration


def non_finite_samples(path, info=None):
    """Describe the NaN/Inf samples of an audio file, or None if none.

    Only floating-point files can hold them; integer PCM is not read. The
    check matters because the preparation's 16-bit cache would turn them
    into full-scale samples, which no later check can tell from audio.

    Arguments
    ---------
    path : str or Path
        The audio file.
    info : soundfile.SoundFile info, optional
        Its ``soundfile.info`` (read when not given).

    Returns
    -------
    str or None
        E.g. ``"3 NaN and 1 Inf sample(s) (first at 0.50 s)"``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "nan.wav"
    >>> wav = np.zeros(8000, dtype=np.float32)
    >>> wav[4000:4003] = np.nan
    >>> sf.write(path, wav, 8000, subtype="FLOAT")
    >>> non_finite_samples(path)
    '3 NaN sample(s) (first at 0.50 s)'
    """
    info = info if info is not None else sf.info(str(path))
    if info.subtype not in ("FLOAT", "DOUBLE"):
        return None
    n_nan = n_inf = 0
    first = None
    offset = 0
    # Blocks of about 10 s keep the memory small for long files.
    for block in sf.blocks(str(path), blocksize=info.samplerate * 10):
        nan, inf = np.isnan(block), np.isinf(block)
        bad = nan | inf
        if bad.any():
            rows = np.nonzero(bad.reshape(len(block), -1).any(axis=1))[0]
            if first is None:
                first = offset + int(rows[0])
            n_nan += int(nan.sum())
            n_inf += int(inf.sum())
        offset += len(block)
    if first is None:
        return None
    counts = [
        f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "Inf")) if n
    ]
    return (
        f"{' and '.join(counts)} sample(s) "
        f"(first at {first / info.samplerate:.2f} s)"
    )


def read_tsv(tsv, required, problems):
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


def check_unlabeled(rows, audio_dir, infos, problems):
    """Clips of an unlabeled list whose audio reads; others in problems."""
    clips = []
    for _, filename in rows:
        source = audio_dir / filename
        duration = audio_info(source, infos, problems)
        if duration is not None:
            clips.append(Clip(filename, source, duration, [], []))
    return clips


def check_weak(tsv, audio_dir, classes, infos, problems):
    """Clips of a weak-label TSV; bad rows and audio go to ``problems``."""
    clips, seen = [], {}
    for line, row in read_tsv(tsv, ("filename", "event_labels"), problems):
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
        duration = audio_info(audio_dir / filename, infos, problems, tsv, line)
        if bad or duration is None:
            continue
        clips.append(
            Clip(
                filename,
                audio_dir / filename,
                duration,
                [],
                sorted(set(labels)),
            )
        )
    return clips


def check_strong(tsv, audio_dir, classes, end_tolerance, infos, problems):
    """Clips of a strong-label TSV; bad rows and audio go to ``problems``."""
    required = ("filename", "onset", "offset", "event_label")
    events = defaultdict(list)
    order, seen_rows, has_bad = [], {}, set()
    for line, row in read_tsv(tsv, required, problems):
        filename = row["filename"]
        if not filename:
            problems.append(DataProblem(str(tsv), line, "empty filename"))
            continue
        if filename not in events:
            order.append(filename)
            events[filename] = []
        duration = audio_info(audio_dir / filename, infos, problems, tsv, line)
        label = row["event_label"]
        if not label and not row["onset"] and not row["offset"]:
            continue  # a clip without events
        reasons = event_problems(row, classes, duration, end_tolerance)
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
            Clip(
                filename,
                audio_dir / filename,
                duration,
                events[filename],
                labels,
            )
        )
    return clips


def event_problems(row, classes, duration, end_tolerance):
    """What is wrong with one strong-label row (an empty list: nothing)."""
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


def resample_all(clips, cache, sample_rate, num_workers, progress):
    """Resample every clip missing from the cache, with a progress bar."""
    jobs = []
    for name, subset_clips in clips.items():
        for clip in subset_clips:
            target = cache / name / cache_name(clip.filename)
            if not target.is_file():
                jobs.append((str(clip.source), str(target), sample_rate))
    if not jobs:
        return
    bar = tqdm(
        total=len(jobs),
        desc=f"Resampling to {sample_rate} Hz",
        disable=not progress,
        unit="clip",
    )
    with bar:
        if num_workers > 1:
            with ProcessPoolExecutor(
                num_workers, initializer=one_thread_per_worker
            ) as pool:
                for _ in pool.map(resample_file, jobs, chunksize=8):
                    bar.update()
        else:
            for job in jobs:
                resample_file(job)
                bar.update()


def digest_path(digest, label, path, suffix=None):
    """Add a cheap summary of ``path`` to a ``hashlib`` digest.

    A file adds ``label``, its size and its modification time; a folder
    adds ``label``, the number and the names of its entries (those ending
    in ``suffix`` when given); a missing path adds nothing. The
    preparations use it to tell whether their input changed.

    Arguments
    ---------
    digest : hashlib hash object
        Updated in place.
    label : str
        Names the path in the digest.
    path : str or Path
        A file or a folder.
    suffix : str, optional
        Only count folder entries with this ending.

    Example
    -------
    >>> import hashlib
    >>> root = getfixture("tmp_path")
    >>> _ = (root / "a.wav").write_bytes(b"")
    >>> one, two = hashlib.sha256(), hashlib.sha256()
    >>> digest_path(one, "audio", root)
    >>> digest_path(two, "audio", root, suffix=".flac")
    >>> one.hexdigest() == two.hexdigest()
    False
    """
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        digest.update(f"{label}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    elif path.is_dir():
        names = sorted(
            entry.name
            for entry in os.scandir(path)
            if suffix is None or entry.name.endswith(suffix)
        )
        digest.update(f"{label}:{len(names)}".encode())
        digest.update("\n".join(names).encode())


def cache_name(filename):
    """Name of a clip's file in the cache: always a ``.wav``.

    Example
    -------
    >>> cache_name("a.flac"), cache_name("b.wav")
    ('a.wav', 'b.wav')
    """
    return Path(filename).with_suffix(".wav").name


def manifest_entries(clips, subset, kind):
    """Manifest entries of one subset's clips, keyed by file stem.

    Arguments
    ---------
    clips : list of Clip
        The subset's clips.
    subset : str
        Subset name: the cache sub-folder of its audio.
    kind : str
        ``"strong"``, ``"weak"`` or ``"unlabeled"``.

    Returns
    -------
    dict
        ``{clip_id: {"wav", "duration", "kind", "events", "labels"}}``.

    Example
    -------
    >>> clip = Clip("a.wav", Path("x/a.wav"), 5.0, [(0.5, 1.0, "x")], ["x"])
    >>> manifest_entries([clip], "train", "strong")["a"]["wav"]
    '{cache_root}/train/a.wav'
    """
    return {
        Path(clip.filename).stem: {
            "wav": f"{CACHE_PLACEHOLDER}/{subset}/{cache_name(clip.filename)}",
            "duration": round(clip.duration, 6),
            "kind": kind,
            "events": [list(event) for event in clip.events],
            "labels": clip.labels,
        }
        for clip in clips
    }


def write_eval_tsvs(clips, save_folder, name):
    """Write ``<name>_gt.tsv`` and ``<name>_durations.tsv`` for scoring."""
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
    atomic_write_text(
        save_folder / f"{name}_gt.tsv", gt.to_csv(sep="\t", index=False)
    )
    atomic_write_text(
        save_folder / f"{name}_durations.tsv",
        durations.to_csv(sep="\t", index=False),
    )


def atomic_write_text(path, text):
    """Write ``text`` to a temporary file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_marker(marker, options, fingerprint):
    """The outputs of a finished preparation with these options, or None."""
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


def report_problems(problems, skip_bad):
    """Raise the problems as one error, or log them when ``skip_bad``.

    Arguments
    ---------
    problems : list of DataProblem
        Everything found wrong with the input.
    skip_bad : bool
        Drop the bad rows and files with a warning instead of raising.

    Raises
    ------
    SEDDataError
        When there are problems and ``skip_bad`` is False.

    Example
    -------
    >>> report_problems([], skip_bad=False)
    >>> try:
    ...     report_problems([DataProblem("a.tsv", 2, "x")], skip_bad=False)
    ... except SEDDataError as err:
    ...     print(err)
    1 problem(s) found in the data:
      a.tsv:2: x
    """
    if not problems:
        return
    if not skip_bad:
        raise SEDDataError(problems)
    logger.warning(
        "skip_bad: dropping %d bad row(s) or file(s):\n%s",
        len(problems),
        "\n".join(f"  {p}" for p in problems),
    )


def merge_clip_events(clips):
    """Merge same-class overlaps in every clip of ``{subset: [Clip]}``.

    Sets each clip's ``events`` in place and logs how many were merged.

    Arguments
    ---------
    clips : dict
        ``{subset: [Clip, ...]}``.

    Returns
    -------
    int
        The number of events absorbed into another.

    Example
    -------
    >>> clip = Clip("a.wav", Path("a.wav"), 1.0, [(0, 1, "x"), (0.5, 2, "x")],
    ...             ["x"])
    >>> merge_clip_events({"s": [clip]}), clip.events
    (1, [(0, 2, 'x')])
    """
    n_merged = 0
    for subset_clips in clips.values():
        for clip in subset_clips:
            clip.events, merged = merge_same_class_events(clip.events)
            n_merged += merged
    if n_merged:
        logger.info(
            "Merged %d overlapping or touching same-class event(s).", n_merged
        )
    return n_merged


def write_marker(marker, options, fingerprint, outputs):
    """Record a finished preparation (read back by :func:`read_marker`)."""
    atomic_write_text(
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
