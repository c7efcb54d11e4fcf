"""Console entry points.

- ``sed-mini-desed``: generate mini-DESED (synthetic audio, not DESED);
- ``sed-prepare-desed``: check and prepare a DESED-layout dataset.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import argparse
import logging
import sys
import time


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
