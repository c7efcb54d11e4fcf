#!/usr/bin/env python3
"""Inference real-time factor and peak memory (issue 8, b and e).

Models, built from the recipe YAMLs with random weights (speed does not
depend on the weights):

* ``crnn``: ``crnn_mt.yaml``, the DCASE baseline CRNN (default size);
* ``atst_sed_base``: ``atst_sed_stage2.yaml``, ATST-Frame base (768 / 12
  layers / 12 heads) + the ATST-SED fusion model;
* ``atst_sed_tiny``: the same with a 64 / 2 / 4 encoder (not run by
  default).

Each forward takes 10 s clips of random audio at 16 kHz through the front
end (mel + normalisation) and the student, in eval mode under
``torch.inference_mode``; ``--dtype bf16`` runs it under autocast.
``--optimize`` picks the model variants (each in its own process):
``none`` (the trained model as is), ``fused`` (batch norms folded into the
convolutions, channels-last weights, in-place gates:
``lobes.fusion.optimize_for_inference``, what ``SoundEventDetector`` uses
by default) and ``compiled`` (``fused``
under ``torch.compile``; compile time reported apart). After
``--warmup`` calls, ``--repeats`` calls are timed;
``RTF = seconds per batch / (batch x 10 s)`` (min and mean over repeats).
The front end is also timed alone (``frontend_s_mean``, its share of the
forward), and the student's top-level parts (``parts_s_mean``: ``cnn``,
``rnn``, ``atst_frame``, ...; not for ``compiled``), to tell where the
time goes.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per batch size;
on CPU the process peak RSS (``ru_maxrss``, whole process: Python, torch
and the model included), which only grows, so each model runs in its own
process and batch sizes run in ascending order (the figure of a batch size
is the peak up to and including it). Targets (2-core CPU, fp32): CRNN RTF
<= 0.002 and ATST-SED base RTF <= 0.1, both at batch 32.

    python benchmarks/inference_rtf.py
    python benchmarks/inference_rtf.py --optimize none fused compiled
    python benchmarks/inference_rtf.py --device cuda --dtype bf16 \
        --repeats 20
"""

import argparse
import contextlib
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

CLIP_SECONDS = 10.0
SAMPLE_RATE = 16000
MODELS = {
    "crnn": ("crnn_mt", {}),
    "atst_sed_base": ("atst_sed_stage2", {}),
    "atst_sed_tiny": (
        "atst_sed_stage2",
        {"atst_dim": 64, "atst_depth": 2, "atst_heads": 4},
    ),
}
#: RTF limits at batch 32 (issue 8, on the 2-core CPU).
TARGETS = {"crnn": 0.002, "atst_sed_base": 0.1}


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_parts(forward, wav, student, args):
    """Mean seconds per call of each top-level part of the student.

    Forward hooks time the student's direct children (``cnn``, ``rnn``,
    ``atst_frame``, ...) over ``args.repeats`` forwards: a profile of
    where a forward spends its time, next to the front end's share.
    """
    import torch

    totals, starts, hooks = {}, {}, []

    def before(name):
        def hook(module, inputs):
            sync(args.device)
            starts[name] = time.perf_counter()

        return hook

    def after(name):
        def hook(module, inputs, output):
            sync(args.device)
            elapsed = time.perf_counter() - starts[name]
            totals[name] = totals.get(name, 0.0) + elapsed

        return hook

    for name, child in student.named_children():
        if any(True for _ in child.parameters()):
            hooks.append(child.register_forward_pre_hook(before(name)))
            hooks.append(child.register_forward_hook(after(name)))
    try:
        with torch.inference_mode():
            for _ in range(args.repeats):
                forward(wav)
    finally:
        for hook in hooks:
            hook.remove()
    return {k: v / args.repeats for k, v in totals.items()}


