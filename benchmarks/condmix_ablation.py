#!/usr/bin/env python3
"""The method's ablation on label-scarce mini-DESED, one recipe run per arm.

Five arms, each trained with several seeds, paired by seed, on mini-DESED
``ssl`` (generated audio, NOT DESED: 100 strong synthetic, about 50 weak
and 1,200 unlabeled training clips), with the small CRNN of the demo. Model
selection and the post-processing tuning use the synthetic validation split
(``synth_val``); the 320-clip ``validation`` split only reports.

* ``a_mt``: ``crnn_mt.yaml``, the Mean Teacher baseline (DCASE mixup of the
  labelled rows, the teacher on the mixed input);
* ``d_composition``: ``crnn_condmix.yaml --mixup_tau=1.0
  --contrastive_weight=0``: conditional mixup, composition only (v1's ICT);
* ``b_condmix``: ``--mixup_tau=0.75 --contrastive_weight=0``: both modes;
* ``e_perturbation``: ``--mixup_tau=0.5 --contrastive_weight=0``;
* ``c_condmix_contrastive``: ``b_condmix`` plus the contrastive loss.

Every run is ``recipes/DESED/SED/train.py`` in ``OUT/<arm>/<seed>``, with
its checkpoints. A run whose ``metrics.json`` exists is skipped, and an
interrupted one resumes from its last checkpoint, so the same command
continues a stopped ablation. The queue is seed-major (seed 1 of every
arm, then seed 2, ...), so that whatever has finished is paired.

    python benchmarks/condmix_ablation.py --out /work/ablation15 --jobs 2
    python benchmarks/condmix_ablation.py --out /work/ablation15 \\
        --report condmix_ablation_ssl

``--tune-trials N`` gives every arm the same tuning budget: N ``sed-tune``
trials on synth_val over the keys of ``recipes/DESED/SED/search/<YAML>``
that neither the arm nor the protocol sets (``OUT/tune/<arm>``), then the
paired seeds of each arm with its best configuration (``OUT/tuned``); the
report states the budget and each arm's choice.

``--report NAME`` trains nothing: it gathers the finished runs into
``benchmarks/measured/NAME.json`` (per-run metrics, and the mean paired
difference ± standard error of teacher PSDS1, PSDS2 and intersection F1 of
each arm against ``a_mt`` and ``d_composition``), draws the teacher's
and the student's synth_val PSDS1 over training into ``NAME.png``, and
prints a Markdown table.
"""

import argparse
import concurrent.futures
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/DESED/SED"
MEASURED = REPO / "benchmarks/measured"
sys.path.insert(0, str(REPO / "tools"))
from demo import MALLOC_ENV  # noqa: E402

#: ``{arm: (YAML, overrides, what it changes from its neighbour)}``, in
#: queue order.
ARMS = {
    "a_mt": (
        "crnn_mt.yaml",
        [],
        "Mean Teacher baseline",
    ),
    "d_composition": (
        "crnn_condmix.yaml",
        ["--mixup_tau=1.0", "--contrastive_weight=0"],
        "conditional mixup, composition only (tau = 1), pseudo-labels",
    ),
    "b_condmix": (
        "crnn_condmix.yaml",
        ["--mixup_tau=0.75", "--contrastive_weight=0"],
        "(d) with tau = 0.75: compositions and perturbations",
    ),
    "e_perturbation": (
        "crnn_condmix.yaml",
        ["--mixup_tau=0.5", "--contrastive_weight=0"],
        "(d) with tau = 0.5: perturbations only",
    ),
    "c_condmix_contrastive": (
        "crnn_condmix.yaml",
        ["--mixup_tau=0.75", "--contrastive_weight=1.0"],
        "(b) plus the embedding-level contrastive loss (weight 1.0)",
    ),
}
#: The arms that every other arm is compared with, seed by seed.
REFERENCES = ("a_mt", "d_composition")
#: An arm one switch from an arm that is not a reference is also compared
#: with that neighbour: (c) is (b) plus the contrastive loss.
NEIGHBOURS = {"c_condmix_contrastive": "b_condmix"}
#: Teacher metrics of the paired comparison.
METRICS = ("psds1", "psds2", "intersection_f1")
MODELS = ("student", "teacher")

