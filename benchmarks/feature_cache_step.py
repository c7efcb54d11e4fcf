#!/usr/bin/env python3
"""Training step time with and without the feature cache, interleaved.

One ``SEDBrain`` of a recipe (the ablation's protocol by default: the small
CRNN of ``crnn_condmix.yaml`` on [4, 4, 8] batches) trains on real batches
of a prepared mini-DESED (``desed_prepare.py`` output). Each timed step is
the batch's loading (audio read, labels) plus ``fit_batch``; the steps
alternate between the live front end and ``FeatureCache``, in one process,
so that a busy machine slows both alike. The cache is filled first (the
first pass over a clip computes its mel), so the cached figure is that of
every later epoch and run.

    python benchmarks/feature_cache_step.py --prep /work/ablation15/prep \
        --cache /work/ablation15/feature_cache --batches 8 --rounds 3
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, load_recipe  # noqa: E402

#: The ablation's protocol (benchmarks/condmix_ablation.py).
DEFAULT_OVERRIDES = {
    "batch_sizes": [4, 4, 8],
    "cnn_filters": [8, 16, 32, 32, 32, 32, 32],
    "rnn_hidden": 64,
    "dropout": 0.0,
    "lr": 0.003,
    "ema_decay": 0.99,
    "mixup_perturbation": "uniform",
    "contrastive_weight": 1.0,
}


def load_batches(hparams, prep, n_batches):
    """The first ``n_batches`` training batches, each with its load time."""
    from speechbrain.dataio.batch import PaddedBatch

    from speechbrain_sed_condmix.dataio.pipelines import make_sed_dataset
    from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler

    parts = [
        make_sed_dataset(prep / f"{name}.json", hparams["encoder"], train=True)
        for name in hparams["train_subsets"]
    ]
    sampler = MultiSourceBatchSampler(parts, hparams["batch_sizes"], seed=1)
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))

    def locate(index):
        for k in reversed(range(len(parts))):
            if index >= offsets[k]:
                return parts[k][index - offsets[k]]

    batches = []
    for indices in sampler:
        start = time.perf_counter()
        batch = PaddedBatch([locate(i) for i in indices])
        batches.append((batch, time.perf_counter() - start))
        if len(batches) == n_batches:
            break
    return batches


def main(argv=None):
    """Print one JSON object: step times without and with the cache."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prep", required=True, help="desed_prepare output")
    parser.add_argument("--cache", help="cache folder (default: a temp one)")
    parser.add_argument("--recipe", default="crnn_condmix")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import speechbrain as sb
    import torch

    from speechbrain_sed_condmix.brain import SEDBrain
    from speechbrain_sed_condmix.lobes.feature_cache import FeatureCache

    torch.set_num_threads(args.threads)
    prep = Path(args.prep)
    overrides = dict(DEFAULT_OVERRIDES)
    if args.recipe == "crnn_mt":
        overrides.pop("mixup_perturbation")
        overrides.pop("contrastive_weight")
    hparams = load_recipe(args.recipe, overrides)
    brain = SEDBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu"},
        checkpointer=None,
    )
    brain.steps_per_epoch = 12
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, epoch=1)
    brain.modules.train()

    batches = load_batches(hparams, prep, args.batches)
    live = FeatureCache(None)
    cache = FeatureCache(args.cache or tempfile.mkdtemp(prefix="melcache_"))
    fill_start = time.perf_counter()
    for batch, _ in batches:  # the first epoch: computes and stores
        cache.mel(batch.sig.data, brain.modules.frontend)
    fill_s = (time.perf_counter() - fill_start) / len(batches)
    cache.hits = cache.misses = 0

    times = {"live": [], "cached": []}
    brain.fit_batch(batches[0][0])  # warm-up
    for round_ in range(args.rounds):
        for i, (batch, load_s) in enumerate(batches):
            # Alternate which mode goes first, so neither always follows.
            order = ("live", "cached")
            if (i + round_) % 2:
                order = order[::-1]
            for mode in order:
                brain.hparams.feature_cache = live if mode == "live" else cache
                start = time.perf_counter()
                brain.fit_batch(batch)
                times[mode].append(load_s + time.perf_counter() - start)

    load = [s for _, s in batches]
    result = {
        "benchmark": "feature_cache_step",
        **environment("cpu"),
        "settings": {
            "recipe": args.recipe,
            "overrides": overrides,
            "batches": args.batches,
            "rounds": args.rounds,
            "note": (
                "step = the batch's loading (measured once per batch) + "
                "fit_batch; live and cached steps interleaved in one "
                "process; the cache filled before timing"
            ),
        },
        "load_s_mean": statistics.fmean(load),
        "cache_fill_s_per_batch": fill_s,
        "cache_hits": cache.hits,
        "cache_misses": cache.misses,
    }
    for mode, values in times.items():
        result[f"step_s_{mode}_mean"] = statistics.fmean(values)
        result[f"step_s_{mode}_median"] = statistics.median(values)
        result[f"step_s_{mode}_min"] = min(values)
    result["speedup_median"] = (
        result["step_s_live_median"] / result["step_s_cached_median"]
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
