#!/usr/bin/env python3
"""The method in the paper's regime: a pretrained encoder, two stages.

On label-scarce mini-DESED (``--scale ssl``: generated audio, NOT DESED),
from an ATST-Frame pretraining checkpoint (``--ckpt``: the file that the
SSL recipe writes, e.g. the one of ``benchmarks/pretrain_probe.py``'s
stage A), for every seed:

1. **stage 1** (``s1_frozen``): ``atst_sed_stage1.yaml --atst_ckpt=CKPT``,
   the pretrained encoder frozen, once per seed;
2. **stage 2**: five arms on ``atst_sedv2.yaml``, each from the seed's
   stage-1 result (``--stage1_ckpt``), each one switch from its
   neighbour (``ARMS``; ``arm_settings`` gives every arm's full override
   dict):

   * ``s2_supervised``: no unsupervised term (Mean Teacher and
     pseudo-label weights 0), so that the semi-supervised gain is visible;
   * ``v1_mt_ict``: ATST-SED v1's stage 2, Mean Teacher + ICT (conditional
     mixup with tau = 1: every mix a composition);
   * ``condmix``: + conditional mixup, both modes (tau = 0.75);
   * ``condmix_contrast``: + the embedding-level contrastive loss on the
     ATST-Frame output, its projector and predictor loaded from CKPT;
   * ``contrast_random_heads``: the same with random heads (what
     ``atst_sedv2.yaml`` does without ``contrastive_heads_ckpt``).

   ``v1_mt_ict`` draws its mixup per clip, as ``atst_sedv2.yaml`` does;
   ``atst_sed_stage2.yaml`` draws one coefficient per subset. Keeping one
   YAML keeps every arm one switch from its neighbour.

The stage-2 arms are refused unless the linear-probe gate passed: the
probe's JSON (``benchmarks/measured/pretrain_probe*.json``, or
``--probe-json``) must hold a top-level ``gate_passed: true``.
``--ignore-gate`` runs them anyway, for debugging only: their records say
so.

Selection (checkpoints: teacher PSDS1 + PSDS2) and the post-processing
tuning use ``synth_val`` only; the 320-clip ``validation`` split only
reports. Each finished run's record goes to
``benchmarks/measured/pretrain_ablation_runs/<arm>-<key>/<seed>.json``
(commit it): a later session skips every recorded run, and an interrupted
run resumes from its checkpoints in ``OUT``. The key hashes everything the
run depends on (scale, YAML, flags, schedule, the checkpoint's SHA-256 and,
for stage 2, the stage-1 key), so a change starts afresh.

    python benchmarks/pretrain_ablation.py --out /tmp/pabl --ckpt CKPT
    python benchmarks/pretrain_ablation.py --out /tmp/pabl --ckpt CKPT \\
        --report

``--report [NAME]`` trains nothing: it writes
``benchmarks/measured/NAME.json`` (default
``pretrain_ablation_<scale>``): the runs, the paired differences ± SE of
teacher PSDS1, PSDS2 and intersection F1 against ``s2_supervised``,
``v1_mt_ict`` and each arm's one-switch neighbour, and the minimal
detectable difference (2 x the paired SE of teacher PSDS2); the synth_val
learning curves go to ``NAME.png`` (stage 2) and ``NAME_stage1.png``.
"""

import argparse
import concurrent.futures
import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import condmix_ablation as cma  # noqa: E402

REPO = cma.REPO
MEASURED = cma.MEASURED
RECORDS = MEASURED / "pretrain_ablation_runs"
STAGE1 = "s1_frozen"
STAGE1_YAML = "atst_sed_stage1.yaml"
STAGE2_YAML = "atst_sedv2.yaml"
#: DESED's batch composition, scaled to mini-DESED ssl (12 strong real,
#: 100 synthetic, 56 weak clips: an epoch is 6 steps).
TRAIN_SUBSETS = ("strong_train", "synth_train", "weak_train", "unlabeled")
BATCH_SIZES = [2, 4, 4, 8]
#: The probe gate's JSON, written by benchmarks/pretrain_probe.py.
PROBE_GLOB = "pretrain_probe*.json"
GATE_KEY = "gate_passed"