#: The protocol, shared by every arm: the demo's small CRNN (163,580
#: parameters, no dropout, LR 3e-3, EMA 0.99) on DCASE's batch
#: composition scaled down to 8 clips (unlabeled clips half of each batch;
#: a step of [4, 4, 8] takes 1.7 times as long), selection on the
#: teacher's PSDS1 + PSDS2 on synth_val, the feature cache on.
BATCH_SIZES = [2, 2, 4]
PROTOCOL = [
    f"--batch_sizes=[{','.join(map(str, BATCH_SIZES))}]",
    "--cnn_filters=[8,16,32,32,32,32,32]",
    "--rnn_hidden=64",
    "--dropout=0.0",
    "--lr=0.003",
    "--ema_decay=0.99",
    "--eval_batch_size=32",
    "--num_workers=0",
    "--selection_key=teacher_psds",
    "--n_event_rolls=0",
]
#: Settings of the conditional-mixup arms only (crnn_mt has no such key):
#: ATST-Frame's perturbation strength. (The contrastive weight of arm (c),
#: 1.0, comes from the gradient-norm diagnostic: see the recipe README.)
CONDMIX_PROTOCOL = ["--mixup_perturbation=uniform"]


def prepare(out, scale, seed=0):
    """Generate and prepare mini-DESED once, before the parallel runs."""
    data = out / f"mini_desed_{scale}"
    prep = out / "prep"
    bindir = Path(sys.executable).parent
    subprocess.run(
        [
            bindir / "sed-mini-desed",
            "--out",
            data,
            "--scale",
            scale,
            "--seed",
            str(seed),
        ],
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


def steps_per_epoch(prep, batch_sizes):
    """Optimiser steps per epoch: the shortest subset ends the epoch."""
    subsets = ("synth_train", "weak_train", "unlabeled")
    sizes = [len(json.loads((prep / f"{s}.json").read_text())) for s in subsets]
    return min(n // b for n, b in zip(sizes, batch_sizes))


def schedule(epochs, valid_every, rampup):
    """Schedule overrides (epochs, ramp-up, validation cadence)."""
    return [
        f"--number_of_epochs={epochs}",
        f"--rampup_epochs={rampup}",
        f"--valid_every_n_epochs={valid_every}",
    ]


def run_command(arm, seed, data, prep, folder, overrides):
    """The recipe command of one run."""
    hparams, extra, _ = ARMS[arm]
    condmix = CONDMIX_PROTOCOL if hparams == "crnn_condmix.yaml" else []
    return [
        sys.executable,
        RECIPE / "train.py",
        RECIPE / "hparams" / hparams,
        f"--data_folder={data}",
        f"--prep_folder={prep}",
        f"--output_folder={folder}",
        f"--feature_cache_folder={prep.parent / 'feature_cache'}",
        f"--seed={seed}",
        "--device=cpu",
        *PROTOCOL,
        *condmix,
        *overrides,
        *extra,
    ]


def run_one(arm, seed, data, prep, out, overrides, threads):
    """Train and test one (arm, seed) unless done; return its status."""
    folder = out / arm / str(seed)
    if (folder / "metrics.json").is_file():
        return "skipped (done)"
    cmd = run_command(arm, seed, data, prep, folder, overrides)
    env = {
        **MALLOC_ENV,
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
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
    # Wall time of this call (a resumed run: of its last part only).
    (folder / "wall_minutes.txt").write_text(f"{minutes:.2f}\n")
    return f"done in {minutes:.1f} min"


def run_all(args, overrides, data, prep, out, per_arm=None):
    """Run the queue, seed-major, ``args.jobs`` runs at a time; ``per_arm``
    adds an arm's own overrides (its tuned configuration)."""
    queue = [(arm, seed) for seed in args.seeds for arm in args.arms]
    per_arm = per_arm or {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(
                run_one,
                arm,
                seed,
                data,
                prep,
                out,
                overrides + per_arm.get(arm, []),
                args.threads,
            ): (arm, seed)
            for arm, seed in queue
        }
        failed = 0
        for future in concurrent.futures.as_completed(futures):
            arm, seed = futures[future]
            status = future.result()
            failed += status.startswith("failed")
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {arm} seed {seed}: {status}", flush=True)
    return failed


# ----------------------------------------------------------------------
# Report


_VALID_LINE = re.compile(r"^epoch: (\d+),.* - valid (.*)$")


def validations(train_log):
    """``[(epoch, {key: value})]`` of every validation in train_log.txt."""
    found = []
    for line in Path(train_log).read_text().splitlines():
        match = _VALID_LINE.match(line)
        if match:
            stats = {}
            for item in match.group(2).split(", "):
                key, _, value = item.rpartition(": ")
                stats[key.replace("valid ", "")] = float(value)
            found.append((int(match.group(1)), stats))
    return found


def collect_runs(out, arms, epochs_to_steps):
    """One record per finished run (``metrics.json`` present)."""
    records = []
    for arm in arms:
        for folder in sorted((out / arm).glob("*")):
            metrics = folder / "metrics.json"
            if not metrics.is_file() or not folder.name.isdigit():
                continue
            test = json.loads(metrics.read_text())
            record = {
                "arm": arm,
                "seed": int(folder.name),
                "test": {
                    model: {
                        k: test[model][k]
                        for k in (*METRICS, "collar_f1")
                        if k in test[model]
                    }
                    for model in MODELS
                },
            }
            curve = validations(folder / "train_log.txt")
            # The teacher and the student on synth_val over training.
            record["synth_val_curve"] = [
                {
                    "epoch": epoch,
                    "steps": epochs_to_steps(epoch),
                    **{
                        f"{m}_{k}": stats[f"{m}_{k}"]
                        for m in MODELS
                        for k in ("psds1", "psds2")
                        if f"{m}_{k}" in stats
                    },
                }
                for epoch, stats in curve
            ]
            record["teacher_beats_student_on_test"] = (
                test["teacher"]["psds1"] > test["student"]["psds1"]
            )
            if curve:
                epoch, stats = curve[-1]
                record["epochs"] = epoch
                record["steps"] = epochs_to_steps(epoch)
                record["end_synth_val"] = {
                    f"{m}_{k}": stats[f"{m}_{k}"]
                    for m in MODELS
                    for k in METRICS
                    if f"{m}_{k}" in stats
                }
                record["teacher_beats_student_at_end"] = (
                    stats["teacher_psds1"] > stats["student_psds1"]
                )
            minutes = folder / "wall_minutes.txt"
            if minutes.is_file():
                record["wall_minutes"] = float(minutes.read_text())
            records.append(record)
    return records


def paired(records, arm, reference, metric):
    """Mean paired difference (arm - reference) of a teacher test metric,
    its standard error and n, over the seeds that both arms finished."""
    by_seed = {
        r["seed"]: r["test"]["teacher"][metric]
        for r in records
        if r["arm"] == reference
    }
    diffs = [
        r["test"]["teacher"][metric] - by_seed[r["seed"]]
        for r in records
        if r["arm"] == arm and r["seed"] in by_seed
    ]
    if not diffs:
        return {"n": 0}
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"n": 1, "mean": mean, "diffs": diffs}
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {
        "n": len(diffs),
        "mean": mean,
        "se": se,
        "t": mean / se if se else None,
        "diffs": diffs,
    }


def summarise(records, arms):
    """Per-arm means and the paired differences against the references."""
    summary = {}
    for arm in arms:
        runs = [r for r in records if r["arm"] == arm]
        entry = {"n": len(runs), "seeds": sorted(r["seed"] for r in runs)}
        for metric in METRICS:
            values = [r["test"]["teacher"][metric] for r in runs]
            if values:
                entry[f"teacher_{metric}_mean"] = statistics.fmean(values)
                entry[f"teacher_{metric}_std"] = (
                    statistics.stdev(values) if len(values) > 1 else None
                )
        # The selection criterion (teacher PSDS1 + PSDS2 on synth_val) of
        # the selected checkpoint: what a choice of recipe defaults may
        # look at, since the reporting split must not be used for it.
        selection = [
            max(
                p["teacher_psds1"] + p.get("teacher_psds2", 0.0)
                for p in r["synth_val_curve"]
            )
            for r in runs
            if r.get("synth_val_curve")
        ]
        entry["selection_teacher_psds_mean"] = (
            statistics.fmean(selection) if selection else None
        )
        # PSDS1 on synth_val at the last epoch, and on the test split (the
        # selected checkpoint).
        entry["teacher_beats_student_at_end"] = [
            r.get("teacher_beats_student_at_end") for r in runs
        ]
        entry["teacher_beats_student_on_test"] = [
            r["teacher_beats_student_on_test"] for r in runs
        ]
        refs = [*REFERENCES, NEIGHBOURS.get(arm)]
        entry["vs"] = {
            ref: {m: paired(records, arm, ref, m) for m in METRICS}
            for ref in refs
            if ref is not None and ref != arm
        }
        summary[arm] = entry
    return summary


def _cell(stats):
    if not stats.get("n"):
        return "–"
    if "se" not in stats:
        return f"{stats['mean']:+.3f} (n=1)"
    return f"{stats['mean']:+.3f} ± {stats['se']:.3f}"


def markdown(summary):
    """Teacher test metrics per arm, and paired differences ± SE."""
    lines = [
        "| arm | n | teacher PSDS1 | teacher PSDS2 | teacher inter. F1 "
        "| ΔPSDS1 vs (a) | ΔPSDS2 vs (a) | ΔF1 vs (a) "
        "| ΔPSDS1 vs (d) | ΔPSDS2 vs (d) | ΔF1 vs (d) "
        "| ΔPSDS1 vs its one-switch neighbour "
        "| synth_val teacher PSDS1 + PSDS2 (selection) |",
        "|---" * 13 + "|",
    ]
    for arm, entry in summary.items():
        cells = [arm, str(entry["n"])]
        for metric in METRICS:
            mean = entry.get(f"teacher_{metric}_mean")
            std = entry.get(f"teacher_{metric}_std")
            cells.append(
                "–"
                if mean is None
                else f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
            )
        for ref in REFERENCES:
            for metric in METRICS:
                stats = entry["vs"].get(ref, {}).get(metric)
                cells.append("(ref.)" if stats is None else _cell(stats))
        neighbour = NEIGHBOURS.get(arm)
        cells.append(
            "–"
            if neighbour is None
            else f"{_cell(entry['vs'][neighbour]['psds1'])} (vs {neighbour})"
        )
        selection = entry.get("selection_teacher_psds_mean")
        cells.append("–" if selection is None else f"{selection:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(records, arms, path):
    """Draw each arm's teacher and student PSDS1 on synth_val over the
    training steps (mean over the seeds that finished) into a PNG: whether
    the teacher overtakes its student, and whether the runs have
    converged, is easier to see than to read from the JSON."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    colours = dict(zip(arms, ("C0", "C1", "C2", "C3", "C4", "C5")))
    for axis, model in zip(axes, MODELS):
        for arm in arms:
            curves = [r["synth_val_curve"] for r in records if r["arm"] == arm]
            if not curves:
                continue
            points = {}
            for curve in curves:
                for point in curve:
                    if f"{model}_psds1" in point:
                        points.setdefault(point["steps"], []).append(
                            point[f"{model}_psds1"]
                        )
            steps = sorted(points)
            axis.plot(
                steps,
                [statistics.fmean(points[s]) for s in steps],
                marker="o",
                color=colours.get(arm),
                label=f"{arm} (n={len(curves)})",
            )
        axis.set_title(f"{model} PSDS1 on synth_val (mean over seeds)")
        axis.set_xlabel("training steps")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("PSDS1")
    axes[1].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def report(args, out, prep, name):
    """Write <measured>/<name>.json and print the table."""
    per_epoch = steps_per_epoch(prep, BATCH_SIZES)
    records = collect_runs(out, args.arms, lambda e: e * per_epoch)
    summary = summarise(records, args.arms)
    result = {
        "benchmark": "condmix_ablation",
        "dataset": (
            f"mini-DESED {args.scale} (generated audio, NOT DESED): test on "
            "validation (reporting only), selection and tuning on synth_val"
        ),
        "command": (
            f"python benchmarks/condmix_ablation.py --out {args.out} "
            f"--epochs {args.epochs} --valid-every {args.valid_every} "
            f"--rampup {args.rampup} --jobs {args.jobs}"
        ),
        "protocol": PROTOCOL,
        "condmix_protocol": CONDMIX_PROTOCOL,
        "schedule": schedule(args.epochs, args.valid_every, args.rampup),
        "steps_per_epoch": per_epoch,
        "planned_steps": args.epochs * per_epoch,
        "arms": {
            arm: {"hparams": y, "overrides": o, "change": c}
            for arm, (y, o, c) in ARMS.items()
            if arm in args.arms
        },
        "seeds_planned": args.seeds,
        "n_per_arm": {arm: summary[arm]["n"] for arm in args.arms},
        "complete": all(
            summary[arm]["n"] == len(args.seeds) for arm in args.arms
        ),
        "paired_metric": "teacher test metric, arm minus reference, same seed",
        "summary": summary,
        "runs": records,
    }
    if args.tune_trials:
        result["tuning"] = tuning_record(args, out.parent)
    measured = Path(args.measured)
    measured.mkdir(parents=True, exist_ok=True)
    path = measured / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    figure = plot_curves(records, args.arms, measured / f"{name}.png")
    print(markdown(summary))
    print(f"\nwritten: {path} and {figure}", file=sys.stderr)
    return result


# ----------------------------------------------------------------------
# Equal tuning budgets (--tune-trials N)

#: The seed of the tuning trials: none of the paired seeds.
TUNE_SEED = 0


def tuned_space(arm, flags):
    """The arm's search space: ``recipes/DESED/SED/search/<its YAML>``
    without the keys that the arm, the protocol or the schedule set."""
    import yaml

    hparams, extra, _ = ARMS[arm]
    space = yaml.safe_load((RECIPE / "search" / hparams).read_text())
    given = {f[2:].split("=")[0] for f in [*extra, *flags]}
    return {key: spec for key, spec in space.items() if key not in given}


def tune_arms(args, overrides, data, prep, out):
    """Tune every arm with ``sed-tune``, ``args.tune_trials`` trials each on
    the selection split (synth_val; the trials run no test stage); return
    ``{arm: [--key=value of its best trial]}``."""
    import yaml

    best = {}
    for arm in args.arms:
        study = out / "tune" / arm
        study.mkdir(parents=True, exist_ok=True)
        cmd = run_command(arm, TUNE_SEED, data, prep, study, overrides)
        flags = [str(f) for f in cmd[3:] if "--output_folder=" not in str(f)]
        space = tuned_space(arm, flags)
        (study / "space.yaml").write_text(yaml.safe_dump(space))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "speechbrain_sed_condmix.search_cli",
                str(cmd[2]),
                "--space",
                str(study / "space.yaml"),
                "--study_folder",
                str(study),
                "--n_trials",
                str(args.tune_trials),
                "--workers",
                str(args.jobs),
                "--threads",
                str(args.threads),
                *flags,
            ],
            cwd=REPO,
            env={**MALLOC_ENV, **os.environ},
            check=True,
        )
        chosen = yaml.safe_load((study / "best_overrides.yaml").read_text())
        best[arm] = [f"--{k}={chosen[k]}" for k in space]
        print(f"{arm}: tuned {' '.join(best[arm])}", flush=True)
    return best


def tuning_record(args, out):
    """The budget and each arm's tuned configuration, for the report."""
    import yaml

    arms = {}
    for arm in args.arms:
        study = out / "tune" / arm
        best = study / "best_overrides.yaml"
        space = yaml.safe_load((study / "space.yaml").read_text())
        chosen = yaml.safe_load(best.read_text()) if best.is_file() else {}
        arms[arm] = {
            "searched": space,
            "best": {k: chosen.get(k) for k in space},
            "trials_csv": str(study / "trials.csv"),
        }
    return {
        "trials_per_arm": args.tune_trials,
        "split": "synth_val (the selection split); no trial is tested",
        "seed": TUNE_SEED,
        "arms": arms,
    }


def main(argv=None):
    """Run the ablation (resumable), or report on the finished runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="runs and data folder")
    parser.add_argument("--scale", default="ssl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--valid-every", type=int, default=12)
    parser.add_argument("--rampup", type=int, default=14)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--report",
        metavar="NAME",
        help="write MEASURED/NAME.json and NAME.png from the finished runs",
    )
    parser.add_argument(
        "--measured",
        default=str(MEASURED),
        help="folder of --report's JSON (default: benchmarks/measured)",
    )
    parser.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        metavar="N",
        help="first tune every arm with N sed-tune trials on synth_val, "
        "then run the paired seeds with each arm's best configuration "
        "(in OUT/tuned)",
    )
    args, extra = parser.parse_known_args(argv)
    unknown = sorted(set(args.arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {list(ARMS)}")
    out = Path(args.out).resolve()
    runs = out / "tuned" if args.tune_trials else out
    if args.report:
        report(args, runs, out / "prep", args.report)
        return 0
    start = time.perf_counter()
    data, prep = prepare(out, args.scale)
    overrides = schedule(args.epochs, args.valid_every, args.rampup) + extra
    per_arm = None
    if args.tune_trials:
        per_arm = tune_arms(args, overrides, data, prep, out)
    failed = run_all(args, overrides, data, prep, runs, per_arm)
    minutes = (time.perf_counter() - start) / 60
    print(f"ablation finished in {minutes:.1f} min, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
