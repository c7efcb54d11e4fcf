#!/usr/bin/env python3
"""Accuracy cost of the causal CRNN: causal against bidirectional, paired.

Two arms of ``crnn_mt.yaml`` (CRNN + Mean Teacher) with the demo's
settings (``tools/demo.py``: the narrow CRNN, batches [8, 4, 4], LR 3e-3,
EMA 0.99) on mini-DESED ``small`` (generated audio, NOT DESED):

* ``bidirectional``: the recipe as it is (``--causal=False``);
* ``causal``: ``--causal=True`` (causal convolutions, a unidirectional GRU,
  a mel with fixed dB scaling; ``lobes/causal.py``).

Each seed trains both arms, one run at a time, with ``--threads`` CPU
threads (default 1). Every run is ``recipes/DESED/SED/train.py`` in
``OUT/<arm>/<seed>``; a run whose ``metrics.json`` exists is skipped and an
interrupted one resumes from its last checkpoint, so the same command
continues a stopped comparison. ``--epochs`` sets the budget (the demo's is
22 epochs of 50 steps); the same for every run.

    python benchmarks/causal_accuracy.py --out results/causal_cmp
    python benchmarks/causal_accuracy.py --out results/causal_cmp \\
        --report causal_accuracy_small

``--report NAME`` trains nothing: it writes ``benchmarks/measured/NAME.json``
with each run's test metrics and wall time and the mean paired difference
(causal - bidirectional) ± standard error of the teacher's PSDS1, PSDS2
and intersection F1.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from condmix_ablation import METRICS, collect_runs, paired

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/DESED/SED"
MEASURED = REPO / "benchmarks/measured"
sys.path.insert(0, str(REPO / "tools"))
from demo import DEMO_OVERRIDES, MALLOC_ENV  # noqa: E402

ARMS = {"bidirectional": "--causal=False", "causal": "--causal=True"}
#: The demo's overrides without its schedule (set by --epochs here).
PROTOCOL = [
    o
    for o in DEMO_OVERRIDES
    if not o.startswith(
        ("--number_of_epochs", "--rampup_epochs", "--valid_every_n_epochs")
    )
] + ["--n_event_rolls=0"]


def run_command(arm, seed, data, prep, folder, epochs, rampup):
    """The recipe command of one run."""
    return [
        sys.executable,
        RECIPE / "train.py",
        RECIPE / "hparams" / "crnn_mt.yaml",
        f"--data_folder={data}",
        f"--prep_folder={prep}",
        f"--output_folder={folder}",
        f"--seed={seed}",
        "--device=cpu",
        f"--number_of_epochs={epochs}",
        f"--rampup_epochs={rampup}",
        f"--valid_every_n_epochs={epochs}",
        *PROTOCOL,
        ARMS[arm],
    ]


def run_one(arm, seed, args, data, prep):
    """Train and test one (arm, seed) unless done; return its status."""
    folder = args.out / arm / str(seed)
    if (folder / "metrics.json").is_file():
        return "skipped (done)"
    cmd = run_command(arm, seed, data, prep, folder, args.epochs, args.rampup)
    threads = str(args.threads)
    env = {
        **MALLOC_ENV,
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(folder / "stdout.txt", "a") as log:
        done = subprocess.run(
            [str(c) for c in cmd],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    minutes = (time.perf_counter() - start) / 60
    if done.returncode:
        return f"failed (exit {done.returncode}, see {folder}/stdout.txt)"
    (folder / "wall_minutes.txt").write_text(f"{minutes:.2f}\n")
    return f"done in {minutes:.1f} min"


def report(args, name):
    """Gather the finished runs into benchmarks/measured/NAME.json."""
    per_epoch = 50  # the demo's batches [8, 4, 4] on mini-DESED small
    records = collect_runs(args.out, list(ARMS), lambda e: e * per_epoch)
    for record in records:
        record.pop("synth_val_curve", None)
        record["causal"] = record["arm"] == "causal"
    summary = {
        metric: paired(records, "causal", "bidirectional", metric)
        for metric in METRICS
    }
    result = {
        "what": "teacher test metrics (mini-DESED small validation split, "
        "generated audio, not DESED) of the causal CRNN against the "
        "bidirectional CRNN, crnn_mt.yaml with the demo's settings, "
        "paired by seed; differences are causal - bidirectional",
        "protocol": PROTOCOL,
        "epochs": args.epochs,
        "rampup_epochs": args.rampup,
        "steps": args.epochs * per_epoch,
        "threads": args.threads,
        "runs": records,
        "causal_minus_bidirectional": summary,
    }
    path = MEASURED / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=22)
    parser.add_argument("--rampup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", metavar="NAME")
    args = parser.parse_args(argv)
    if args.report:
        report(args, args.report)
        return 0
    data = args.out / "mini_desed_small"
    prep = args.out / "prep"
    if not (prep / "validation.json").is_file():
        bindir = Path(sys.executable).parent
        subprocess.run(
            [bindir / "sed-mini-desed", "--out", data, "--scale", "small"],
            check=True,
        )
        subprocess.run(
            [
                sys.executable,
                REPO / "recipes/DESED/desed_prepare.py",
                f"--data_folder={data}",
                f"--save_folder={prep}",
            ],
            check=True,
        )
    failed = 0
    for seed in args.seeds:
        for arm in ARMS:
            status = run_one(arm, seed, args, data, prep)
            failed += status.startswith("failed")
            print(f"{time.strftime('%H:%M:%S')} {arm} seed {seed}: {status}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
