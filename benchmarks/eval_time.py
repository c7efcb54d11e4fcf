#!/usr/bin/env python3
"""Evaluation time of a DESED-validation-sized score set (issue 8, c).

Synthetic frame scores for ``--clips`` clips x 156 frames x 10 classes
(DESED validation: 1,168 clips) and matching synthetic ground truth and
durations (TSV files in a temporary folder) go through the validation
pipeline of ``SEDBrain``: score DataFrames (``frame_scores_to_dataframe``),
``median_filter``, then ``compute_sed_metrics`` (PSDS1, PSDS2,
intersection F1 and collar F1, one process). The whole call is timed, and
its parts (input preparation, each metric) are timed again separately.
cSEBB is timed too when the optional ``sebbs`` package is installed
(``--csebbs``). Target on the 2-core CPU: under 30 s for the median filter
plus the four metrics.

    python benchmarks/eval_time.py
    python benchmarks/eval_time.py --clips 200 --repeats 1
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

TARGET_S = 30.0


def synthetic_set(n_clips, n_frames, classes, seed, folder):
    """Frame scores, ground-truth TSV and durations TSV of a fake set.

    Every clip has 1 to 4 events (clips without events are dropped by the
    metrics); same-class events never overlap. Scores are higher inside
    events, with noise, so every score value is distinct (worst case for
    PSDS, which visits every distinct score as a threshold).
    """
    rng = np.random.default_rng(seed)
    frame = 10.0 / n_frames
    scores, gt_rows, dur_rows = {}, [], []
    for i in range(n_clips):
        clip = f"clip_{i:05d}"
        active = np.zeros((n_frames, len(classes)), dtype=bool)
        for _ in range(rng.integers(1, 5)):
            c = int(rng.integers(len(classes)))
            onset = float(rng.uniform(0.0, 9.0))
            offset = min(10.0, onset + float(rng.uniform(0.3, 5.0)))
            a, b = int(onset / frame), int(np.ceil(offset / frame))
            if active[max(a - 4, 0) : b + 4, c].any():
                continue
            active[a:b, c] = True
            gt_rows.append(f"{clip}.wav\t{onset:.3f}\t{offset:.3f}\t")
            gt_rows[-1] += classes[c]
        if not active.any():  # the first event is always kept
            raise AssertionError("clip without events")
        noise = rng.normal(0.0, 0.2, active.shape)
        values = np.where(active, 0.6, 0.25) + noise
        scores[clip] = np.clip(values, 0.0, 1.0).astype(np.float32)
        dur_rows.append(f"{clip}.wav\t10.0")
    gt = Path(folder) / "gt.tsv"
    gt.write_text("filename\tonset\toffset\tevent_label\n" + "\n".join(gt_rows))
    dur = Path(folder) / "durations.tsv"
    dur.write_text("filename\tduration\n" + "\n".join(dur_rows))
    return scores, gt, dur, len(gt_rows)


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def best(times):
    """Min and mean of a list of seconds."""
    return {"min_s": min(times), "mean_s": sum(times) / len(times)}


def parts(filtered, gt, dur):
    """Seconds of each part of ``compute_sed_metrics``."""
    from sed_scores_eval import collar_based, intersection_based

    from speechbrain_sed_condmix import metrics as m
    from speechbrain_sed_condmix.scores import writeable_pandas

    out = {}
    (scores, truth, durations, _), out["prepare_eval_inputs"] = timed(
        m.prepare_eval_inputs, filtered, gt, dur
    )
    with writeable_pandas():
        _, out["psds1"] = timed(
            intersection_based.psds,
            scores,
            truth,
            durations,
            num_jobs=1,
            **m.PSDS1_PARAMS,
        )
        _, out["psds2"] = timed(
            intersection_based.psds,
            scores,
            truth,
            durations,
            num_jobs=1,
            **m.PSDS2_PARAMS,
        )
        _, out["intersection_f1"] = timed(
            intersection_based.fscore,
            scores,
            truth,
            0.5,
            num_jobs=1,
            **m.INTERSECTION_F1_PARAMS,
        )
        _, out["collar_f1"] = timed(
            collar_based.fscore,
            scores,
            truth,
            0.5,
            num_jobs=1,
            **m.COLLAR_F1_PARAMS,
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=1168)
    parser.add_argument("--frames", type=int, default=156)
    parser.add_argument(
        "--median-filter",
        type=int,
        nargs="+",
        default=[7],
        help="one length (CRNN recipes: 7) or one per class",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-parts", action="store_true", help="skip the per-part timing"
    )
    parser.add_argument(
        "--csebbs", action="store_true", help="also time cSEBB (needs sebbs)"
    )
    args = parser.parse_args(argv)

    import torch  # noqa: F401  (environment reports its version)

    from speechbrain_sed_condmix.csebbs import sebbs_available
    from speechbrain_sed_condmix.dataio.layout import DESED_CLASSES
    from speechbrain_sed_condmix.metrics import compute_sed_metrics
    from speechbrain_sed_condmix.postprocessing import median_filter
    from speechbrain_sed_condmix.scores import frame_scores_to_dataframe

    classes = list(DESED_CLASSES)
    lengths = args.median_filter
    lengths = lengths[0] if len(lengths) == 1 else lengths
    result = {
        "benchmark": "eval_time",
        **environment("cpu"),
        "settings": {
            "clips": args.clips,
            "frames": args.frames,
            "classes": len(classes),
            "median_filter": lengths,
            "repeats": args.repeats,
            "seed": args.seed,
            "num_jobs": 1,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        raw, gt, dur, n_events = synthetic_set(
            args.clips, args.frames, classes, args.seed, tmp
        )
        result["settings"]["gt_events"] = n_events
        t_df, t_mf, t_metrics = [], [], []
        for _ in range(args.repeats):
            frames, sec = timed(
                lambda: {
                    k: frame_scores_to_dataframe(v, classes, duration=10.0)
                    for k, v in raw.items()
                }
            )
            t_df.append(sec)
            filtered, sec = timed(median_filter, frames, lengths)
            t_mf.append(sec)
            stats, sec = timed(compute_sed_metrics, filtered, gt, dur)
            t_metrics.append(sec)
        figures = {
            "to_dataframe": best(t_df),
            "median_filter": best(t_mf),
            "compute_sed_metrics": best(t_metrics),
        }
        total = [a + b for a, b in zip(t_mf, t_metrics)]
        figures["median_filter_plus_metrics"] = best(total)
        figures["dataframes_filter_metrics"] = best(
            [a + b for a, b in zip(t_df, total)]
        )
        if not args.no_parts:
            figures["compute_sed_metrics_parts_s"] = parts(filtered, gt, dur)
        if args.csebbs:
            if not sebbs_available():
                figures["csebbs"] = "skipped: sebbs is not installed"
            else:
                from speechbrain_sed_condmix.tuning import tune_csebbs

                _, sec = timed(tune_csebbs, frames, gt, dur)
                figures["csebbs_tuning_s"] = sec
        result["csebbs_available"] = sebbs_available()
        result["figures"] = figures
        result["metric_values"] = {
            k: stats[k]
            for k in ("psds1", "psds2", "intersection_f1", "collar_f1")
        }
    worst = figures["median_filter_plus_metrics"]["min_s"]
    result["target"] = {
        "what": "median filter + PSDS1 + PSDS2 + both F1 (min over repeats)",
        "limit_s": TARGET_S,
        "seconds": worst,
        "met": worst < TARGET_S,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
