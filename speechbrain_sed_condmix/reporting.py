"""The test-stage report: score files, plots, tuned post-processing.

:func:`write_test_report` writes, under the experiment folder, each model's
raw and post-processed score TSVs, its PSD-ROC plots and ``metrics.json``;
it tunes the teacher's post-processing on the validation scores saved with
the checkpoint (``postprocessing.json``, read by ``sed-export``), compares
it with the plain median filter and draws event rolls of a few test clips.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import json
import logging
from pathlib import Path

from speechbrain_sed_condmix.evaluation import TUNED_MODEL
from speechbrain_sed_condmix.metrics import PSDS1_PARAMS, PSDS2_PARAMS
from speechbrain_sed_condmix.postprocessing import PostProcessing
from speechbrain_sed_condmix.scores import write_scores
from speechbrain_sed_condmix.tuning import (
    evaluate_postprocessing,
    tune_postprocessing,
)

logger = logging.getLogger(__name__)


def write_test_report(results, scores, loss, collector, valid_scores, hparams):
    """Write the test outputs of every model (main process).

    Arguments
    ---------
    results : dict
        ``{model: metrics}`` (with ``psd_roc`` curves).
    scores : dict
        ``{model: (raw, filtered)}`` score DataFrames.
    loss : float
        The test loss.
    collector : ScoreCollector
        The test stage's scores (to build the validation DataFrames).
    valid_scores : ValidScores
        The checkpoint's validation scores of the tuned model.
    hparams : namespace
        The experiment's ``output_folder``, ``valid_ground_truth``,
        ``valid_durations``, ``test_ground_truth``, ``test_durations``,
        ``median_filter``, ``csebbs_tuning`` and ``n_event_rolls``.
    """
    from speechbrain_sed_condmix.plots import plot_psd_roc

    out = Path(hparams.output_folder)
    summary = {"loss": loss}
    params = {"psds1": PSDS1_PARAMS, "psds2": PSDS2_PARAMS}
    for name, model_stats in results.items():
        curves = model_stats.pop("psd_roc", None) or {}
        model_stats.pop("per_class_psd_roc", None)
        raw, filtered = scores[name]
        write_scores(raw, out / "test_scores" / name / "raw")
        write_scores(filtered, out / "test_scores" / name / "postprocessed")
        for scenario, curve in curves.items():
            plot_psd_roc(
                curve,
                model_stats[scenario],
                params[scenario],
                out / f"psd_roc_{name}_{scenario}.png",
            )
        summary[name] = model_stats
        logger.info("Test results (%s):\n%s", name, format_table(model_stats))
    write_tuned_postprocessing(
        out, summary, scores, collector, valid_scores, hparams
    )
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))


def write_tuned_postprocessing(
    out, summary, scores, collector, valid_scores, hparams
):
    """Tune post-processing on validation; compare it; event rolls.

    Writes ``postprocessing.json`` (read by ``export_detector``), adds
    ``summary["postprocessing"]`` (median filter with tuned thresholds
    and, with sebbs installed, cSEBB on the test set) and draws
    ``event_rolls/<clip>.png`` for ``n_event_rolls`` test clips.

    Arguments
    ---------
    out : Path
        The experiment folder.
    summary : dict
        The metrics summary; updated.
    scores : dict
        ``{model: (raw, filtered)}`` score DataFrames of the test set.
    collector : ScoreCollector
        The test stage's scores.
    valid_scores : ValidScores
        The checkpoint's validation scores of the tuned model.
    hparams : namespace
        As for :func:`write_test_report`.
    """
    from speechbrain_sed_condmix.metrics import load_ground_truth
    from speechbrain_sed_condmix.plots import plot_event_roll

    if TUNED_MODEL not in scores:
        return
    raw = scores[TUNED_MODEL][0]
    classes = collector.encoder.classes
    valid_truth = hparams.valid_ground_truth
    postprocessing = PostProcessing(
        classes,
        median_filter=hparams.median_filter,
        info={"tuned": "no: no validation scores in the checkpoint"},
    )
    if valid_scores.scores:
        valid = collector.to_dataframes(
            valid_scores.scores, valid_scores.durations
        )
        postprocessing = tune_postprocessing(
            valid,
            valid_truth,
            hparams.valid_durations,
            hparams.median_filter,
            csebbs=hparams.csebbs_tuning,
        )
        postprocessing.info["tuned_on"] = str(valid_truth)
        compared = evaluate_postprocessing(
            postprocessing,
            raw,
            hparams.test_ground_truth,
            hparams.test_durations,
        )
        summary["postprocessing"] = {
            "model": TUNED_MODEL,
            "tuned_on": str(valid_truth),
            **compared,
        }
        logger.info(
            "Test results (%s), post-processing tuned on %s:\n%s",
            TUNED_MODEL,
            valid_truth,
            format_side_by_side(compared),
        )
    postprocessing.save(out / "postprocessing.json")
    truth = load_ground_truth(hparams.test_ground_truth)
    n_rolls = int(hparams.n_event_rolls)
    # Clips with events first: they show the most.
    clips = sorted(raw, key=lambda c: (not truth.get(c), c))[:n_rolls]
    for clip_id in clips:
        plot_event_roll(
            postprocessing.filter(raw[clip_id]),
            out / "event_rolls" / f"{clip_id}.png",
            detections=postprocessing.events(raw[clip_id]),
            ground_truth=truth.get(clip_id, []),
            title=f"{clip_id} ({TUNED_MODEL}, "
            f"{postprocessing.method} post-processing)",
        )


def format_side_by_side(results):
    """Format post-processing results as columns, one per method.

    Arguments
    ---------
    results : dict
        ``{method: metrics}``, e.g. from ``evaluate_postprocessing``.

    Returns
    -------
    str
        A fixed-width table.

    Example
    -------
    >>> row = {"psds1": 0.5, "psds2": 0.7, "intersection_f1": 0.6,
    ...        "collar_f1": 0.4}
    >>> print(format_side_by_side({"median_filter": row, "csebbs": row}))
    metric             median_filter       csebbs
    psds1                      0.500        0.500
    psds2                      0.700        0.700
    intersection_f1            0.600        0.600
    collar_f1                  0.400        0.400
    """
    keys = ("psds1", "psds2", "intersection_f1", "collar_f1")
    names = list(results)
    lines = [f"{'metric':<16}" + "".join(f"{n:>15}" for n in names)]
    for key in keys:
        cells = "".join(
            f"{results[n].get(key, float('nan')):>15.3f}" for n in names
        )
        lines.append(f"{key:<16}{cells}")
    return "\n".join(lines)


def format_table(model_stats):
    """Format overall and per-class metrics as a text table.

    Arguments
    ---------
    model_stats : dict
        Output of ``compute_sed_metrics`` (with ``per_class``).

    Returns
    -------
    str
        A fixed-width table.

    Example
    -------
    >>> stats = {"psds1": 0.5, "psds2": 0.7, "intersection_f1": 0.6,
    ...          "collar_f1": 0.4,
    ...          "per_class": {"Dog": {"psds1": 0.5, "psds2": 0.7,
    ...                                "intersection_f1": 0.6,
    ...                                "collar_f1": 0.4}}}
    >>> print(format_table(stats))
    class                           psds1   psds2  inter_f1  collar_f1
    Dog                             0.500   0.700     0.600      0.400
    (overall)                       0.500   0.700     0.600      0.400
    """
    keys = ("psds1", "psds2", "intersection_f1", "collar_f1")
    header = f"{'class':<30}{'psds1':>7}{'psds2':>8}{'inter_f1':>10}"
    header += f"{'collar_f1':>11}"
    lines = [header]
    rows = list(model_stats.get("per_class", {}).items())
    rows.append(("(overall)", model_stats))
    for name, values in rows:
        cells = [values.get(k, float("nan")) for k in keys]
        lines.append(
            f"{name:<30}{cells[0]:>7.3f}{cells[1]:>8.3f}"
            f"{cells[2]:>10.3f}{cells[3]:>11.3f}"
        )
    return "\n".join(lines)
