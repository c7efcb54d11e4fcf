#!/usr/bin/env python3
"""Training step time, samples/s and peak memory (issue 8, a and e).

``SEDBrain.fit_batch`` (front end, mixup, student and EMA teacher, losses,
backward, optimiser step, EMA update) on synthetic batches shaped like the
real ones: 10 s clips at 16 kHz, strong labels [10, 156], weak labels
[10], with the rows of each training subset in the recipe's order. The
systems are built from the recipe YAMLs (random weights, no data
preparation):

* ``crnn_mt``: ``crnn_mt.yaml`` (Mean Teacher, mixup);
* ``crnn_condmix``: ``crnn_condmix.yaml`` (conditional mixup, pseudo-labels,
  contrastive term);
* ``atst_sed_tiny``: ``atst_sed_stage2.yaml`` with a 64 / 2 / 4 encoder;
* ``atst_sed_base``: ``atst_sed_stage2.yaml`` (ATST-Frame base).

The paper's compositions are [12, 12, 24] (CRNN) and [24, 24, 48, 48]
(ATST-SED stage 2); the CPU defaults are scaled down to [4, 4, 8] and
[2, 2, 4, 4] (``--batch-sizes`` changes both, e.g. the paper's on a GPU).
``--dtype bf16|fp16`` sets SpeechBrain's ``precision`` run option (autocast;
fp16 with SpeechBrain's gradient scaler on CUDA).
``--layouts nchw channels_last`` times each system with
``channels_last: False`` and ``True`` (NHWC convolution weights, the
recipes' default); the default ``--layouts`` is ``channels_last``.
After ``--warmup`` steps, ``--repeats`` steps are timed. Each system runs
in its own process, so that the CPU peak RSS (``ru_maxrss``) is its own.

    python benchmarks/train_step.py
    python benchmarks/train_step.py --device cuda --dtype bf16 \
        --crnn-batch-sizes 12 12 24 --atst-batch-sizes 24 24 48 48
    python benchmarks/train_step.py --systems crnn_mt crnn_condmix \
        --layouts nchw channels_last
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_run_arguments,
    environment,
    load_recipe,
    max_rss_mib,
    memory_note,
    peak_memory,
    run_arguments,
    run_children,
    start_run,
)

SYSTEMS = {
    "crnn_mt": ("crnn_mt", {}),
    "crnn_condmix": ("crnn_condmix", {}),
    "atst_sed_tiny": (
        "atst_sed_stage2",
        {"atst_dim": 64, "atst_depth": 2, "atst_heads": 4},
    ),
    "atst_sed_base": ("atst_sed_stage2", {}),
}
PAPER_BATCH = {"crnn": [12, 12, 24], "atst": [24, 24, 48, 48]}
CPU_BATCH = {"crnn": [4, 4, 8], "atst": [2, 2, 4, 4]}
STEPS_PER_EPOCH = 100


def synthetic_batch(subsets, sizes, encoder, seed):
    """A ``PaddedBatch`` with one block of rows per training subset."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch

    gen = torch.Generator().manual_seed(seed)
    n_samples = int(encoder.audio_duration * encoder.sample_rate)
    items = []
    for subset, size in zip(subsets, sizes):
        kind = {"weak_train": "weak", "unlabeled": "unlabeled"}.get(
            subset, "strong"
        )
        for i in range(size):
            strong = torch.zeros(encoder.n_classes, encoder.n_frames)
            weak = torch.zeros(encoder.n_classes)
            if kind == "strong":
                for c in torch.randint(encoder.n_classes, (3,), generator=gen):
                    a = int(torch.randint(encoder.n_frames - 20, (1,)))
                    strong[c, a : a + 20] = 1.0
                weak = strong.amax(dim=1)
            elif kind == "weak":
                weak[torch.randint(encoder.n_classes, (2,), generator=gen)] = 1
            items.append(
                {
                    "id": f"{subset}_{i}",
                    "sig": 0.1 * torch.randn(n_samples, generator=gen),
                    "strong_labels": strong,
                    "weak_labels": weak,
                    "is_strong": kind == "strong",
                    "is_weak": kind == "weak",
                    "duration": encoder.audio_duration,
                }
            )
    return PaddedBatch(items)