#: ``{arm: (neighbour, switch, what it changes)}``, in queue order. The
#: switch is the override dict applied to the neighbour's settings.
ARMS = {
    "s2_supervised": (
        "v1_mt_ict",
        {"const_max": 0.0, "pseudo_label_weight": 0.0},
        "no unsupervised term: v1_mt_ict with the Mean Teacher and "
        "pseudo-label weights 0",
    ),
    "v1_mt_ict": (
        None,
        {},
        "ATST-SED v1 stage 2: Mean Teacher + ICT (tau = 1, compositions)",
    ),
    "condmix": (
        "v1_mt_ict",
        {"mixup_tau": 0.75},
        "+ conditional mixup: compositions and perturbations (tau = 0.75)",
    ),
    "condmix_contrast": (
        "condmix",
        {"contrastive_weight": "<contrastive_weight>"},
        "+ the embedding-level contrastive loss, heads from pretraining",
    ),
    "contrast_random_heads": (
        "condmix_contrast",
        {"contrastive_heads_ckpt": None},
        "the same with random projector and predictor",
    ),
}
STAGE2_ARMS = tuple(ARMS)
REFERENCES = ("s2_supervised", "v1_mt_ict")
NEIGHBOURS = {arm: n for arm, (n, _, _) in ARMS.items() if n is not None}


def file_sha256(path):
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_architecture(path):
    """The encoder and head sizes of an ATST-Frame pretraining file.

    Returns
    -------
    dict
        ``atst_dim``, ``atst_depth``, ``atst_heads`` (from its
        ``hyper_parameters``), ``projector_hidden`` and ``projection_size``
        (from the shapes of the student's projector).

    Raises
    ------
    SystemExit
        If the file lacks the hyper-parameters or the heads, naming the
        file and the missing entry.
    """
    sys.path.insert(0, str(REPO))
    from speechbrain_sed_condmix.lobes.atst import load_atst_heads
    from speechbrain_sed_condmix.safe_load import load_checkpoint

    ckpt = load_checkpoint(path)
    hyper = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    missing = [
        k
        for k in ("embed_dim", "depth", "num_heads")
        if not isinstance(hyper, dict) or k not in hyper
    ]
    if missing:
        raise SystemExit(
            f"{path}: not an ATST-Frame pretraining checkpoint of the SSL "
            f"recipe: hyper_parameters lacks {missing}"
        )
    heads = load_atst_heads(ckpt)
    projector = heads.get("student_projector", {})
    if "0.weight" not in projector or "3.weight" not in projector:
        raise SystemExit(
            f"{path}: no student projector (model.student.projector.0/3."
            "weight): the contrastive arm needs the pretraining heads"
        )
    return {
        "atst_dim": int(hyper["embed_dim"]),
        "atst_depth": int(hyper["depth"]),
        "atst_heads": int(hyper["num_heads"]),
        "projector_hidden": int(projector["0.weight"].shape[0]),
        "projection_size": int(projector["3.weight"].shape[0]),
    }


def model_settings(args, arch):
    """Settings shared by stage 1 and stage 2 (the stage-1 result loads
    strictly into stage 2, so the model must be the same)."""
    return {
        "atst_dim": arch["atst_dim"],
        "atst_depth": arch["atst_depth"],
        "atst_heads": arch["atst_heads"],
        "cnn_filters": list(args.cnn_filters),
        "rnn_hidden": args.rnn_hidden,
        "train_subsets": list(TRAIN_SUBSETS),
        "batch_sizes": list(args.batch_sizes),
        "eval_batch_size": 32,
        "num_workers": 0,
        "selection_key": "teacher_psds",
        "n_event_rolls": 0,
    }


def stage1_settings(args, arch, ckpt):
    """The stage-1 run's overrides: the pretrained encoder, frozen."""
    return {**model_settings(args, arch), "atst_ckpt": str(ckpt)}


