"""Console entry points.

- ``sed-mini-desed``: generate mini-DESED (synthetic audio, not DESED);
- ``sed-prepare-desed``: check and prepare a DESED-layout dataset;
- ``sed-export``: pack a trained model into a SoundEventDetector folder;
- ``sed-import``: make such a folder from a released DESED_task CRNN or
  ATST-SED checkpoint;
- ``sed-detect``: detect sound events in audio files, or in a stream of
  raw PCM (``--stream``), with such a folder.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import argparse
import logging
import sys
import time
from pathlib import Path


def mini_desed_main(argv=None):
    """Generate mini-DESED from the command line.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.

    Example
    -------
    >>> out = getfixture("tmp_path") / "mini"
    >>> mini_desed_main(["--out", str(out), "--scale", "tiny", "--quiet"])
    0
    """
    from speechbrain_sed_condmix.dataio.synth import (
        SCALES,
        generate_mini_desed,
    )

    parser = argparse.ArgumentParser(
        prog="sed-mini-desed",
        description=(
            "Generate mini-DESED: synthetic, procedurally generated audio "
            "in DESED's folder and TSV layout. It is NOT DESED."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--scale",
        default="tiny",
        choices=list(SCALES),
        help="size (ssl: label-scarce, for semi-supervised studies)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--unlabeled",
        type=int,
        default=None,
        help=(
            "number of unlabeled clips instead of the scale's (e.g. 8000 "
            "for ATST-Frame pretraining); the labelled subsets stay as they are"
        ),
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing on success"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate_mini_desed(
        args.out, scale=args.scale, seed=args.seed, unlabeled=args.unlabeled
    )
    if not args.quiet:
        print(
            f"mini-DESED ({args.scale}, seed {args.seed}; generated audio, "
            f"not DESED) in {out} [{time.perf_counter() - start:.1f} s]"
        )
    return 0


def prepare_desed_main(argv=None):
    """Prepare a DESED-layout dataset from the command line.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 when the data has problems.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> prepare_desed_main(["--data_folder", str(tmp / "none"),
    ...                     "--save_folder", str(tmp / "prep")])
    2
    """
    from speechbrain_sed_condmix.dataio.desed import (
        DEFAULT_SUBSETS,
        DesedDataError,
        prepare_desed,
    )

    parser = argparse.ArgumentParser(
        prog="sed-prepare-desed",
        description=(
            "Check a DESED-layout dataset, resample it once to 16 kHz and "
            "write SpeechBrain manifests and evaluation TSVs."
        ),
    )
    parser.add_argument("--data_folder", required=True)
    parser.add_argument("--save_folder", required=True)
    parser.add_argument("--subsets", nargs="+", default=list(DEFAULT_SUBSETS))
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="drop bad rows and files with a warning instead of failing",
    )
    parser.add_argument("--num_workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        outputs = prepare_desed(
            args.data_folder,
            args.save_folder,
            subsets=args.subsets,
            skip_bad=args.skip_bad,
            num_workers=args.num_workers,
        )
    except DesedDataError as err:
        print(err, file=sys.stderr)
        return 2
    for name, path in sorted(outputs.items()):
        print(f"{name}: {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def export_main(argv=None):
    """Export a trained model from the command line (``sed-export``).

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on error.

    Example
    -------
    >>> export_main([str(getfixture("tmp_path")), "--out", "x"])
    2
    """
    from speechbrain_sed_condmix.inference import export_detector

    parser = argparse.ArgumentParser(
        prog="sed-export",
        description=(
            "Pack a trained model (an output folder of "
            "recipes/DESED/SED/train.py) into a SpeechBrain source folder "
            "for SoundEventDetector.from_hparams and sed-detect: "
            "hyperparams.yaml + model.ckpt, with the post-processing that "
            "the test stage tuned (postprocessing.json)."
        ),
    )
    parser.add_argument("experiment", help="experiment (output) folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument(
        "--checkpoint",
        help="a save/CKPT+... folder (default: the best by selection_key)",
    )
    parser.add_argument(
        "--weights",
        choices=["teacher", "student"],
        default="teacher",
        help="which model's weights (default: the EMA teacher)",
    )
    parser.add_argument(
        "--window-hop",
        type=float,
        default=None,
        help="seconds between the windows of long files (default: half "
        "the model's clip length, 5 s for 10 s clips)",
    )
    parser.add_argument(
        "--license",
        default="unknown",
        help="licence of the weights, for the model card",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace existing files"
    )
    args = parser.parse_args(argv)
    try:
        out = export_detector(
            args.experiment,
            args.out,
            checkpoint=args.checkpoint,
            weights=args.weights,
            window_hop=args.window_hop,
            overwrite=args.force,
            license=args.license,
        )
    except (OSError, ValueError) as err:
        print(f"sed-export: {err}", file=sys.stderr)
        return 2
    print(f"Exported the {args.weights} of {args.experiment} to {out}")
    print(f"Try: sed-detect some.wav --model {out}")
    return 0


def import_main(argv=None):
    """Import a released checkpoint (``sed-import``).

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on error.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> import_main(["desed-crnn", str(tmp / "none.ckpt"), "--out", "x"])
    2
    """
    from speechbrain_sed_condmix.importing import RELEASES, import_release

    parser = argparse.ArgumentParser(
        prog="sed-import",
        description=(
            "Make a SoundEventDetector folder (as sed-export does) from a "
            "released checkpoint: the DCASE 2023 Task 4 baseline CRNN of "
            "DESED_task (desed-crnn) or an ATST-SED stage-2 checkpoint "
            "(atst-sed), with the reference's front end, class order and "
            "post-processing."
        ),
    )
    parser.add_argument("kind", choices=sorted(RELEASES))
    parser.add_argument("checkpoint", help="the released .ckpt file")
    parser.add_argument("--out", required=True, help="folder to write")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--teacher",
        dest="weights",
        action="store_const",
        const="teacher",
        help="import the EMA teacher (default, as the references deploy)",
    )
    which.add_argument(
        "--student",
        dest="weights",
        action="store_const",
        const="student",
        help="import the student",
    )
    parser.add_argument(
        "--median-filter",
        type=int,
        nargs="+",
        metavar="FRAMES",
        help="median filter length in frames: one for all classes or one "
        "per class (default: the reference's)",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="read Python objects besides tensors; this runs code from the "
        "file, so only for files from a source you trust",
    )
    parser.add_argument(
        "--license",
        default="unknown",
        help="licence of the weights (see the releasing project), for the "
        "model card",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace existing files"
    )
    args = parser.parse_args(argv)
    weights = args.weights or "teacher"
    try:
        out = import_release(
            args.kind,
            args.checkpoint,
            args.out,
            weights=weights,
            median_filter=args.median_filter,
            trust_checkpoint=args.trust_checkpoint,
            overwrite=args.force,
            license=args.license,
        )
    except (OSError, ValueError) as err:
        print(f"sed-import: {err}", file=sys.stderr)
        return 2
    print(f"Imported the {weights} of {args.checkpoint} to {out}")
    print(f"Try: sed-detect some.wav --model {out}")
    return 0


def audio_extensions():
    """File extensions treated as audio when a folder is searched.

    Returns
    -------
    set of str
        Lower-case extensions with the dot, from the formats libsndfile
        reads here (plus common aliases).

    Example
    -------
    >>> {".wav", ".flac"} <= audio_extensions()
    True
    """
    import soundfile as sf

    extensions = {"." + name.lower() for name in sf.available_formats()}
    extensions |= {".aif", ".oga", ".opus", ".wave"}
    return extensions - {".raw"}


def collect_audio(inputs):
    """Expand files and folders into ``(path, name)`` pairs.

    A folder is searched recursively for audio files (see
    :func:`audio_extensions`); their ``name`` is the path relative to the
    folder. A file given directly keeps its base name (and is used whatever
    its extension). A path that does not exist is kept too, so that it is
    reported as a failure with the others.

    Arguments
    ---------
    inputs : list of str
        Files and folders.

    Returns
    -------
    list of tuple
        ``(pathlib.Path, str)`` in the order given, folders sorted.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> (tmp / "sub").mkdir()
    >>> for name in ("b.wav", "a.flac", "notes.txt", "sub/c.wav"):
    ...     _ = (tmp / name).write_bytes(b"")
    >>> [name for _, name in collect_audio([str(tmp)])]
    ['a.flac', 'b.wav', 'sub/c.wav']
    """
    extensions = audio_extensions()
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in extensions
            )
            found.extend((p, p.relative_to(path).as_posix()) for p in files)
        else:
            found.append((path, path.name))
    return found


def _clip_id(name):
    """A file name without its extension (the sed_scores_eval key)."""
    return str(Path(name).with_suffix("").as_posix())


def detect_main(argv=None):
    """Detect sound events in audio files (``sed-detect``).

    Writes one DESED-format TSV (``filename onset offset event_label
    score``) for all files, optionally each file's frame scores
    (sed_scores_eval TSVs) and event-roll plots. Bad files are reported
    and skipped; the exit status is 1 when any failed.

    Arguments
    ---------
    argv : list of str, optional
        Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        0: every file processed; 1: some files failed (the others are
        written); 2: no model or no input.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> detect_main([str(tmp / "a.wav"), "--model", str(tmp / "none")])
    2
    """
    from tqdm import tqdm

    parser = argparse.ArgumentParser(
        prog="sed-detect",
        description=(
            "Detect sound events in audio files (any format soundfile "
            "reads, any sample rate and channel count, any length), or in a "
            "stream (--stream), with a folder written by sed-export or "
            "sed-import."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        help="audio files and/or folders (recursive); with --stream, at "
        "most one file (default: raw PCM on standard input)",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="folder written by sed-export or sed-import",
    )
    parser.add_argument(
        "--out",
        help="events TSV to write (default: events.tsv; with --stream, "
        "only when given)",
    )
    parser.add_argument(
        "--scores", help="folder for frame-score TSVs (sed_scores_eval)"
    )
    parser.add_argument("--plot", help="folder for event-roll PNGs")
    parser.add_argument(
        "--ground-truth",
        help="DESED strong-label TSV whose events are drawn in the plots",
    )
    parser.add_argument(
        "--method",
        choices=["median", "csebbs"],
        help="post-processing (default: the model's)",
    )
    parser.add_argument(
        "--window-hop",
        type=float,
        help="seconds between the windows of long files",
    )
    parser.add_argument("--device", default="cpu", help="e.g. cpu, cuda:0")
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="run the exported model as is (default: batch norms folded, "
        "channels-last weights, in-place gates; the same scores to float "
        "rounding)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (needs a C++ compiler on CPU; the "
        "first batch of each shape compiles)",
    )
    parser.add_argument(
        "--savedir", help="where SpeechBrain collects the model files"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="load a model whose hyperparams.yaml names classes or "
        "functions outside the allow-list: they can run any code",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no event listing",
    )
    live = parser.add_argument_group(
        "streaming",
        "Events are printed (onset, offset, label, score, seconds of audio "
        "received at emission) as soon as they are final; see "
        "speechbrain_sed_condmix.streaming for the latency.",
    )
    live.add_argument(
        "--stream",
        action="store_true",
        help="stream: raw PCM from standard input, or the file given",
    )
    live.add_argument(
        "--realtime",
        action="store_true",
        help="play the file through the stream at real-time speed",
    )
    live.add_argument(
        "--hop",
        type=float,
        default=1.0,
        help="seconds between the model's windows (default 1)",
    )
    live.add_argument(
        "--look-ahead",
        type=float,
        help="seconds of audio a frame keeps after it in its window "
        "(default: (window - hop) / 2; less answers sooner, with less "
        "future context)",
    )
    live.add_argument(
        "--median-filter",
        type=int,
        help="causal models (streamed with their state): median filter "
        "frames for every class instead of the model's; an event comes "
        "48 ms + (frames // 2 + 1) x 64 ms after its offset",
    )
    live.add_argument(
        "--rate",
        type=int,
        help="sample rate of the PCM (default and only accepted: the model's)",
    )
    live.add_argument(
        "--channels", type=int, default=1, help="PCM channels (averaged)"
    )
    live.add_argument(
        "--pcm-format",
        choices=["s16le", "f32le"],
        default="s16le",
        help="PCM sample format (default s16le)",
    )
    live.add_argument(
        "--chunk",
        type=float,
        default=0.1,
        help="seconds of audio read at a time (default 0.1)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    if args.stream:
        if len(args.inputs) > 1:
            print("sed-detect: --stream takes one file", file=sys.stderr)
            return 2
        if args.realtime and not args.inputs:
            print("sed-detect: --realtime plays a file", file=sys.stderr)
            return 2
    files = collect_audio(args.inputs)
    if not files and not args.stream:
        print("sed-detect: no audio files found", file=sys.stderr)
        return 2
    detector = _load_detector(args)
    if detector is None:
        return 2
    if args.stream:
        return _stream(detector, args, files)
    args.out = args.out or "events.tsv"
    truth = {}
    if args.ground_truth:
        from speechbrain_sed_condmix.metrics import load_ground_truth

        truth = load_ground_truth(args.ground_truth)

    tables, failures = [], []
    start = time.perf_counter()
    for path, name in tqdm(files, desc="sed-detect", disable=args.quiet):
        try:
            result = detector.analyse_file(path)
            if args.scores:
                _write_clip_scores(result["scores"], args.scores, name)
            if args.plot:
                _plot_clip(result, args.plot, name, truth)
        except Exception as err:  # noqa: BLE001 - report and go on
            failures.append((path, f"{type(err).__name__}: {err}"))
            continue
        events = result["events"].copy()
        events.insert(0, "filename", name)
        tables.append(events)
        if not args.quiet:
            for row in events.itertuples(index=False):
                tqdm.write(
                    f"{row.filename}\t{row.onset:.3f}\t{row.offset:.3f}\t"
                    f"{row.event_label}\t{row.score:.3f}"
                )
    from speechbrain_sed_condmix.postprocessing import events_table

    table = events_table(tables)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False)
    elapsed = time.perf_counter() - start
    print(
        f"{len(table)} events in {len(files) - len(failures)} file(s) "
        f"written to {out} [{elapsed:.1f} s]"
    )
    if failures:
        print(
            f"{len(failures)} of {len(files)} file(s) failed:",
            file=sys.stderr,
        )
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def _load_detector(args):
    """The detector of ``--model``, or None after printing why not."""
    model = Path(args.model)
    if not (model / "hyperparams.yaml").is_file():
        print(
            f"sed-detect: {model} is not a detector folder (no "
            "hyperparams.yaml); make one with sed-export or sed-import",
            file=sys.stderr,
        )
        return None
    from speechbrain_sed_condmix.inference import SoundEventDetector

    try:
        return SoundEventDetector.from_hparams(
            source=str(model.resolve()),
            savedir=args.savedir,
            run_opts={"device": args.device},
            method=args.method,
            window_hop=args.window_hop,
            optimize=not args.no_optimize,
            compile=args.compile,
            trust_remote_code=args.trust_remote_code,
        )
    except (OSError, ValueError, ImportError) as err:
        print(f"sed-detect: cannot load {model}: {err}", file=sys.stderr)
        return None


def _stream(detector, args, files):
    """``sed-detect --stream``: events on stdout as they settle."""
    from speechbrain_sed_condmix.streaming import file_chunks, pcm_chunks

    samples = max(int(round(args.chunk * detector.sample_rate)), 1)
    if files:
        chunks = file_chunks(detector, files[0][0], samples, args.realtime)
        rate = None
    else:
        rate = args.rate or detector.sample_rate
        chunks = pcm_chunks(
            sys.stdin.buffer, samples, args.channels, args.pcm_format
        )
    columns = ["onset", "offset", "event_label", "score", "emitted_at"]
    print("\t".join(columns), flush=True)
    rows = []
    try:
        options = {"look_ahead": args.look_ahead, "sample_rate": rate}
        if args.median_filter is not None:
            options["median_filter"] = args.median_filter
        for event in detector.stream(chunks, hop=args.hop, **options):
            rows.append(event)
            print(
                f"{event.onset:.3f}\t{event.offset:.3f}\t"
                f"{event.event_label}\t{event.score:.4f}\t"
                f"{event.emitted_at:.3f}",
                flush=True,
            )
    except (OSError, ValueError) as err:
        print(f"sed-detect: {err}", file=sys.stderr)
        return 2
    if args.out:
        import pandas as pd

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame(rows, columns=columns)
        table.to_csv(out, sep="\t", index=False)
    return 0


def _write_clip_scores(scores, folder, name):
    """Write one clip's scores as ``<folder>/<name without ext>.tsv``."""
    from speechbrain_sed_condmix.scores import write_scores

    clip = Path(_clip_id(name))
    write_scores({clip.name: scores}, Path(folder) / clip.parent)


def _plot_clip(result, folder, name, truth):
    """Draw one clip's event roll as ``<folder>/<name without ext>.png``."""
    from speechbrain_sed_condmix.plots import plot_event_roll

    clip = _clip_id(name)
    plot_event_roll(
        result["scores"],
        Path(folder) / f"{clip}.png",
        detections=result["events"],
        ground_truth=truth.get(Path(clip).name) if truth else None,
        title=name,
    )
