#!/usr/bin/env python3
"""The method's ablation on label-scarce mini-DESED, one recipe run per arm.

Default: the gated protocol (``--protocol gated``). It runs in two stages:

1. ``--stage gate``: a supervised-only arm (``s_supervised``: crnn_mt with
   the unsupervised weight 0, its own learning rate and dropout) against
   Mean Teacher (``a_mt``: dropout, FilterAugment views that differ
   between student and teacher, a train-mode teacher, an EMA decay fit for
   the run length), on at least 6 seeds. ``--report`` writes the gate's
   JSON (``condmix_ablation_gate_<scale>.json``): the paired difference of
   teacher PSDS2 (a_mt - s_supervised) and its SE, and whether it passes:
   more than 2 SE over at least 6 seeds.
2. ``--stage ablation``: the method's arms, refused unless the gate JSON
   of the same protocol passes (recomputed from its runs): supervised-only,
   Mean Teacher, composition only (tau = 1), conditional mixup (tau =
   0.75), + contrastive at the CNN and at the BiGRU tap, perturbation only
   (optional). The report gives paired differences +- SE against
   ``a_mt``, ``d_composition`` and ``s_supervised``, the protocol's minimal
   detectable difference (2 x the paired SE of teacher PSDS2) and the
   mixed-row statistics of each arm's mixup.

Each finished run's record goes to
``benchmarks/measured/condmix_ablation_runs/<protocol key>/<arm>/<seed>.json``
(commit it): a later session, on another machine without the checkpoints,
skips every recorded run. The key is a hash of the shared settings, so a
change of protocol starts afresh.

    python benchmarks/condmix_ablation.py --out /tmp/abl --stage gate
    python benchmarks/condmix_ablation.py --out /tmp/abl --stage gate \\
        --report condmix_ablation_gate_ssl
    python benchmarks/condmix_ablation.py --out /tmp/abl --stage ablation

``--protocol old`` is the earlier protocol, described below.

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

    python benchmarks/condmix_ablation.py --protocol old \\
        --out /work/ablation15 --jobs 2
    python benchmarks/condmix_ablation.py --protocol old \\
        --out /work/ablation15 --report condmix_ablation_ssl

``--tune-trials N`` gives every arm the same tuning budget: N ``sed-tune``
trials on synth_val over the keys of the arm's search space
(``recipes/DESED/SED/search/<YAML>_hpopt.yaml``)
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
import hashlib
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
#: The old protocol as a setup (see ``gated_setup`` for the new one).
OLD_SETUP = {
    "arms": ARMS,
    "protocol": PROTOCOL,
    "condmix": CONDMIX_PROTOCOL,
    "records": None,
}


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


def steps_per_epoch(
    prep, batch_sizes, subsets=("synth_train", "weak_train", "unlabeled")
):
    """Optimiser steps per epoch: the shortest subset ends the epoch
    (``subsets``: the recipe's ``train_subsets``, in ``batch_sizes``'
    order)."""
    sizes = [len(json.loads((prep / f"{s}.json").read_text())) for s in subsets]
    return min(n // b for n, b in zip(sizes, batch_sizes))


def schedule(epochs, valid_every, rampup):
    """Schedule overrides (epochs, ramp-up, validation cadence)."""
    return [
        f"--number_of_epochs={epochs}",
        f"--rampup_epochs={rampup}",
        f"--valid_every_n_epochs={valid_every}",
    ]


def run_command(arm, seed, data, prep, folder, overrides, setup=None):
    """The recipe command of one run (``setup``: the protocol's arms and
    shared flags, default the old protocol's)."""
    setup = setup or OLD_SETUP
    hparams, extra, _ = setup["arms"][arm]
    condmix = setup["condmix"] if hparams == "crnn_condmix.yaml" else []
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
        *setup["protocol"],
        *condmix,
        *overrides,
        *extra,
    ]