def stage2_base(args, arch, ckpt):
    """The settings every stage-2 arm starts from (v1_mt_ict's)."""
    return {
        **model_settings(args, arch),
        "stage1_selection_key": "teacher_psds",
        "embedding_tap": "encoder_embeddings",
        "projector_hidden": arch["projector_hidden"],
        "projection_size": arch["projection_size"],
        "contrastive_heads_ckpt": str(ckpt),
        "mixup_tau": 1.0,
        "contrastive_weight": 0.0,
    }


def arm_settings(args, arch, ckpt):
    """Every stage-2 arm's full override dict: its neighbour's with the
    arm's switch applied (``ARMS``)."""
    base = stage2_base(args, arch, ckpt)
    values = {"<contrastive_weight>": args.contrastive_weight}
    settings = {}

    def resolve(arm):
        if arm not in settings:
            neighbour, switch, _ = ARMS[arm]
            start = base if neighbour is None else resolve(neighbour)
            switched = {k: values.get(v, v) for k, v in switch.items()}
            settings[arm] = {**start, **switched}
        return settings[arm]

    return {arm: resolve(arm) for arm in ARMS}


def flags(settings):
    """Recipe flags (``--key=value``, YAML values) of an override dict."""
    out = []
    for key, value in settings.items():
        if value is None:
            text = "null"
        elif isinstance(value, bool):
            text = str(value)
        elif isinstance(value, list):
            text = "[" + ",".join(map(str, value)) + "]"
        else:
            text = str(value)
        out.append(f"--{key}={text}")
    return out


def _key(*parts):
    src = json.dumps(parts, sort_keys=True)
    return hashlib.sha1(src.encode()).hexdigest()[:10]


def _setup(arms, schedule, records, per_epoch, keys):
    """A ``condmix_ablation`` setup: its run machinery runs any arm whose
    overrides are complete (no shared protocol flags)."""
    return {
        "arms": arms,
        "protocol": [],
        "condmix": [],
        "schedule": schedule,
        "records": Path(records),
        "keys": keys,
        "epochs_to_steps": lambda epoch: epoch * per_epoch,
    }


def build_setups(args, arch, ckpt_sha):
    """Stage 1's and stage 2's setups, with their record keys.

    Paths (the checkpoint, the stage-1 folder) are left out of the keys;
    the checkpoint's SHA-256 stands for it, and each stage-2 key includes
    the stage-1 key.
    """
    ckpt = Path(args.ckpt).resolve() if args.ckpt else Path("<ckpt>")
    s1 = stage1_settings(args, arch, ckpt)
    s1_schedule = cma.schedule(args.s1_epochs, args.valid_every, args.rampup)
    s1_flags = flags({k: v for k, v in s1.items() if k != "atst_ckpt"})
    s1_key = _key(args.scale, STAGE1_YAML, s1_flags, s1_schedule, ckpt_sha)
    stage1 = _setup(
        {STAGE1: (STAGE1_YAML, flags(s1), "stage 1: pretrained ATST frozen")},
        s1_schedule,
        args.records,
        args.steps_per_epoch,
        {STAGE1: s1_key},
    )
    s2_schedule = cma.schedule(args.epochs, args.valid_every, args.rampup)
    settings = arm_settings(args, arch, ckpt)
    arms, keys = {}, {}
    for arm, values in settings.items():
        heads = values.get("contrastive_heads_ckpt") is not None
        hashed = {
            k: v for k, v in values.items() if k != "contrastive_heads_ckpt"
        }
        keys[arm] = _key(
            args.scale,
            STAGE2_YAML,
            flags(hashed),
            heads,
            s2_schedule,
            ckpt_sha,
            s1_key,
        )
        arms[arm] = (STAGE2_YAML, flags(values), ARMS[arm][2])
    stage2 = _setup(arms, s2_schedule, args.records, args.steps_per_epoch, keys)
    stage2["settings"] = settings
    return stage1, stage2


# ----------------------------------------------------------------------
# The gate