def parse_overrides(items):
    """``["key=YAML value", ...]`` as a dict of recipe overrides."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: override {item!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def build_brain(
    name,
    crnn_batch,
    atst_batch,
    device,
    dtype,
    layout="channels_last",
    overrides=(),
):
    """A ``SEDBrain`` of system ``name`` ready to ``fit_batch``.

    Returns the brain, two synthetic batches and the batch sizes.
    """
    import speechbrain as sb

    from speechbrain_sed_condmix.brain import SEDBrain

    recipe, system_overrides = SYSTEMS[name]
    family = "atst" if recipe.startswith("atst") else "crnn"
    sizes = atst_batch if family == "atst" else crnn_batch
    overrides = {
        **system_overrides,
        "channels_last": layout == "channels_last",
        **parse_overrides(overrides),
    }
    hparams = load_recipe(recipe, overrides)
    subsets = hparams["train_subsets"]
    if len(sizes) != len(subsets):
        raise SystemExit(f"{name}: give {len(subsets)} batch sizes {subsets}")
    brain = SEDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": device, "precision": dtype},
        checkpointer=None,
    )
    brain.steps_per_epoch = STEPS_PER_EPOCH
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    brain.modules.train()
    batches = [
        synthetic_batch(subsets, sizes, hparams["encoder"], seed)
        for seed in range(2)
    ]
    brain.bench_info = {
        "recipe": recipe,
        "overrides": overrides,
        "subsets": subsets,
        "family": family,
    }
    return brain, batches, dict(zip(subsets, sizes))


def flop_figures(brain, batch, step_s, args):
    """FLOPs of one step and, with ``--peak-tflops``, the utilisation.

    One extra step runs under ``torch.utils.flop_counter.FlopCounterMode``,
    which counts the matrix products and convolutions (forward and
    backward) that reach the dispatcher; cuDNN's fused RNN kernels are not
    counted.
    """
    if not args.count_flops:
        return {}
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    # One thread: the GRU then runs without its thread-switching autograd
    # function, whose inner autograd.grad the counter's hooks reject.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FlopCounterMode(display=False) as counter:
            brain.fit_batch(batch)
    finally:
        torch.set_num_threads(threads)
    flops = counter.get_total_flops()
    out = {
        "flops_per_step": flops,
        "achieved_tflops": flops / step_s / 1e12,
        "flops_note": "torch.utils.flop_counter: matmuls and convolutions",
    }
    if args.peak_tflops:
        out["peak_tflops"] = args.peak_tflops
        out["model_flop_utilisation"] = out["achieved_tflops"] / (
            args.peak_tflops
        )
    return out


def measure(config, args):
    """Step times and memory of one ``system@layout``."""
    import torch

    name, layout = config.split("@")
    brain, batches, batch_sizes = build_brain(
        name,
        args.crnn_batch,
        args.atst_batch_sizes,
        args.device,
        args.dtype,
        layout,
        args.override,
    )
    info = brain.bench_info
    subsets, family = info["subsets"], info["family"]
    sizes = list(batch_sizes.values())
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    rss_before = max_rss_mib()
    times = []
    for i in range(args.warmup + args.repeats):
        if i == args.warmup and device_type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if device_type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = brain.fit_batch(batches[i % 2])
        if device_type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    n = sum(sizes)
    mean = sum(times) / len(times)
    trained = sum(
        p.numel() for p in brain.modules.student.parameters() if p.requires_grad
    )
    return {
        "system": name,
        "layout": layout,
        "recipe": info["recipe"],
        "overrides": info["overrides"],
        "batch_sizes": batch_sizes,
        "paper_batch_sizes": dict(zip(subsets, PAPER_BATCH[family])),
        "batch_total": n,
        "trainable_student_parameters": trained,
        "step_s_min": min(times),
        "step_s_mean": mean,
        "samples_per_s": n / mean,
        "last_loss": float(loss),
        **flop_figures(brain, batches[0], mean, args),
        **peak_memory(args.device, rss_before),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(SYSTEMS),
        default=list(SYSTEMS),
    )
    parser.add_argument(
        "--crnn-batch-sizes",
        dest="crnn_batch",
        type=int,
        nargs="+",
        default=CPU_BATCH["crnn"],
        help="clips of [synth_train, weak_train, unlabeled] per batch",
    )
    parser.add_argument(
        "--atst-batch-sizes",
        type=int,
        nargs="+",
        default=CPU_BATCH["atst"],
        help="clips of [strong_train, synth_train, weak_train, unlabeled]",
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=["nchw", "channels_last"],
        default=["channels_last"],
        help="memory layouts of the convolution weights to time",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="recipe override for every system, e.g. --override "
        "cnn_filters=[8,16,32,32,32,32,32] (repeatable)",
    )
    parser.add_argument(
        "--count-flops",
        action="store_true",
        help="count the FLOPs of one extra step (FlopCounterMode)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak for --dtype, to report the model FLOP "
        "utilisation (e.g. 989 for an H200 in bf16, dense)",
    )
    add_run_arguments(parser, repeats=2)
    args = parser.parse_args(argv)

    start_run(args)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    common = [
        "--crnn-batch-sizes",
        *map(str, args.crnn_batch),
        "--atst-batch-sizes",
        *map(str, args.atst_batch_sizes),
        *run_arguments(args),
        *(f"--override={item}" for item in args.override),
        *(["--count-flops"] if args.count_flops else []),
        *(["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else []),
    ]
    result = {
        "benchmark": "train_step",
        **environment(args.device),
        "settings": {
            "dtype": args.dtype,
            "crnn_batch_sizes": args.crnn_batch,
            "atst_batch_sizes": args.atst_batch_sizes,
            "batch_note": "scaled from the paper's [12, 12, 24] (CRNN) and "
            "[24, 24, 48, 48] (ATST-SED) unless those are passed",
            "warmup": args.warmup,
            "repeats": args.repeats,
            "step": "SEDBrain.fit_batch on synthetic 10 s batches, random "
            "weights, steps_per_epoch=100, step 1 of ramp-up; one process "
            "per system",
            "peak_memory": memory_note(args.device),
        },
        "systems": run_children(
            Path(__file__),
            [f"{n}@{layout}" for n in args.systems for layout in args.layouts],
            common,
        ),
    }
    print(json.dumps(result))
    if any("error" in s for s in result["systems"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
