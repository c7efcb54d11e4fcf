"""Shared helpers of the benchmark scripts (not a benchmark itself).

Every benchmark prints one JSON object built from :func:`environment` plus
its own settings and figures.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HPARAMS = REPO / "recipes/DESED/SED/hparams"


def cpu_name():
    """The CPU model from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            for line in fin:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_device(device):
    """Fail clearly when CUDA is asked for but absent."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"error: --device {device} asked, but CUDA is not available")


def environment(device="cpu"):
    """Device, versions, threads and date of this run."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = f"cpu: {cpu_name()} ({os.cpu_count()} logical cores)"
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    }


def max_rss_mib():
    """Peak resident set size of this process so far (ru_maxrss), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_memory(device, rss_before_mib):
    """Peak memory figures: CUDA allocator peak, or process peak RSS."""
    import torch

    if device.startswith("cuda"):
        return {
            "peak_memory_kind": "torch.cuda.max_memory_allocated",
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
        }
    peak = max_rss_mib()
    return {
        "peak_memory_kind": "ru_maxrss",
        "peak_memory_mib": peak,
        "peak_memory_delta_mib": peak - rss_before_mib,
    }


MEMORY_NOTE = {
    "cuda": "torch.cuda.max_memory_allocated, reset before each measurement",
    "cpu": "ru_maxrss: peak RSS of the whole process (Python, torch, model "
    "included; it never decreases); delta = that peak minus the ru_maxrss "
    "peak just before the measured part",
}


def memory_note(device):
    """How the peak memory figures were taken on ``device``."""
    return MEMORY_NOTE["cuda" if device.startswith("cuda") else "cpu"]


def load_recipe(name, overrides=None):
    """Load ``recipes/DESED/SED/hparams/<name>.yaml`` without data prep.

    ``data_folder`` is a dummy and every output goes to a temporary folder.
    """
    from hyperpyyaml import load_hyperpyyaml

    tmp = tempfile.mkdtemp(prefix=f"bench_{name}_")
    values = {
        "data_folder": tmp,
        "output_folder": tmp,
        "prep_folder": tmp,
        **(overrides or {}),
    }
    with open(HPARAMS / f"{name}.yaml", encoding="utf-8") as fin:
        return load_hyperpyyaml(fin, values)


def add_run_arguments(parser, repeats):
    """Add the options shared by the model benchmarks.

    ``--device``, ``--dtype``, ``--warmup``, ``--repeats`` (default
    ``repeats``), ``--threads`` and the hidden ``--child`` (one config, run
    by :func:`run_children` in its own process).
    """
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default="fp32"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)


def start_run(args):
    """Apply ``--threads`` and check the device (parent and children)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(args.device)


def run_arguments(args):
    """The shared options of ``args`` as command-line arguments."""
    out = ["--device", args.device, "--dtype", args.dtype]
    out += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if args.threads:
        out += ["--threads", str(args.threads)]
    return out


def run_children(script, configs, common_args):
    """Run ``script --child CONFIG`` once per config in fresh processes.

    A fresh process per config keeps the ru_maxrss peak of one config from
    hiding that of the next. Returns the parsed JSON of each child.
    """
    results = []
    for config in configs:
        cmd = [sys.executable, str(script), "--child", config, *common_args]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stderr)
            results.append(
                {"config": config, "error": out.stderr.strip()[-2000:]}
            )
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results
