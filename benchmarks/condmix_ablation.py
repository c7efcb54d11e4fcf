#!/usr/bin/env python3
"""Ablation of the conditional-mixup method on the CRNN, on mini-DESED.

Five variants, each trained with several seeds on mini-DESED ``small``
(generated audio, NOT DESED) with the demo's small-CRNN settings, then
tested on its validation set (200 clips):

* ``mt_baseline``: ``crnn_mt.yaml``, the DCASE baseline (Mean Teacher, mixup
  of the labelled subsets, the teacher on the mixed input);
* ``composition``: ``crnn_condmix.yaml --mixup_tau=1.0
  --contrastive_weight=0``;
* ``perturbation``: ``crnn_condmix.yaml --mixup_tau=0.5
  --contrastive_weight=0``;
* ``condmix``: ``crnn_condmix.yaml --contrastive_weight=0``;
* ``condmix_contrastive``: ``crnn_condmix.yaml`` as it is.

Runs whose ``metrics.json`` exists are not run again, so the script can be
stopped and resumed. It prints one JSON object (mean, std and values of
PSDS1 / PSDS2 for the student and the teacher of each variant) and writes it
with a Markdown table next to the runs.

    python benchmarks/condmix_ablation.py --out results/ablation --jobs 2
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/DESED/SED"
sys.path.insert(0, str(REPO / "tools"))
from demo import DEMO_OVERRIDES, MALLOC_ENV  # noqa: E402

VARIANTS = {
    "mt_baseline": ("crnn_mt.yaml", []),
    "composition": (
        "crnn_condmix.yaml",
        ["--mixup_tau=1.0", "--contrastive_weight=0"],
    ),
    "perturbation": (
        "crnn_condmix.yaml",
        ["--mixup_tau=0.5", "--contrastive_weight=0"],
    ),
    "condmix": ("crnn_condmix.yaml", ["--contrastive_weight=0"]),
    "condmix_contrastive": ("crnn_condmix.yaml", []),
}
MODELS = ("student", "teacher")
METRICS = ("psds1", "psds2")


def schedule_overrides(epochs):
    """The demo's settings with a shorter schedule, validated at the end."""
    keep = [
        o
        for o in DEMO_OVERRIDES
        if not o.startswith(
            ("--number_of_epochs", "--rampup_epochs", "--valid_every")
        )
    ]
    return [
        *keep,
        f"--number_of_epochs={epochs}",
        f"--rampup_epochs={max(1, epochs // 4)}",
        f"--valid_every_n_epochs={epochs}",
    ]


def prepare(out, scale):
    """Generate and prepare mini-DESED once, before the parallel runs."""
    data = out / f"mini_desed_{scale}"
    prep = out / "prep"
    bindir = Path(sys.executable).parent
    if not (data / "mini_desed.json").is_file():
        subprocess.run(
            [bindir / "sed-mini-desed", "--out", data, "--scale", scale],
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
    return data, prep


def run_one(name, seed, data, prep, out, overrides, threads):
    """Train and test one (variant, seed); return its metrics.json."""
    hparams, extra = VARIANTS[name]
    folder = out / name / str(seed)
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        cmd = [
            sys.executable,
            RECIPE / "train.py",
            RECIPE / "hparams" / hparams,
            f"--data_folder={data}",
            f"--prep_folder={prep}",
            f"--output_folder={folder}",
            f"--seed={seed}",
            "--device=cpu",
            *overrides,
            *extra,
        ]
        env = {
            **MALLOC_ENV,
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "stdout.txt", "w") as log:
            subprocess.run(
                [str(c) for c in cmd],
                check=True,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    return json.loads(metrics.read_text())


def summarise(results):
    """Mean, std and values per variant, model and metric."""
    summary = {}
    for name, runs in results.items():
        summary[name] = {}
        for model in MODELS:
            for metric in METRICS:
                values = [runs[s][model][metric] for s in sorted(runs)]
                summary[name][f"{model}_{metric}"] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0,
                    "values": values,
                }
    return summary


def markdown(summary, seeds):
    """A mean ± std table of PSDS1 and PSDS2."""
    head = "| variant | " + " | ".join(
        f"{m} {k.upper()}" for m in MODELS for k in METRICS
    )
    lines = [head + " |", "|---" * (1 + len(MODELS) * len(METRICS)) + "|"]
    for name, stats in summary.items():
        cells = [
            f"{stats[f'{m}_{k}']['mean']:.3f} ± {stats[f'{m}_{k}']['std']:.3f}"
            for m in MODELS
            for k in METRICS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nSeeds: {', '.join(map(str, seeds))}.")
    return "\n".join(lines)


def main(argv=None):
    """Run the ablation and print its JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/ablation")
    parser.add_argument("--scale", default="small", choices=["tiny", "small"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "overrides", nargs="*", help="extra recipe overrides for every run"
    )
    args, extra = parser.parse_known_args(argv)
    out = (REPO / args.out).resolve()
    start = time.perf_counter()
    data, prep = prepare(out, args.scale)
    overrides = schedule_overrides(args.epochs) + extra
    results = {name: {} for name in args.variants}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(
                run_one, name, seed, data, prep, out, overrides, args.threads
            ): (name, seed)
            for seed in args.seeds
            for name in args.variants
        }
        for future in concurrent.futures.as_completed(futures):
            name, seed = futures[future]
            results[name][seed] = future.result()
            print(f"done: {name} seed {seed}", file=sys.stderr, flush=True)
    summary = {
        "dataset": f"mini-DESED {args.scale} validation (generated audio)",
        "overrides": overrides,
        "seeds": args.seeds,
        "minutes": (time.perf_counter() - start) / 60,
        "variants": summarise(results),
    }
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    (out / "ablation.md").write_text(
        markdown(summary["variants"], args.seeds) + "\n"
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