def run_one(arm, seed, data, prep, out, overrides, threads, setup=None):
    """Train and test one (arm, seed) unless done; return its status.

    With a ``setup`` that has a ``records`` folder (the gated protocol), a
    run recorded there is skipped, and a finished run's record is written
    there (``record_path``).
    """
    folder = out / arm / str(seed)
    records = (setup or {}).get("records")
    if records is not None and record_path(setup, arm, seed).is_file():
        return "skipped (recorded)"
    if (folder / "metrics.json").is_file():
        if records is not None:
            save_record(setup, arm, seed, folder)
        return "skipped (done)"
    cmd = run_command(arm, seed, data, prep, folder, overrides, setup)
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
    if records is not None:
        save_record(setup, arm, seed, folder)
    return f"done in {minutes:.1f} min"


def run_all(args, overrides, data, prep, out, setup=None, per_arm=None):
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
                setup,
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
            records.append(
                run_record(folder, arm, int(folder.name), epochs_to_steps)
            )
    return records


def run_record(folder, arm, seed, epochs_to_steps):
    """The record of one finished run in ``folder``."""
    test = json.loads((folder / "metrics.json").read_text())
    record = {
        "arm": arm,
        "seed": seed,
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
    return record


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


def summarise(records, arms, references=REFERENCES, neighbours=NEIGHBOURS):
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
        refs = [*references, neighbours.get(arm)]
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


def markdown(summary, references=REFERENCES, neighbours=NEIGHBOURS):
    """Teacher test metrics per arm, and paired differences ± SE."""
    vs = "".join(
        f"| ΔPSDS1 vs {r} | ΔPSDS2 vs {r} | ΔF1 vs {r} " for r in references
    )
    if tuple(references) == REFERENCES:  # the old table's header
        vs = (
            "| ΔPSDS1 vs (a) | ΔPSDS2 vs (a) | ΔF1 vs (a) "
            "| ΔPSDS1 vs (d) | ΔPSDS2 vs (d) | ΔF1 vs (d) "
        )
    lines = [
        "| arm | n | teacher PSDS1 | teacher PSDS2 | teacher inter. F1 "
        + vs
        + "| ΔPSDS1 vs its one-switch neighbour "
        "| synth_val teacher PSDS1 + PSDS2 (selection) |",
        "|---" * (7 + 3 * len(references)) + "|",
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
        for ref in references:
            for metric in METRICS:
                stats = entry["vs"].get(ref, {}).get(metric)
                cells.append("(ref.)" if stats is None else _cell(stats))
        neighbour = neighbours.get(arm)
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
            "python benchmarks/condmix_ablation.py --protocol old "
            f"--out {args.out} "
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
# The gated protocol

#: Where each finished run's record is kept (committed, so that a later
#: session skips it): ``<arm>-<key>/<seed>.json``.
GATED_RECORDS = MEASURED / "condmix_ablation_runs"
GATE_ARMS = ("s_supervised", "a_mt")
#: The gate: Mean Teacher minus supervised-only, teacher test PSDS2, paired
#: by seed, more than 2 SE over at least this many seeds.
GATE_MIN_SEEDS = 6
GATE_METRIC = "psds2"
GATED_REFERENCES = ("a_mt", "d_composition", "s_supervised")
GATED_NEIGHBOURS = {
    "c_condmix_contrast_cnn": "b_condmix",
    "c_condmix_contrast_bigru": "b_condmix",
    "e_perturbation": "b_condmix",
}
GATED_ARMS = (
    "s_supervised",
    "a_mt",
    "d_composition",
    "b_condmix",
    "c_condmix_contrast_cnn",
    "c_condmix_contrast_bigru",
    "e_perturbation",
)
#: The ablation's default arms (perturbation only is optional).
ABLATION_ARMS = GATED_ARMS[:-1]
GATED_BATCH_SIZES = [4, 4, 8]
GATED_CNN_FILTERS = [8, 16, 32, 32, 32, 32, 32]


def gated_setup(args):
    """Arms, shared flags and record keys of the gated protocol.

    Every arm shares the small CRNN, [4, 4, 8] batches, a train-mode
    teacher, the EMA decay and FilterAugment views drawn separately for
    the student and the teacher; the Mean Teacher and method arms share
    ``--lr`` and ``--dropout``, the supervised-only arm has its own
    (``--sup-lr``, ``--sup-dropout``) and the unsupervised weight 0.
    """
    shared = [
        f"--batch_sizes=[{','.join(map(str, GATED_BATCH_SIZES))}]",
        f"--cnn_filters=[{','.join(map(str, GATED_CNN_FILTERS))}]",
        "--rnn_hidden=64",
        "--eval_batch_size=32",
        "--num_workers=0",
        "--selection_key=teacher_psds",
        "--n_event_rolls=0",
        f"--ema_decay={args.ema_decay}",
        "--teacher_eval_mode=False",
        f"--filter_augment_prob={args.filter_augment_prob}",
    ]
    mt = [f"--lr={args.lr}", f"--dropout={args.dropout}"]
    contrast = [f"--contrastive_weight={args.contrastive_weight}"]
    both = ["--mixup_tau=0.75"]
    arms = {
        "s_supervised": (
            "crnn_mt.yaml",
            ["--const_max=0", f"--lr={args.sup_lr}"]
            + [f"--dropout={args.sup_dropout}"],
            "supervised only: crnn_mt with the Mean Teacher weight 0",
        ),
        "a_mt": ("crnn_mt.yaml", mt, "Mean Teacher (noisy student/teacher)"),
        "d_composition": (
            "crnn_condmix.yaml",
            mt + ["--mixup_tau=1.0", "--contrastive_weight=0"],
            "conditional mixup, composition only (tau = 1), pseudo-labels",
        ),
        "b_condmix": (
            "crnn_condmix.yaml",
            mt + both + ["--contrastive_weight=0"],
            "(d) with tau = 0.75: compositions and perturbations",
        ),
        "c_condmix_contrast_cnn": (
            "crnn_condmix.yaml",
            mt
            + both
            + contrast
            + ["--embedding_tap=cnn"]
            + [f"--contrastive_input_size={GATED_CNN_FILTERS[-1]}"],
            "(b) plus the contrastive loss on the CNN output",
        ),
        "c_condmix_contrast_bigru": (
            "crnn_condmix.yaml",
            mt + both + contrast + ["--embedding_tap=bigru"],
            "(b) plus the contrastive loss on the BiGRU output",
        ),
        "e_perturbation": (
            "crnn_condmix.yaml",
            mt + ["--mixup_tau=0.5", "--contrastive_weight=0"],
            "(d) with tau = 0.5: perturbations only",
        ),
    }
    # Extra recipe flags of the command line change the protocol: they go
    # to every arm, and so into the record keys.
    extra = list(getattr(args, "extra", []))
    arms = {a: (y, o + extra, c) for a, (y, o, c) in arms.items()}
    setup = {
        "arms": arms,
        "protocol": shared,
        "condmix": ["--mixup_perturbation=uniform"],
        "schedule": schedule(args.epochs, args.valid_every, args.rampup),
        "records": Path(args.records),
        "epochs_to_steps": lambda epoch: epoch * args.steps_per_epoch,
    }
    setup["keys"] = record_keys(setup, args.scale)
    return setup


def record_keys(setup, scale):
    """Per arm: a hash of everything its runs depend on."""
    keys = {}
    for arm, (hparams, overrides, _) in setup["arms"].items():
        flags = setup["protocol"] + setup["schedule"] + overrides
        if hparams == "crnn_condmix.yaml":
            flags += setup["condmix"]
        src = json.dumps([scale, hparams, flags])
        keys[arm] = hashlib.sha1(src.encode()).hexdigest()[:10]
    return keys


def record_path(setup, arm, seed):
    """The record file of one run under the setup's records folder."""
    return setup["records"] / f"{arm}-{setup['keys'][arm]}" / f"{seed}.json"


def save_record(setup, arm, seed, folder):
    """Write the record of the finished run in ``folder``."""
    record = run_record(folder, arm, seed, setup["epochs_to_steps"])
    hparams, overrides, _ = setup["arms"][arm]
    record.update(key=setup["keys"][arm], hparams=hparams, overrides=overrides)
    path = record_path(setup, arm, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load_records(setup, arms):
    """The recorded runs of ``arms`` under the setup's keys."""
    records = []
    for arm in arms:
        folder = record_path(setup, arm, 0).parent
        for path in sorted(folder.glob("*.json")):
            records.append(json.loads(path.read_text()))
    return records


def gate_statistics(records, min_seeds=GATE_MIN_SEEDS):
    """The gate: a_mt - s_supervised on teacher test PSDS2, by seed.

    Returns
    -------
    dict
        ``n``, ``mean``, ``se``, ``mdd`` (2 x SE, the minimal detectable
        difference), ``passes`` (at least ``min_seeds`` pairs and a mean
        above 2 SE) and the same statistics of PSDS1 under ``psds1``.
    """
    stats = paired(records, "a_mt", "s_supervised", GATE_METRIC)
    se = stats.get("se")
    gate = {
        "metric": f"teacher {GATE_METRIC}, a_mt - s_supervised",
        "rule": f"mean > 2 SE over >= {min_seeds} paired seeds",
        **stats,
        "mdd": None if se is None else 2 * se,
        "passes": bool(
            stats["n"] >= min_seeds
            and se is not None
            and stats["mean"] > 2 * se
        ),
        "psds1": paired(records, "a_mt", "s_supervised", "psds1"),
    }
    return gate


def check_gate(path, setup):
    """Refuse the ablation unless the gate JSON at ``path`` passes.

    The gate is recomputed from the JSON's runs, which must have been run
    with this protocol (the same record keys).
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(
            f"--stage ablation: no gate result at {path}. Run --stage gate "
            "and its --report first; no method arm runs before the gate "
            "passes."
        )
    gate_json = json.loads(path.read_text())
    runs = [
        r
        for r in gate_json.get("runs", [])
        if r.get("arm") in GATE_ARMS and r.get("key") == setup["keys"][r["arm"]]
    ]
    gate = gate_statistics(runs)
    if not gate["passes"]:
        detail = f"n = {gate['n']} paired seeds" + (
            f", mean {gate['mean']:+.4f}, SE {gate['se']:.4f}"
            if gate.get("se") is not None
            else ""
        )
        raise SystemExit(
            f"--stage ablation refused: the gate in {path} does not pass "
            f"for this protocol ({gate['metric']}: {detail}; needs "
            f"{gate['rule']}). Runs of another protocol (other record keys) "
            "do not count."
        )
    return gate


class _Ref(str):
    """A ``!ref <name>`` of a YAML read without its components."""


def _yaml_values(path):
    """A recipe YAML's plain values, tags kept as their mappings / refs."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return {"__class__": suffix, **loader.construct_mapping(node)}
        if isinstance(node, yaml.ScalarNode) and suffix == "ref":
            return _Ref(node.value.strip("<>"))
        return None

    Loader.add_multi_constructor("!", tagged)
    return yaml.load(Path(path).read_text(), Loader=Loader)


def arm_mix_statistics(hparams, overrides, calls=500):
    """Mixed-row statistics of an arm's mixup, drawn from its YAML values
    and overrides (the configuration, not a log of the training draws)."""
    import importlib

    import yaml

    sys.path.insert(0, str(REPO))
    from speechbrain_sed_condmix.augment.mixup import mixup_statistics

    values = _yaml_values(RECIPE / "hparams" / hparams)
    for flag in overrides:
        key, _, value = flag[2:].partition("=")
        values[key] = yaml.safe_load(value)

    def resolve(v):
        return values.get(v) if isinstance(v, _Ref) else v

    spec = dict(values["mixup"])
    module, _, name = spec.pop("__class__").split(":", 1)[1].rpartition(".")
    mixup = getattr(importlib.import_module(module), name)(
        **{k: resolve(v) for k, v in spec.items()}
    )
    sizes = dict(zip(values["train_subsets"], values["batch_sizes"]))
    kind = {"synth_train": "strong", "strong_train": "strong"}
    kind.update(weak_train="weak", unlabeled="unlabeled")
    groups = [
        sum(n for subset, n in sizes.items() if kind.get(subset) == name)
        for name in values["mix_subsets"]
    ]
    rows = sum(sizes.values())
    stats = mixup_statistics(mixup, groups, calls=calls)
    # Rows outside every mixed group (e.g. crnn_mt's unlabeled) count too.
    stats["unmixed_group_rows"] = (rows - sum(groups)) * calls
    stats["rows"] += stats["unmixed_group_rows"]
    stats["mixed_share"] = stats["mixed"] / stats["rows"]
    stats["source"] = (
        f"{calls} batches drawn from the arm's mixup configuration"
    )
    return stats


def gated_report(args, setup, stage, name):
    """Write the gate's or the ablation's JSON and PNG; print the table."""
    arms = list(GATE_ARMS) if stage == "gate" else args.arms
    records = load_records(setup, arms)
    references = ("s_supervised",) if stage == "gate" else GATED_REFERENCES
    summary = summarise(records, arms, references, GATED_NEIGHBOURS)
    for arm in arms:
        hparams, overrides, _ = setup["arms"][arm]
        batch = [f"--batch_sizes={GATED_BATCH_SIZES}"]
        summary[arm]["mix_statistics"] = arm_mix_statistics(
            hparams,
            overrides + setup["condmix"] * (hparams != "crnn_mt.yaml") + batch,
        )
    gate = gate_statistics(records)
    mdd = {
        arm: {
            ref: 2 * entry["vs"][ref]["psds2"]["se"]
            for ref in entry["vs"]
            if entry["vs"][ref]["psds2"].get("se") is not None
        }
        for arm, entry in summary.items()
    }
    result = {
        "benchmark": "condmix_ablation",
        "protocol_name": "gated",
        "stage": stage,
        "dataset": (
            f"mini-DESED {args.scale} (generated audio, NOT DESED): test on "
            "validation (reporting only), selection on synth_val"
        ),
        "protocol": setup["protocol"],
        "condmix_protocol": setup["condmix"],
        "schedule": setup["schedule"],
        "steps_per_epoch": args.steps_per_epoch,
        "planned_steps": args.epochs * args.steps_per_epoch,
        "arms": {
            arm: {
                "hparams": y,
                "overrides": o,
                "change": c,
                "key": setup["keys"][arm],
            }
            for arm, (y, o, c) in setup["arms"].items()
            if arm in arms
        },
        "seeds_planned": args.seeds,
        "n_per_arm": {arm: summary[arm]["n"] for arm in arms},
        "complete": all(summary[a]["n"] == len(args.seeds) for a in arms),
        "paired_metric": "teacher test metric, arm minus reference, same seed",
        "gate": gate,
        "minimal_detectable_difference_psds2": mdd,
        "summary": summary,
        "runs": records,
    }
    if getattr(args, "tune_trials", 0):
        result["tuning"] = tuning_record(args, Path(args.out).resolve())
    measured = Path(args.measured)
    measured.mkdir(parents=True, exist_ok=True)
    path = measured / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    figure = plot_curves(records, arms, measured / f"{name}.png")
    print(markdown(summary, references, GATED_NEIGHBOURS))
    verdict = "passes" if gate["passes"] else "does not pass"
    print(f"\ngate ({gate['metric']}, n = {gate['n']}): {verdict}")
    print(f"written: {path} and {figure}", file=sys.stderr)
    return result


# ----------------------------------------------------------------------
# Equal tuning budgets (--tune-trials N)

#: The seed of the tuning trials: none of the paired seeds.
TUNE_SEED = 0


def tuned_space(arm, flags, setup=None):
    """The arm's search space: ``recipes/DESED/SED/search/<YAML>_hpopt.yaml``
    without the keys that the arm, the protocol or the schedule set
    (``setup``: the protocol's arms, default the old protocol's)."""
    import yaml

    hparams, extra, _ = (setup or OLD_SETUP)["arms"][arm]
    # ``*_hpopt.yaml``: SpeechBrain's name for a search file, which its
    # recipe checks do not take for a recipe.
    space_file = RECIPE / "search" / hparams.replace(".yaml", "_hpopt.yaml")
    space = yaml.safe_load(space_file.read_text())
    given = {f[2:].split("=")[0] for f in [*extra, *flags]}
    return {key: spec for key, spec in space.items() if key not in given}


def tune_arms(args, overrides, data, prep, out, setup=None):
    """Tune every arm with ``sed-tune``, ``args.tune_trials`` trials each on
    the selection split (synth_val; the trials run no test stage); return
    ``{arm: [--key=value of its best trial]}``."""
    import yaml

    best = {}
    for arm in args.arms:
        study = out / "tune" / arm
        study.mkdir(parents=True, exist_ok=True)
        cmd = run_command(arm, TUNE_SEED, data, prep, study, overrides, setup)
        flags = [str(f) for f in cmd[3:] if "--output_folder=" not in str(f)]
        space = tuned_space(arm, flags, setup)
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
        best[arm] = tuned_flags(study)
        print(f"{arm}: tuned {' '.join(best[arm])}", flush=True)
    return best


def tuned_flags(study):
    """``[--key=value]`` of a finished study's best trial, over the keys
    it searched."""
    import yaml

    space = yaml.safe_load((study / "space.yaml").read_text())
    chosen = yaml.safe_load((study / "best_overrides.yaml").read_text())
    return [f"--{k}={chosen[k]}" for k in space]


def with_tuned_arms(setup, per_arm, scale):
    """The gated setup with each arm's tuned flags added to its own, so
    that the record keys of tuned runs differ from the untuned ones."""
    arms = {
        a: (y, o + per_arm.get(a, []), c)
        for a, (y, o, c) in setup["arms"].items()
    }
    tuned = {**setup, "arms": arms}
    tuned["keys"] = record_keys(tuned, scale)
    return tuned


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


def build_parser():
    """The command line (gated protocol by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="runs and data folder")
    parser.add_argument(
        "--protocol",
        choices=("gated", "old"),
        default="gated",
        help="gated (default): gate first, then the ablation; old: the "
        "earlier five-arm protocol",
    )
    parser.add_argument(
        "--stage",
        choices=("gate", "ablation"),
        default="gate",
        help="gated protocol: the gate (supervised vs Mean Teacher) or the "
        "ablation (refused unless the gate JSON passes)",
    )
    parser.add_argument("--scale", default="ssl")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--arms", nargs="+")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--valid-every", type=int)
    parser.add_argument("--rampup", type=int)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    gated = parser.add_argument_group("gated protocol")
    gated.add_argument("--lr", type=float, default=1e-3)
    gated.add_argument("--dropout", type=float, default=0.5)
    gated.add_argument(
        "--sup-lr", type=float, default=1e-3, help="supervised-only arm"
    )
    gated.add_argument(
        "--sup-dropout", type=float, default=0.5, help="supervised-only arm"
    )
    gated.add_argument(
        "--ema-decay",
        type=float,
        default=0.999,
        help="teacher EMA; fit it to the run: its horizon 1 / (1 - decay) "
        "steps (1,000 at 0.999) about a tenth of the planned steps",
    )
    gated.add_argument("--filter-augment-prob", type=float, default=1.0)
    gated.add_argument("--contrastive-weight", type=float, default=1.0)
    gated.add_argument(
        "--steps-per-epoch",
        type=int,
        help="default: from the prepared data (OUT/prep)",
    )
    gated.add_argument(
        "--records",
        default=str(GATED_RECORDS),
        help="folder of the per-run records (committed, for resuming)",
    )
    gated.add_argument(
        "--gate-json",
        help="the gate's result (default MEASURED/"
        "condmix_ablation_gate_<scale>.json)",
    )
    parser.add_argument(
        "--report",
        metavar="NAME",
        nargs="?",
        const="",
        help="write MEASURED/NAME.json and NAME.png from the finished runs "
        "(gated: NAME defaults to condmix_ablation_gate_<scale> or "
        "condmix_ablation_gated_<scale>)",
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
    return parser


#: Defaults that differ between the protocols.
PROTOCOL_DEFAULTS = {
    "old": {
        "seeds": [1, 2, 3, 4],
        "epochs": 60,
        "valid_every": 12,
        "rampup": 14,
    },
    # 500 epochs of 12 steps ([4, 4, 8] batches on mini-DESED ssl): 6,000
    # steps, six times the EMA horizon of 0.999.
    "gated": {
        "seeds": [1, 2, 3, 4, 5, 6, 7, 8],
        "epochs": 500,
        "valid_every": 50,
        "rampup": 40,
    },
}


def main(argv=None):
    """Run the gate or the ablation (resumable), or report on them."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    for key, value in PROTOCOL_DEFAULTS[args.protocol].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = Path(args.out).resolve()
    if args.protocol == "old":
        args.arms = args.arms or list(ARMS)
        unknown = sorted(set(args.arms) - set(ARMS))
        if unknown:
            parser.error(f"unknown arms {unknown}; choose from {list(ARMS)}")
        runs = out / "tuned" if args.tune_trials else out
        if args.report is not None:
            if not args.report:
                parser.error("--protocol old: --report needs a NAME")
            report(args, runs, out / "prep", args.report)
            return 0
        start = time.perf_counter()
        data, prep = prepare(out, args.scale)
        overrides = schedule(args.epochs, args.valid_every, args.rampup)
        overrides += extra
        per_arm = None
        if args.tune_trials:
            per_arm = tune_arms(args, overrides, data, prep, out)
        failed = run_all(args, overrides, data, prep, runs, per_arm=per_arm)
        minutes = (time.perf_counter() - start) / 60
        print(f"ablation finished in {minutes:.1f} min, {failed} failed")
        return 1 if failed else 0
    return main_gated(parser, args, extra, out)


def main_gated(parser, args, extra, out):
    """The gated protocol: the gate stage, then the ablation stage."""
    default_arms = GATE_ARMS if args.stage == "gate" else ABLATION_ARMS
    args.arms = args.arms or list(default_arms)
    unknown = sorted(set(args.arms) - set(GATED_ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {GATED_ARMS}")
    if args.stage == "gate" and set(args.arms) - set(GATE_ARMS):
        parser.error(
            f"--stage gate runs only {list(GATE_ARMS)}: no method arm runs "
            "before the gate passes (then use --stage ablation)"
        )
    prep = out / "prep"
    if args.steps_per_epoch is None:
        if (prep / "weak_train.json").is_file():
            args.steps_per_epoch = steps_per_epoch(prep, GATED_BATCH_SIZES)
        elif args.report is None:
            args.steps_per_epoch = None  # set after the data is prepared
        else:
            parser.error(f"no {prep}: pass --steps-per-epoch")
    args.extra = extra
    setup = gated_setup(args)
    runs = out / "tuned" if args.tune_trials else out
    if args.tune_trials and args.report is not None:
        # The tuned configurations of the finished studies.
        per_arm = {a: tuned_flags(out / "tune" / a) for a in args.arms}
        setup = with_tuned_arms(setup, per_arm, args.scale)
    gate_json = Path(
        args.gate_json
        or Path(args.measured) / f"condmix_ablation_gate_{args.scale}.json"
    )
    if args.report is not None:
        name = args.report or (
            f"condmix_ablation_gate_{args.scale}"
            if args.stage == "gate"
            else f"condmix_ablation_gated_{args.scale}"
        )
        if args.stage == "ablation":
            check_gate(gate_json, setup)
        gated_report(args, setup, args.stage, name)
        return 0
    if args.stage == "ablation":
        gate = check_gate(gate_json, setup)
        print(
            f"gate passed: {gate['metric']} {gate['mean']:+.4f} ± "
            f"{gate['se']:.4f} (n = {gate['n']})"
        )
    start = time.perf_counter()
    data, prep = prepare(out, args.scale)
    if args.steps_per_epoch is None:
        args.steps_per_epoch = steps_per_epoch(prep, GATED_BATCH_SIZES)
    overrides = setup["schedule"]
    if args.tune_trials:
        per_arm = tune_arms(args, overrides, data, prep, out, setup)
        setup = with_tuned_arms(setup, per_arm, args.scale)
    failed = run_all(args, overrides, data, prep, runs, setup)
    minutes = (time.perf_counter() - start) / 60
    print(f"{args.stage} finished in {minutes:.1f} min, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
