#!/usr/bin/env python3
"""Training step of several checkouts, interleaved step by step (issue 18).

Times ``SEDBrain.fit_batch`` of the ``crnn_mt`` recipe for each checkout.
Every checkout runs in its own process with ``PYTHONPATH=<checkout>`` and
that checkout's own recipe YAML; all processes build their brain and run
``--warmup`` steps, then the steps are taken in lockstep: one step of A,
one of B, ..., the order reversed every round (A B, B A, A B, ...), while
the other processes wait idle. A machine whose load changes (other users)
then slows all checkouts alike, which timing whole runs one after the
other does not achieve. Each process reports its step times, its user +
system CPU time per step and its peak RSS; the JSON gives the medians per
checkout and the speed-up of each checkout over the first. Before torch
starts, each process applies what that checkout's ``train.py`` applies:
:func:`speechbrain_sed_condmix.allocator.configure_cpu_allocator` where the
checkout has it, nothing for older ones.

Configurations (``--config``):

* ``paper``: the recipe as it is, batch [12, 12, 24];
* ``small``: the recipe at the CPU batch of ``train_step.py``, [4, 4, 8];
* ``demo``: the settings of ``tools/demo.py`` (narrow CRNN, no dropout,
  batch [8, 4, 4]).

    python benchmarks/compare_step.py --checkouts /path/to/base . \\
        --config paper --threads 2 --rounds 6
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
    "small": {"batch_sizes": [4, 4, 8], "overrides": {}},
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
    print(json.dumps({"ready": True}), flush=True)
    times, cpu = [], []
    for i, line in enumerate(sys.stdin):
        if line.strip() != "step":
            break
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_start = usage.ru_utime + usage.ru_stime
        start = time.perf_counter()
        loss = brain.fit_batch(batches[i % 2])
        times.append(time.perf_counter() - start)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu.append(usage.ru_utime + usage.ru_stime - cpu_start)
        print(json.dumps({"step_s": times[-1]}), flush=True)
    return {
        "checkout": str(checkout),
        "package": str(package.parent),
        "step_s": times,
        "cpu_s": cpu,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "last_loss": float(loss),
    }


def checkout_allocator():
    """Apply what the checkout's ``train.py`` sets before torch starts.

    Checkouts with :mod:`speechbrain_sed_condmix.allocator` configure the
    CPU allocator on their first line; older ones set nothing. Either way
    the step is timed as the checkout's recipe would run it. Call before
    ``import torch``; returns what was set.
    """
    try:
        from speechbrain_sed_condmix.allocator import configure_cpu_allocator
    except ImportError:
        return {}
    return configure_cpu_allocator()


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
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--block",
        type=int,
        default=1,
        help="consecutive steps per checkout and round (1: strict "
        "alternation; more: each process also runs back to back, as a "
        "training run does, so its memory is reused between its steps)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        allocator = checkout_allocator()
        record = child(args.child, args.config, args)
        record["allocator_settings"] = allocator
        print(json.dumps(record))
        return
    if not args.checkouts:
        parser.error("--checkouts is required")
    checkouts = [str(Path(c).resolve()) for c in args.checkouts]
    procs = {}
    for checkout in checkouts:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            checkout,
            "--config",
            args.config,
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
        ]
        env = {**os.environ, "PYTHONPATH": checkout}
        procs[checkout] = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def reply(checkout):
        # The next JSON line of the process (other output is skipped).
        for line in procs[checkout].stdout:
            if line.startswith("{"):
                return json.loads(line)
        sys.exit(f"{checkout}: the benchmark process failed")

    for checkout in checkouts:  # built and warmed up, one after the other
        reply(checkout)
    load_start = os.getloadavg()
    for r in range(args.rounds):
        order = checkouts if r % 2 == 0 else checkouts[::-1]
        for checkout in order:
            for _ in range(args.block):
                procs[checkout].stdin.write("step\n")
                procs[checkout].stdin.flush()
                step = reply(checkout)["step_s"]
                print(f"round {r} {checkout}: {step:.3f} s", file=sys.stderr)
    runs = []
    for checkout in checkouts:
        procs[checkout].stdin.write("done\n")
        procs[checkout].stdin.flush()
        runs.append(reply(checkout))
        procs[checkout].wait()
    summary = {}
    for record in runs:
        summary[record["checkout"]] = {
            "commit": git_commit(record["checkout"]),
            "step_s_median": statistics.median(record["step_s"]),
            "step_s_min": min(record["step_s"]),
            "cpu_s_per_step_median": statistics.median(record["cpu_s"]),
            "peak_rss_mib": record["peak_rss_mib"],
            "allocator_settings": record.get("allocator_settings", {}),
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
                    "block": args.block,
                    "warmup": args.warmup,
                    "timing": "lockstep: --block steps per checkout per round, "
                    "order reversed every round; one process per checkout",
                    "malloc_env": {
                        k: v
                        for k, v in os.environ.items()
                        if k.startswith(("MALLOC_", "THP_"))
                    },
                    "load_average_at_start": load_start,
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
