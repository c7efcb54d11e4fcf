#!/usr/bin/env python3
"""Data loading throughput in clips/s (issue 8, d).

Generates mini-DESED ``tiny`` in a temporary folder (procedural audio, NOT
DESED), prepares it with ``prepare_desed`` (16 kHz cache, manifests), builds
the training sets with ``make_sed_dataset(train=True)`` (read 10 s of
audio, crop/pad, encode strong and weak labels) and iterates a
``DataLoader`` with ``PaddedBatch`` collation over them for ``--epochs``
epochs, with 0, 1 and 2 workers. The files were just written, so they are
read from the page cache: this measures decoding, labels and collation,
not the disk. ``clips_per_s`` counts the whole loop (worker start-up
included); ``clips_per_s_after_first_batch`` leaves out the first batch of
each epoch.

    python benchmarks/data_loading.py
    python benchmarks/data_loading.py --workers 0 1 2 4 --epochs 5
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

TRAIN_SUBSETS = ("strong_train", "synth_train", "weak_train", "unlabeled")


def loop(dataset, batch_size, workers, epochs, seed):
    """Seconds of each epoch and of its first batch."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=PaddedBatch,
        generator=gen,
    )
    epoch_s, first_s, clips = [], [], 0
    for _ in range(epochs):
        start = time.perf_counter()
        first = None
        for batch in loader:
            if first is None:
                first = time.perf_counter() - start
            clips += batch.sig.data.shape[0]
        epoch_s.append(time.perf_counter() - start)
        first_s.append(first)
    return epoch_s, first_s, clips


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--scale", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from torch.utils.data import ConcatDataset

    from speechbrain_sed_condmix.dataio.desed import prepare_desed
    from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
    from speechbrain_sed_condmix.dataio.pipelines import make_sed_dataset
    from speechbrain_sed_condmix.dataio.synth import generate_mini_desed

    env = environment("cpu")
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        data = generate_mini_desed(Path(tmp) / "data", scale=args.scale)
        gen_s = time.perf_counter() - start
        start = time.perf_counter()
        manifests = prepare_desed(data, Path(tmp) / "prep", progress=False)
        prep_s = time.perf_counter() - start
        # prepare_desed with one worker resamples in this process and
        # leaves torch at one thread (resample.resample_file): restore it.
        torch.set_num_threads(threads)
        encoder = FrameLabelEncoder(DESED_CLASSES)
        dataset = ConcatDataset(
            [
                make_sed_dataset(manifests[name], encoder, train=True)
                for name in TRAIN_SUBSETS
            ]
        )
        rows = []
        for workers in args.workers:
            epoch_s, first_s, clips = loop(
                dataset, args.batch_size, workers, args.epochs, args.seed
            )
            total = sum(epoch_s)
            rest = total - sum(first_s)
            rest_clips = clips - args.epochs * args.batch_size
            rows.append(
                {
                    "num_workers": workers,
                    "clips": clips,
                    "seconds": total,
                    "clips_per_s": clips / total,
                    "first_batch_s_mean": sum(first_s) / len(first_s),
                    "clips_per_s_after_first_batch": rest_clips / rest
                    if rest > 0
                    else None,
                }
            )
    result = {
        "benchmark": "data_loading",
        **env,
        "settings": {
            "data": f"mini-DESED {args.scale} (generated, not DESED)",
            "subsets": list(TRAIN_SUBSETS),
            "clips_per_epoch": len(dataset),
            "clip_seconds": encoder.audio_duration,
            "sample_rate": 16000,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "generate_s": gen_s,
            "prepare_desed_s": prep_s,
        },
        "results": rows,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