def measure(config, args):
    """RTF and memory of one ``model@variant`` at every batch size."""
    import torch

    from speechbrain_sed_condmix.lobes.fusion import optimize_for_inference

    name, variant = config.split("@")
    recipe, overrides = MODELS[name]
    hparams = load_recipe(recipe, overrides)
    frontend = hparams["frontend"].to(args.device).eval()
    student = hparams["student"].to(args.device).eval()
    n_params = sum(p.numel() for p in student.parameters())
    if variant != "none":
        student = optimize_for_inference(student, compile=variant == "compiled")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
        args.dtype
    ]
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"

    def forward(wav):
        inputs = frontend(wav)
        inputs = inputs if isinstance(inputs, list) else [inputs]
        return student(*inputs)

    rows = []
    for batch in sorted(args.batch_sizes):
        gen = torch.Generator().manual_seed(0)
        n = int(CLIP_SECONDS * SAMPLE_RATE)
        wav = (0.1 * torch.randn(batch, n, generator=gen)).to(args.device)
        if device_type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss_before = max_rss_mib()
        autocast = (
            torch.autocast(device_type=device_type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        times = []
        compile_s = None
        with torch.inference_mode(), autocast:
            if variant == "compiled":
                # The first call of a shape compiles it: timed apart.
                start = time.perf_counter()
                forward(wav)
                sync(args.device)
                compile_s = time.perf_counter() - start
            for i in range(args.warmup + args.repeats):
                sync(args.device)
                start = time.perf_counter()
                out = forward(wav)
                sync(args.device)
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            # The front end alone, to split the time (student = rest).
            fe_times = []
            for _ in range(args.repeats):
                sync(args.device)
                start = time.perf_counter()
                frontend(wav)
                sync(args.device)
                fe_times.append(time.perf_counter() - start)
            parts = None
            if variant != "compiled":
                parts = time_parts(forward, wav, student, args)
        audio = batch * CLIP_SECONDS
        fe_mean = sum(fe_times) / len(fe_times)
        row = {
            "batch_size": batch,
            "seconds_per_batch_min": min(times),
            "seconds_per_batch_mean": sum(times) / len(times),
            "rtf_min": min(times) / audio,
            "rtf_mean": sum(times) / len(times) / audio,
            "clips_per_s": batch / (sum(times) / len(times)),
            "frontend_s_mean": fe_mean,
            "frontend_share": fe_mean / (sum(times) / len(times)),
            "output_frames": int(out.strong.shape[-1]),
            "first_call_s": compile_s,
            "parts_s_mean": parts,
            **peak_memory(args.device, rss_before),
        }
        rows.append(row)
    result = {
        "model": name,
        "variant": variant,
        "recipe": recipe,
        "overrides": overrides,
    }
    result["student_parameters"] = n_params
    result["results"] = rows
    limit = TARGETS.get(name)
    at_32 = [r for r in rows if r["batch_size"] == 32]
    if limit is not None and at_32:
        result["target"] = {
            "rtf_limit_at_batch_32": limit,
            "rtf_mean": at_32[0]["rtf_mean"],
            "met": at_32[0]["rtf_mean"] <= limit,
            "note": "issue 8 limit, set for the 2-core CPU; this run: "
            f"{args.dtype} on {args.device}",
        }
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        choices=sorted(MODELS),
        default=["crnn", "atst_sed_base"],
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--optimize",
        nargs="+",
        choices=["none", "fused", "compiled"],
        default=["none", "fused"],
        help="model variants to time (see the module docstring)",
    )
    add_run_arguments(parser, repeats=3)
    args = parser.parse_args(argv)

    start_run(args)
    if args.child:
        print(json.dumps(measure(args.child, args)))
        return
    common = [
        "--batch-sizes",
        *map(str, args.batch_sizes),
        *run_arguments(args),
    ]
    result = {
        "benchmark": "inference_rtf",
        **environment(args.device),
        "settings": {
            "clip_seconds": CLIP_SECONDS,
            "sample_rate": SAMPLE_RATE,
            "batch_sizes": sorted(args.batch_sizes),
            "variants": args.optimize,
            "dtype": args.dtype,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "mode": "eval, torch.inference_mode, front end included, "
            "random weights and audio; one process per model",
            "peak_memory": memory_note(args.device),
        },
        "models": run_children(
            Path(__file__),
            [f"{m}@{v}" for m in args.models for v in args.optimize],
            common,
        ),
    }
    print(json.dumps(result))
    if any("error" in m for m in result["models"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
