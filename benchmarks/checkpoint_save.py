#!/usr/bin/env python3
"""Cost of crash-safe checkpoints: AtomicCheckpointer against SpeechBrain's.

Saves and recovers a checkpoint of ``--mib`` MiB of float32 weights (split
over 4 modules, like student, teacher and the optimiser's two moments)
with SpeechBrain's ``Checkpointer`` and with ``AtomicCheckpointer``
(temporary folder, SHA-256 manifest, fsync, rename; recovery verifies the
manifest first). The two are timed alternately, ``--repeats`` times each,
in the same process and folder, so that both see the same disk and load.
For scale: ATST-SED's student, EMA teacher and Adam moments are about
4 x 350 MiB; the CRNN's about 4 x 4.5 MiB.

    python benchmarks/checkpoint_save.py
    python benchmarks/checkpoint_save.py --mib 64 --repeats 2 --folder /tmp
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402


def recoverables(mib):
    import torch

    per_module = int(mib * 2**20 / 4 / 4)  # 4 modules, 4 bytes a weight
    side = max(int(per_module**0.5), 1)
    return {f"part{i}": torch.nn.Linear(side, side) for i in range(4)}


def time_one(make_checkpointer, folder, modules):
    """Seconds to save one checkpoint, then to recover it."""
    shutil.rmtree(folder, ignore_errors=True)
    ckpter = make_checkpointer(folder, modules)
    start = time.perf_counter()
    ckpter.save_checkpoint(meta={"epoch": 1})
    saved = time.perf_counter()
    ckpter.recover_if_possible()
    recovered = time.perf_counter()
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return saved - start, recovered - saved, size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=256.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--folder", default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args(argv)

    import torch
    from speechbrain.utils.checkpoints import Checkpointer

    from speechbrain_sed_condmix.checkpointing import AtomicCheckpointer

    torch.manual_seed(0)
    modules = recoverables(args.mib)
    kinds = {"speechbrain": Checkpointer, "atomic": AtomicCheckpointer}
    times = {kind: {"save_s": [], "recover_s": []} for kind in kinds}
    sizes = {}
    with tempfile.TemporaryDirectory(dir=args.folder) as root:
        for _ in range(args.repeats):
            for kind, cls in kinds.items():  # alternate: same conditions
                save_s, recover_s, size = time_one(
                    cls, Path(root) / kind, modules
                )
                times[kind]["save_s"].append(save_s)
                times[kind]["recover_s"].append(recover_s)
                sizes[kind] = size
    result = {
        **environment("cpu"),
        "benchmark": "checkpoint_save",
        "mib": args.mib,
        "repeats": args.repeats,
        "checkpoint_bytes": sizes,
    }
    for kind, figures in times.items():
        for name, values in figures.items():
            result[f"{kind}_{name}_median"] = statistics.median(values)
            result[f"{kind}_{name}"] = values
    for name in ("save_s", "recover_s"):
        plain = result[f"speechbrain_{name}_median"]
        result[f"atomic_{name}_overhead"] = (
            result[f"atomic_{name}_median"] / plain if plain > 0 else None
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
