#!/usr/bin/env python3
"""Training step of two checkouts, interleaved in one run (issue 18).

Times ``SEDBrain.fit_batch`` of the ``crnn_mt`` recipe for each checkout
in turn, ``--rounds`` times: round r runs checkout A then B (B then A on
odd rounds), each in a fresh process with ``PYTHONPATH=<checkout>`` and
that checkout's own recipe YAML, so that a loaded machine slows both
alike. Each process builds the brain, runs ``--warmup`` steps, then times
``--repeats`` steps and reports their median, its user + system CPU time
per step and its peak RSS. The JSON gives every process's figures, the
median over rounds per checkout and the speed-up of each checkout over the
first.

Configurations (``--config``):

* ``paper``: the recipe as it is, batch [12, 12, 24];
* ``demo``: the settings of ``tools/demo.py`` (narrow CRNN, no dropout,
  batch [8, 4, 4]).

    python benchmarks/compare_step.py --checkouts /path/to/base . \\
        --config paper --threads 2 --rounds 3
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

CONFIGS = {
    "paper": {"batch_sizes": [12, 12, 24], "overrides": {}},
    "demo": {
        "batch_sizes": [8, 4, 4],
        # tools/demo.py DEMO_OVERRIDES that change the step's work.
        "overrides": {
            "cnn_filters": [8, 16, 32, 32, 32, 32, 32],
            "rnn_hidden": 64,
            "dropout": 0.0,
            "lr": 0.003,
            "ema_decay": 0.99,
        },
    },
}


def child(checkout, config, args):
    """Build the brain from ``checkout`` and time its steps."""
    import speechbrain as sb
    import torch
    from hyperpyyaml import load_hyperpyyaml

    import speechbrain_sed_condmix
    from speechbrain_sed_condmix.brain import SEDBrain

    package = Path(speechbrain_sed_condmix.__file__).resolve()
    if Path(checkout).resolve() not in package.parents:
        raise SystemExit(f"imported {package}, not the one in {checkout}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from train_step import synthetic_batch

    settings = CONFIGS[config]
    tmp = tempfile.mkdtemp(prefix="bench_compare_")
    values = {
        "data_folder": tmp,
        "output_folder": tmp,
        "prep_folder": tmp,
        "batch_sizes": settings["batch_sizes"],
        **settings["overrides"],
    }
    yaml = Path(checkout) / "recipes/DESED/SED/hparams/crnn_mt.yaml"
    with open(yaml, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, values)
    brain = SEDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu", "precision": "fp32"},
        checkpointer=None,
    )
    brain.steps_per_epoch = 100
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    brain.modules.train()
    subsets = hparams["train_subsets"]
    batches = [
        synthetic_batch(
            subsets, settings["batch_sizes"], hparams["encoder"], seed
        )
        for seed in range(2)
    ]
    for i in range(args.warmup):
        brain.fit_batch(batches[i % 2])
    times = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    for i in range(args.repeats):
        start = time.perf_counter()
        loss = brain.fit_batch(batches[i % 2])
        times.append(time.perf_counter() - start)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "checkout": str(checkout),
        "package": str(package.parent),
        "step_s": times,
        "step_s_median": statistics.median(times),
        "cpu_s_per_step": (usage.ru_utime + usage.ru_stime - cpu_start)
        / args.repeats,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "last_loss": float(loss),
    }


def git_commit(checkout):
    """``git rev-parse --short HEAD`` of a checkout (None if not a repo)."""
    out = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", nargs="+")
    parser.add_argument("--config", choices=list(CONFIGS), default="paper")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.config, args)))
        return
    if not args.checkouts:
        parser.error("--checkouts is required")
    checkouts = [str(Path(c).resolve()) for c in args.checkouts]
    runs = []
    for r in range(args.rounds):
        order = checkouts if r % 2 == 0 else checkouts[::-1]
        for checkout in order:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                checkout,
                "--config",
                args.config,
                "--warmup",
                str(args.warmup),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ]
            env = {**os.environ, "PYTHONPATH": checkout}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"{checkout} failed:\n{out.stderr[-3000:]}")
            record = json.loads(out.stdout.strip().splitlines()[-1])
            record["round"] = r
            runs.append(record)
            print(
                f"round {r} {checkout}: {record['step_s_median']:.3f} s/step",
                file=sys.stderr,
            )
    summary = {}
    for checkout in checkouts:
        mine = [x for x in runs if x["checkout"] == checkout]
        summary[checkout] = {
            "commit": git_commit(checkout),
            "step_s_median": statistics.median(
                t for x in mine for t in x["step_s"]
            ),
            "cpu_s_per_step_median": statistics.median(
                x["cpu_s_per_step"] for x in mine
            ),
            "peak_rss_mib_max": max(x["peak_rss_mib"] for x in mine),
        }
    first = summary[checkouts[0]]["step_s_median"]
    for item in summary.values():
        item["speedup_vs_first"] = first / item["step_s_median"]
    settings = CONFIGS[args.config]
    print(
        json.dumps(
            {
                "benchmark": "compare_step",
                **environment(),
                "settings": {
                    "config": args.config,
                    "recipe": "crnn_mt.yaml of each checkout",
                    "batch_sizes": settings["batch_sizes"],
                    "overrides": settings["overrides"],
                    "dtype": "fp32",
                    "threads": args.threads,
                    "rounds": args.rounds,
                    "warmup": args.warmup,
                    "repeats": args.repeats,
                    "malloc_env": {
                        k: v
                        for k, v in os.environ.items()
                        if k.startswith("MALLOC_")
                    },
                    "load_average_at_end": os.getloadavg(),
                },
                "summary": summary,
                "runs": runs,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