def find_probe_json(measured, given=None):
    """The probe gate's JSON: ``given``, else the one
    ``pretrain_probe*.json`` in ``measured``."""
    if given:
        return Path(given)
    found = sorted(Path(measured).glob(PROBE_GLOB))
    if not found:
        raise SystemExit(
            f"stage 2 refused: no probe gate result ({measured}/{PROBE_GLOB})"
            ". Run benchmarks/pretrain_probe.py first, or pass --probe-json;"
            " --ignore-gate runs it anyway (debugging only)."
        )
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SystemExit(
            f"several probe results in {measured} ({names}): name the one "
            "of this checkpoint with --probe-json"
        )
    return found[0]


def check_probe_gate(path):
    """Refuse stage 2 unless ``path`` holds ``"gate_passed": true``.

    Returns
    -------
    dict
        ``{"path": ..., "gate_passed": True}``.

    Raises
    ------
    SystemExit
        If the file is missing, is not a JSON object, lacks the top-level
        boolean ``gate_passed``, or says false.
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"stage 2 refused: no probe gate result at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SystemExit(
            f"{path}, line {err.lineno}: not valid JSON ({err.msg})"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get(GATE_KEY), bool):
        raise SystemExit(
            f"{path}: expected a top-level boolean '{GATE_KEY}' (the "
            "linear-probe gate's verdict); stage 2 refused"
        )
    if not data[GATE_KEY]:
        raise SystemExit(
            f"stage 2 refused: {path} says {GATE_KEY}: false (the "
            "pretrained encoder's probe does not beat the random one by "
            "more than 2 SE). --ignore-gate runs it anyway, for debugging."
        )
    return {"path": str(path), GATE_KEY: True}


def gate_status(args):
    """The gate's verdict for stage 2, or the override's."""
    if args.ignore_gate:
        return {"overridden": True, GATE_KEY: None}
    path = find_probe_json(args.measured, args.probe_json)
    return {"overridden": False, **check_probe_gate(path)}


# ----------------------------------------------------------------------
# Runs


def _annotate(setup, arm, seed, **fields):
    path = cma.record_path(setup, arm, seed)
    if path.is_file():
        record = json.loads(path.read_text())
        record.update(fields)
        path.write_text(json.dumps(record, indent=1) + "\n")


def pending(setup, arms, seed):
    """The arms of ``setup`` that have no record for ``seed``."""
    return [
        arm for arm in arms if not cma.record_path(setup, arm, seed).is_file()
    ]


def run_seed(args, stage1, stage2, data, prep, out, gate):
    """One seed: stage 1 (unless every run needing it is recorded), then
    its pending stage-2 arms. Returns ``[(arm, status)]``."""
    seed = args.seed_now
    common = [f"--device={args.device}"]
    todo = pending(stage2, args.arms, seed) if args.stage != "stage1" else []
    folder = out / STAGE1 / str(seed)
    statuses = []
    if todo and not (folder / "metrics.json").is_file():
        # Stage 2 needs the stage-1 checkpoints here, even when recorded.
        bare = {**stage1, "records": None}
        status = cma.run_one(
            STAGE1,
            seed,
            data,
            prep,
            out,
            stage1["schedule"] + common,
            args.threads,
            bare,
        )
        if not status.startswith("failed"):
            cma.save_record(stage1, STAGE1, seed, folder)
    else:
        status = cma.run_one(
            STAGE1,
            seed,
            data,
            prep,
            out,
            stage1["schedule"] + common,
            args.threads,
            stage1,
        )
    statuses.append((STAGE1, status))
    if status.startswith("failed"):
        return statuses
    for arm in todo:
        extra = [f"--stage1_ckpt={folder}"]
        status = cma.run_one(
            arm,
            seed,
            data,
            prep,
            out,
            stage2["schedule"] + extra + common,
            args.threads,
            stage2,
        )
        if not status.startswith("skipped (recorded)"):
            _annotate(stage2, arm, seed, gate=gate)
        statuses.append((arm, status))
    return statuses


def run_all(args, stage1, stage2, data, prep, out, gate):
    """Every seed, ``args.jobs`` seeds at a time (seed-major within)."""
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {}
        for seed in args.seeds:
            seed_args = argparse.Namespace(**vars(args), seed_now=seed)
            futures[
                pool.submit(
                    run_seed, seed_args, stage1, stage2, data, prep, out, gate
                )
            ] = seed
        for future in concurrent.futures.as_completed(futures):
            seed = futures[future]
            for arm, status in future.result():
                failed += status.startswith("failed")
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} {arm} seed {seed}: {status}", flush=True)
    return failed


# ----------------------------------------------------------------------
# Report


def minimal_detectable_difference(summary):
    """Per arm and comparison: 2 x the paired SE of teacher PSDS2."""
    return {
        arm: {
            ref: 2 * stats["psds2"]["se"]
            for ref, stats in entry["vs"].items()
            if stats["psds2"].get("se") is not None
        }
        for arm, entry in summary.items()
    }


def build_report(args, stage1, stage2, gate):
    """The report's dict from the recorded runs."""
    s1_records = cma.load_records(stage1, [STAGE1])
    records = cma.load_records(stage2, args.arms)
    summary = cma.summarise(records, args.arms, REFERENCES, NEIGHBOURS)
    s1_summary = cma.summarise(s1_records, [STAGE1], (), {})
    return {
        "benchmark": "pretrain_ablation",
        "dataset": (
            f"mini-DESED {args.scale} (generated audio, NOT DESED): test on "
            "validation (reporting only), selection and tuning on synth_val"
        ),
        "checkpoint": {"sha256": args.ckpt_sha, "architecture": args.arch},
        "gate": gate,
        "stage1": {
            "hparams": STAGE1_YAML,
            "overrides": stage1["arms"][STAGE1][1],
            "schedule": stage1["schedule"],
            "key": stage1["keys"][STAGE1],
            "summary": s1_summary[STAGE1],
        },
        "schedule": stage2["schedule"],
        "steps_per_epoch": args.steps_per_epoch,
        "planned_steps": {
            "stage1": args.s1_epochs * args.steps_per_epoch,
            "stage2": args.epochs * args.steps_per_epoch,
        },
        "arms": {
            arm: {
                "hparams": STAGE2_YAML,
                "neighbour": ARMS[arm][0],
                "switch": ARMS[arm][1],
                "change": ARMS[arm][2],
                "overrides": stage2["arms"][arm][1],
                "key": stage2["keys"][arm],
            }
            for arm in args.arms
        },
        "seeds_planned": args.seeds,
        "n_per_arm": {arm: summary[arm]["n"] for arm in args.arms},
        "complete": all(summary[a]["n"] == len(args.seeds) for a in args.arms),
        "paired_metric": "teacher test metric, arm minus reference, same seed",
        "minimal_detectable_difference_psds2": (
            minimal_detectable_difference(summary)
        ),
        "summary": summary,
        "runs": records,
        "stage1_runs": s1_records,
    }


