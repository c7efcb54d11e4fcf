"""Console entry points.

- ``sed-mini-desed``: generate mini-DESED (synthetic audio, not DESED);
- ``sed-prepare-desed``: check and prepare a DESED-layout dataset;
- ``sed-export``: pack a trained model into a SoundEventDetector folder;
- ``sed-detect``: detect sound events in audio files with such a folder.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path


def _quiet_third_party():
    """Hide a deprecation warning that dcase_util (via sed_eval) prints."""
    warnings.filterwarnings(
        "ignore", message="pkg_resources is deprecated", category=UserWarning
    )


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
    from speechbrain_sed_condmix.dataio.synth import generate_mini_desed

    parser = argparse.ArgumentParser(
        prog="sed-mini-desed",
        description=(
            "Generate mini-DESED: synthetic, procedurally generated audio "
            "in DESED's folder and TSV layout. It is NOT DESED."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--scale", default="tiny", choices=["tiny", "small"], help="size"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing on success"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate_mini_desed(args.out, scale=args.scale, seed=args.seed)
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
    _quiet_third_party()
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
        )
    except (OSError, ValueError) as err:
        print(f"sed-export: {err}", file=sys.stderr)
        return 2
    print(f"Exported the {args.weights} of {args.experiment} to {out}")
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
    _quiet_third_party()
    import pandas as pd
    from tqdm import tqdm

    parser = argparse.ArgumentParser(
        prog="sed-detect",
        description=(
            "Detect sound events in audio files (any format soundfile "
            "reads, any sample rate and channel count, any length) with a "
            "model exported by sed-export."
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", help="audio files and/or folders (recursive)"
    )
    parser.add_argument(
        "--model", required=True, help="folder written by sed-export"
    )
    parser.add_argument(
        "--out",
        default="events.tsv",
        help="events TSV to write (default: events.tsv)",
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
        "--quiet",
        action="store_true",
        help="no progress bar and no event listing",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    files = collect_audio(args.inputs)
    if not files:
        print("sed-detect: no audio files found", file=sys.stderr)
        return 2
    model = Path(args.model)
    if not (model / "hyperparams.yaml").is_file():
        print(
            f"sed-detect: {model} is not an exported model (no "
            "hyperparams.yaml); make one with sed-export",
            file=sys.stderr,
        )
        return 2
    from speechbrain_sed_condmix.inference import SoundEventDetector

    try:
        detector = SoundEventDetector.from_hparams(
            source=str(model.resolve()),
            savedir=args.savedir,
            run_opts={"device": args.device},
            method=args.method,
            window_hop=args.window_hop,
            optimize=not args.no_optimize,
            compile=args.compile,
        )
    except (OSError, ValueError, ImportError) as err:
        print(f"sed-detect: cannot load {model}: {err}", file=sys.stderr)
        return 2
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
    columns = ["filename", "onset", "offset", "event_label", "score"]
    table = pd.concat(tables) if tables else pd.DataFrame(columns=columns)
    table = table[columns].round({"onset": 3, "offset": 3, "score": 4})
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
