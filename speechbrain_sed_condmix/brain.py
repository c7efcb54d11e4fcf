"""SEDBrain: semi-supervised sound event detection with SpeechBrain.

One training step (Mean Teacher, DCASE baseline):

1. waveform -> linear mel on the training device (``modules.frontend``);
2. mixup within the strong rows and within the weak rows (``hparams.mixup``);
3. log / scaling, then the student and the EMA teacher on the same features;
4. supervised BCE on strong frames (strong rows only) and on clip labels
   (weak rows only), plus the consistency MSE between student and teacher on
   the whole batch, weighted by ``const_max`` times the exponential ramp-up;
5. after the optimiser step, the EMA update of the teacher.

Validation and test score the student and the teacher with the same code:
frame scores -> median filter -> sed_scores_eval metrics.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import json
import logging
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import if_main_process

from speechbrain_sed_condmix import losses
from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler
from speechbrain_sed_condmix.metrics import (
    PSDS1_PARAMS,
    PSDS2_PARAMS,
    clip_macro_f1,
    compute_sed_metrics,
)
from speechbrain_sed_condmix.postprocessing import (
    frame_scores_to_dataframe,
    median_filter,
    write_scores,
)
from speechbrain_sed_condmix.schedulers import exponential_rampup

logger = logging.getLogger(__name__)

#: The models scored at validation and test time.
EVAL_MODELS = ("student", "teacher")


class SEDBrain(sb.Brain):
    """Brain for semi-supervised SED with a Mean Teacher.

    Expected ``modules``: ``frontend`` (with ``mel`` and ``normalize``),
    ``student`` (returns an ``SEDOutput``) and ``teacher``
    (an :class:`~speechbrain_sed_condmix.teacher.EMATeacher`).

    Expected ``hparams``: ``encoder`` (a ``FrameLabelEncoder``), ``mixup``
    (or ``None``), ``lr``, ``const_max``, ``rampup_epochs``,
    ``median_filter``, ``valid_every_n_epochs``, ``selection_key``,
    ``valid_ground_truth``, ``valid_durations``, ``test_ground_truth``,
    ``test_durations``, ``score_padded_tail``, ``output_folder``,
    ``train_logger``, ``epoch_counter``.

    Arguments
    ---------
    *args, **kwargs
        Passed to ``speechbrain.Brain``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps_per_epoch = None

    # ------------------------------------------------------------------
    # Data loading

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """Build loaders; keep ``MultiSourceBatchSampler`` unwrapped.

        Brain wraps any train batch sampler in a ``DistributedSampler`` under
        DDP, which would shard batches that are already sharded per source.
        ``MultiSourceBatchSampler`` shards itself, so it is used as it is.

        Arguments
        ---------
        dataset : Dataset
            The dataset.
        stage : sb.Stage
            The stage.
        ckpt_prefix : str
            Prefix of the loader's checkpoint key.
        **loader_kwargs : dict
            DataLoader options.

        Returns
        -------
        DataLoader
            The loader.
        """
        loader_kwargs.setdefault("collate_fn", PaddedBatch)
        sampler = loader_kwargs.get("batch_sampler")
        if stage == sb.Stage.TRAIN and isinstance(
            sampler, MultiSourceBatchSampler
        ):
            self.train_sampler = sampler
            self.steps_per_epoch = len(sampler)
            loader = sb.dataio.dataloader.make_dataloader(
                dataset, **loader_kwargs
            )
            if self.checkpointer is not None and ckpt_prefix is not None:
                self.checkpointer.add_recoverable(
                    ckpt_prefix + stage.name, loader
                )
            return loader
        return super().make_dataloader(
            dataset, stage, ckpt_prefix, **loader_kwargs
        )

    # ------------------------------------------------------------------
    # Forward and losses

    def compute_forward(self, batch, stage):
        """Features, augmentation, student and teacher outputs.

        Arguments
        ---------
        batch : PaddedBatch
            A batch with ``sig``, ``strong_labels``, ``weak_labels``,
            ``is_strong`` and ``is_weak``.
        stage : sb.Stage
            The stage.

        Returns
        -------
        dict
            ``student`` and ``teacher`` outputs, the (mixed) targets and the
            row masks.
        """
        batch = batch.to(self.device)
        wavs, _ = batch.sig
        strong = batch.strong_labels.data.float()
        weak = batch.weak_labels.data.float()
        is_strong = batch.is_strong.bool()
        is_weak = batch.is_weak.bool()
        mel = self.modules.frontend.mel(wavs)
        mixup = getattr(self.hparams, "mixup", None)
        if stage == sb.Stage.TRAIN and mixup is not None:
            groups = [
                torch.nonzero(is_strong).flatten(),
                torch.nonzero(is_weak).flatten(),
            ]
            (mel,), (strong, weak) = mixup([mel], [strong, weak], groups)
        features = self.modules.frontend.normalize(mel)
        return {
            "student": self.modules.student(features),
            "teacher": self.modules.teacher(features),
            "strong_targets": strong,
            "weak_targets": weak,
            "is_strong": is_strong,
            "is_weak": is_weak,
        }

    def compute_objectives(self, predictions, batch, stage):
        """Supervised and consistency losses; collects scores when scoring.

        Arguments
        ---------
        predictions : dict
            Output of :meth:`compute_forward`.
        batch : PaddedBatch
            The batch.
        stage : sb.Stage
            The stage.

        Returns
        -------
        torch.Tensor
            The total loss (supervised only outside training).
        """
        student = predictions["student"]
        teacher = predictions["teacher"]
        is_strong = predictions["is_strong"]
        is_weak = predictions["is_weak"]
        loss_strong = losses.masked_bce(
            student.strong, predictions["strong_targets"], is_strong
        )
        loss_weak = losses.masked_bce(
            student.weak, predictions["weak_targets"], is_weak
        )
        terms = {"strong": loss_strong, "weak": loss_weak}
        loss = loss_strong + loss_weak
        if stage == sb.Stage.TRAIN:
            weight = self.consistency_weight()
            loss_consistency = losses.consistency_mse(
                student.strong, teacher.strong
            ) + losses.consistency_mse(student.weak, teacher.weak)
            terms["consistency"] = loss_consistency
            loss = loss + weight * loss_consistency
        else:
            self._collect_scores(predictions, batch)
        for name, value in terms.items():
            self.loss_terms[name] = self.loss_terms.get(name, 0.0) + float(
                value.detach()
            )
        self.loss_terms["_n"] = self.loss_terms.get("_n", 0) + 1
        return loss

    # ------------------------------------------------------------------
    # Schedules and the teacher

    def rampup_length(self):
        """Ramp-up length in optimiser steps (``rampup_epochs`` epochs)."""
        steps = self.steps_per_epoch or 0
        return int(self.hparams.rampup_epochs * steps)

    def consistency_weight(self):
        """``const_max`` times the ramp-up factor at the current step."""
        return self.hparams.const_max * exponential_rampup(
            self.optimizer_step, self.rampup_length()
        )

    def on_fit_batch_start(self, batch, should_step):
        """Set the warm-up learning rate for the coming optimiser step.

        Arguments
        ---------
        batch : PaddedBatch
            The batch.
        should_step : bool
            Whether the optimiser steps after this batch.
        """
        factor = exponential_rampup(
            self.optimizer_step + 1, self.rampup_length()
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.hparams.lr * factor

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Update the EMA teacher after each optimiser step.

        Arguments
        ---------
        batch : PaddedBatch
            The batch.
        outputs : dict
            Output of :meth:`compute_forward`.
        loss : torch.Tensor
            The loss.
        should_step : bool
            Whether the optimiser stepped.
        """
        if should_step:
            self.modules.teacher.update(
                self.modules.student, self.optimizer_step
            )

    # ------------------------------------------------------------------
    # Stages

    def on_stage_start(self, stage, epoch=None):
        """Reset the loss terms and the score buffers.

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        epoch : int, optional
            The epoch.
        """
        self.loss_terms = {}
        self.frame_scores = {name: {} for name in EVAL_MODELS}
        self.clip_scores = {name: {} for name in EVAL_MODELS}
        self.clip_targets = {}
        self.clip_durations = {}

    def _fit_valid(self, valid_set, epoch, enable):
        # Validation is costly (PSDS on two models): run it every
        # ``valid_every_n_epochs`` epochs and always at the last epoch.
        every = int(getattr(self.hparams, "valid_every_n_epochs", 1))
        last = epoch == self.hparams.epoch_counter.limit
        if every > 1 and epoch % every and not last:
            return
        super()._fit_valid(valid_set, epoch, enable)

    def _collect_scores(self, predictions, batch):
        durations = batch.duration
        if isinstance(durations, torch.Tensor):
            durations = durations.tolist()
        for name in EVAL_MODELS:
            output = predictions[name]
            strong = output.strong.detach().float().cpu().numpy()
            weak = output.weak.detach().float().cpu().numpy()
            for row, clip_id in enumerate(batch.id):
                if predictions["is_strong"][row]:
                    self.frame_scores[name][clip_id] = strong[row].T
                if predictions["is_weak"][row]:
                    self.clip_scores[name][clip_id] = weak[row]
        weak_targets = predictions["weak_targets"].cpu().numpy()
        for row, clip_id in enumerate(batch.id):
            self.clip_durations[clip_id] = float(durations[row])
            if predictions["is_weak"][row]:
                self.clip_targets[clip_id] = weak_targets[row]

    def _score_frames(self, name):
        """Score DataFrames of one model: raw and median-filtered."""
        encoder = self.hparams.encoder
        pad_tail = getattr(self.hparams, "score_padded_tail", False)
        raw = {
            clip_id: frame_scores_to_dataframe(
                scores,
                encoder.classes,
                frame_duration=encoder.frame_duration,
                duration=None if pad_tail else self.clip_durations[clip_id],
            )
            for clip_id, scores in self.frame_scores[name].items()
        }
        return raw, median_filter(raw, self.hparams.median_filter)

    def _evaluate_models(self, ground_truth, durations, return_psd_roc=False):
        """Metrics of each model, and its (raw, filtered) score DataFrames."""
        results, scores = {}, {}
        for name in EVAL_MODELS:
            stats = {}
            if self.frame_scores[name]:
                raw, filtered = self._score_frames(name)
                stats = compute_sed_metrics(
                    filtered,
                    ground_truth,
                    durations,
                    return_psd_roc=return_psd_roc,
                )
                scores[name] = (raw, filtered)
            if self.clip_scores[name]:
                ids = sorted(self.clip_scores[name])
                stats["weak_f1"] = clip_macro_f1(
                    np.stack([self.clip_scores[name][i] for i in ids]),
                    np.stack([self.clip_targets[i] for i in ids]),
                )
            results[name] = stats
        return results, scores

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, score, checkpoint (VALID) and write results (TEST).

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        stage_loss : float
            Average loss of the stage.
        epoch : int, optional
            The epoch.
        """
        stats = {"loss": stage_loss}
        n = max(self.loss_terms.pop("_n", 1), 1)
        stats.update({k: v / n for k, v in self.loss_terms.items()})
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if stage == sb.Stage.VALID:
            results, _ = self._evaluate_models(
                self.hparams.valid_ground_truth, self.hparams.valid_durations
            )
            for name, model_stats in results.items():
                for key in ("psds1", "intersection_f1", "weak_f1"):
                    if key in model_stats:
                        stats[f"{name}_{key}"] = model_stats[key]
                # DCASE baseline objective: weak F1 + synthetic-val
                # intersection F1.
                stats[f"{name}_obj"] = model_stats.get(
                    "weak_f1", 0.0
                ) + model_stats.get("intersection_f1", 0.0)
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=getattr(self, "train_stats", None),
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta=stats,
                max_keys=[self.hparams.selection_key],
                num_to_keep=1,
            )
            return
        # TEST
        results, scores = self._evaluate_models(
            self.hparams.test_ground_truth,
            self.hparams.test_durations,
            return_psd_roc=True,
        )
        if if_main_process():
            self._write_test_outputs(results, scores, stats)

    def _write_test_outputs(self, results, scores, stats):
        from speechbrain_sed_condmix.plots import plot_psd_roc

        out = Path(self.hparams.output_folder)
        summary = {"loss": stats["loss"]}
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
            logger.info(
                "Test results (%s):\n%s", name, format_table(model_stats)
            )
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
            test_stats={
                f"{name}_{key}": summary[name][key]
                for name in EVAL_MODELS
                for key in ("psds1", "psds2", "intersection_f1", "collar_f1")
                if key in summary[name]
            },
        )


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