def write_report(args, stage1, stage2, gate, name):
    """Write MEASURED/NAME.json, NAME.png, NAME_stage1.png; print the
    table."""
    result = build_report(args, stage1, stage2, gate)
    measured = Path(args.measured)
    measured.mkdir(parents=True, exist_ok=True)
    path = measured / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    cma.plot_curves(result["runs"], args.arms, measured / f"{name}.png")
    if result["stage1_runs"]:
        cma.plot_curves(
            result["stage1_runs"], [STAGE1], measured / f"{name}_stage1.png"
        )
    print(cma.markdown(result["summary"], REFERENCES, NEIGHBOURS))
    print(f"written: {path} and its PNGs", file=sys.stderr)
    return result


# ----------------------------------------------------------------------


def build_parser():
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="runs and data folder")
    parser.add_argument(
        "--ckpt",
        required=True,
        help="ATST-Frame pretraining checkpoint (the SSL recipe's "
        "atst_frame_pretrain.ckpt, e.g. pretrain_probe.py's stage A)",
    )
    parser.add_argument(
        "--stage",
        choices=("all", "stage1", "stage2"),
        default="all",
        help="stage1: only the frozen-encoder runs (no gate needed); "
        "stage2 / all: also the arms (refused unless the probe gate passed)",
    )
    parser.add_argument("--scale", default="ssl")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6]
    )
    parser.add_argument("--arms", nargs="+", default=list(STAGE2_ARMS))
    parser.add_argument("--s1-epochs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=300, help="stage 2")
    parser.add_argument("--valid-every", type=int, default=20)
    parser.add_argument("--rampup", type=int, default=10)
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs=4,
        default=BATCH_SIZES,
        metavar="N",
        help=f"clips of {', '.join(TRAIN_SUBSETS)} per batch",
    )
    parser.add_argument(
        "--cnn-filters",
        type=int,
        nargs=7,
        default=cma.GATED_CNN_FILTERS,
        metavar="N",
    )
    parser.add_argument("--rnn-hidden", type=int, default=64)
    parser.add_argument("--contrastive-weight", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="seeds at once")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        help="default: from the prepared data (OUT/prep)",
    )
    parser.add_argument(
        "--records",
        default=str(RECORDS),
        help="folder of the per-run records (committed, for resuming)",
    )
    parser.add_argument(
        "--probe-json",
        help="the probe gate's result (default: the one "
        f"MEASURED/{PROBE_GLOB})",
    )
    parser.add_argument(
        "--ignore-gate",
        action="store_true",
        help="run stage 2 although the probe gate did not pass (debugging "
        "only; the records say so)",
    )
    parser.add_argument(
        "--report",
        metavar="NAME",
        nargs="?",
        const="",
        help="write MEASURED/NAME.json and PNGs from the recorded runs "
        "(default NAME: pretrain_ablation_<scale>)",
    )
    parser.add_argument("--measured", default=str(MEASURED))
    return parser


