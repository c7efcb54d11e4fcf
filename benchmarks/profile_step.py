#!/usr/bin/env python3
"""Where one training step spends its time: a torch.profiler summary.

``SEDBrain.fit_batch`` of a recipe system (see ``train_step.py``) on
synthetic 10 s batches, under :mod:`torch.profiler`. The step's phases are
labelled without touching the code under test: the front end's ``mel`` and
``normalize``, mixup, the student and teacher forwards, the objectives, the
backward pass, gradient clipping, the optimiser step and the EMA update are
wrapped in ``record_function`` for the profiled steps. The JSON gives, per
phase, the wall time summed over the profiled steps, and the operators with
the largest self CPU time.

    python benchmarks/profile_step.py --system crnn_mt \
        --crnn-batch-sizes 12 12 24 --threads 2
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_device, environment, max_rss_mib  # noqa: E402
from train_step import PAPER_BATCH, build_brain  # noqa: E402

#: (label, owner attribute path on the brain, method name)
PHASES = [
    ("frontend.mel", "modules.frontend", "mel"),
    ("frontend.normalize", "modules.frontend", "normalize"),
    ("mixup", "hparams.mixup", "__call__"),
    ("student.forward", "modules.student", "forward"),
    ("teacher.forward", "modules.teacher", "forward"),
    ("objectives", "", "compute_objectives"),
    ("backward", "", "check_loss_isfinite"),
    ("optimizer.step", "optimizer", "step"),
    ("teacher.ema_update", "modules.teacher", "update"),
]


def _owner(brain, path):
    obj = brain
    for name in filter(None, path.split(".")):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def label_phases(brain, wall, sync):
    """Wrap each phase's method in ``record_function`` (instance level).

    ``wall`` (a dict) also accumulates each phase's wall time; ``sync`` is
    called before each clock reading (``torch.cuda.synchronize`` on a GPU).
    """
    import torch

    def wrap(label, method):
        def labelled(*args, **kwargs):
            sync()
            start = time.perf_counter()
            with torch.profiler.record_function(f"phase::{label}"):
                out = method(*args, **kwargs)
            sync()
            wall[label] = wall.get(label, 0.0) + time.perf_counter() - start
            return out

        return labelled

    for label, path, name in PHASES:
        owner = _owner(brain, path)
        if owner is None:
            continue
        if name == "__call__":
            # Modules are called through their class; wrap forward instead.
            name = "forward"
        if label == "backward":
            continue
        setattr(owner, name, wrap(label, getattr(owner, name)))
    # Brain.fit_batch calls check_loss_isfinite(loss) and then
    # loss.backward(): label the backward by wrapping the loss's backward.
    fit_batch = brain.fit_batch

    def fit_batch_labelled(batch):
        original = torch.Tensor.backward

        def backward(self, *args, **kwargs):
            sync()
            start = time.perf_counter()
            with torch.profiler.record_function("phase::backward"):
                out = original(self, *args, **kwargs)
            sync()
            wall["backward"] = (
                wall.get("backward", 0.0) + time.perf_counter() - start
            )
            return out

        torch.Tensor.backward = backward
        try:
            return fit_batch(batch)
        finally:
            torch.Tensor.backward = original

    brain.fit_batch = fit_batch_labelled


def summarise(prof, n_steps, top, cuda):
    """Phase totals and the top operators by self CPU (or GPU) time, per
    step."""
    events = prof.key_averages()
    phases = {}
    ops = []
    for ev in events:
        if ev.key.startswith("phase::"):
            phases[ev.key[7:]] = ev.cpu_time_total / 1e6 / n_steps
            continue
        op = {
            "op": ev.key,
            "self_cpu_s": ev.self_cpu_time_total / 1e6 / n_steps,
            "calls": ev.count // n_steps,
        }
        if cuda:
            op["self_device_s"] = ev.self_device_time_total / 1e6 / n_steps
        ops.append(op)
    key = "self_device_s" if cuda else "self_cpu_s"
    ops.sort(key=lambda o: -o[key])
    return phases, ops[:top]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--system", default="crnn_mt")
    parser.add_argument(
        "--crnn-batch-sizes",
        dest="crnn_batch",
        type=int,
        nargs="+",
        default=PAPER_BATCH["crnn"],
    )
    parser.add_argument(
        "--atst-batch-sizes",
        type=int,
        nargs="+",
        default=PAPER_BATCH["atst"],
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default="fp32"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="recipe override, e.g. --override cnn_filters=[8,16]",
    )
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(args.device)
    brain, batches, sizes = build_brain(
        args.system,
        args.crnn_batch,
        args.atst_batch_sizes,
        args.device,
        args.dtype,
        overrides=args.override,
    )
    for i in range(args.warmup):
        brain.fit_batch(batches[i % 2])
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    phase_wall = {}
    label_phases(brain, phase_wall, sync)
    # First without the profiler (phase wall times), then under it (ops).
    sync()
    start = time.perf_counter()
    for i in range(args.steps):
        brain.fit_batch(batches[i % 2])
    sync()
    wall = (time.perf_counter() - start) / args.steps
    unprofiled = {k: v / args.steps for k, v in phase_wall.items()}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(args.steps):
            brain.fit_batch(batches[i % 2])
        sync()
    phases, ops = summarise(prof, args.steps, args.top, cuda)
    result = {
        "benchmark": "profile_step",
        **environment(args.device),
        "settings": {
            "system": args.system,
            "batch_sizes": sizes,
            "dtype": args.dtype,
            "overrides": args.override,
            "warmup": args.warmup,
            "profiled_steps": args.steps,
            "note": "per step: step_wall_s and phases_wall_s from "
            "perf_counter over --steps unprofiled steps (synchronised on "
            "CUDA); then --steps steps under torch.profiler (CPU, and CUDA "
            "activities on a GPU) give phases_profiled_s (record_function "
            "labels, CPU time) and the top ops by self CPU time (GPU time "
            "on a GPU)",
        },
        "step_wall_s": wall,
        "phases_wall_s": unprofiled,
        "phases_other_wall_s": wall - sum(unprofiled.values()),
        "phases_profiled_s": phases,
        "top_ops": ops,
        "peak_rss_mib": max_rss_mib(),
        **(
            {"peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20}
            if cuda
            else {}
        ),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