def main(argv=None):
    """Run stage 1 and the stage-2 arms (resumable), or report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = sorted(set(args.arms) - set(STAGE2_ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; choose from {STAGE2_ARMS}")
    ckpt = Path(args.ckpt)
    if not ckpt.is_file():
        parser.error(f"--ckpt {ckpt}: no such file")
    out = Path(args.out).resolve()
    if args.report is not None:
        # A report trains nothing: it says where the gate stands.
        try:
            gate = gate_status(args)
        except SystemExit as refusal:
            gate = {
                "overridden": False,
                GATE_KEY: None,
                "refusal": str(refusal),
            }
    elif args.stage != "stage1":
        # Stage 2 is refused before anything runs unless the gate passed.
        gate = gate_status(args)
    else:
        gate = None
    args.arch = checkpoint_architecture(ckpt)
    args.ckpt_sha = file_sha256(ckpt)
    prep = out / "prep"
    if args.report is not None:
        if args.steps_per_epoch is None:
            if not (prep / "weak_train.json").is_file():
                parser.error(f"no {prep}: pass --steps-per-epoch")
            args.steps_per_epoch = cma.steps_per_epoch(
                prep, args.batch_sizes, TRAIN_SUBSETS
            )
        stage1, stage2 = build_setups(args, args.arch, args.ckpt_sha)
        name = args.report or f"pretrain_ablation_{args.scale}"
        write_report(args, stage1, stage2, gate, name)
        return 0
    if gate is not None:
        print(f"probe gate: {gate}", flush=True)
    start = time.perf_counter()
    data, prep = cma.prepare(out, args.scale)
    if args.steps_per_epoch is None:
        args.steps_per_epoch = cma.steps_per_epoch(
            prep, args.batch_sizes, TRAIN_SUBSETS
        )
    stage1, stage2 = build_setups(args, args.arch, args.ckpt_sha)
    failed = run_all(args, stage1, stage2, data, prep, out, gate)
    minutes = (time.perf_counter() - start) / 60
    print(f"finished in {minutes:.1f} min, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
