"""SEDBrain: semi-supervised sound event detection with SpeechBrain.

The Brain keeps SpeechBrain's hooks; what they use lives in modules named
after their concept: the training objective (``objectives``, built in the
YAML), evaluation (``evaluation``), the test report (``reporting``), DDP
helpers (``distributed``) and run bookkeeping (``resilience``).

One training step:

1. waveform -> linear mel(s) on the training device (``modules.frontend``:
   one CNN mel for the CRNN, CNN mel + ATST power mel for ATST-SED);
2. mixup within subsets (``hparams.mixup``, e.g. ``ConditionalMixup``),
   with the same coefficient and partner for every mixed representation;
3. log / scaling, optional per-input augmentation (``input_augment``, e.g.
   frequency warping of the ATST mel, drawn separately for the student and
   the teacher), then the student and the EMA teacher. The teacher sees the
   student's mixed input (``teacher_input: mixed``, Mean Teacher as in the
   DCASE baseline and ATST-SED stage 1) or the unmixed clips
   (``teacher_input: clean``, ATST-SED stage 2 and the conditional-mixup
   method);
4. the loss: ``hparams.objective`` (an ``SEDObjective``), whose terms
   (supervised BCE, Mean Teacher, pseudo-labels, contrastive) have their
   weights, ramp-ups and rows in the YAML;
5. after the optimiser step, the EMA updates (teacher, teacher projector).

Validation and test score the student and the teacher with the same code
(``evaluation.ScoreCollector``); each checkpoint keeps the teacher's
validation scores (``ValidScores``), on which the test report tunes the
post-processing.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging

import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.distributed import if_main_process

from speechbrain_sed_condmix.augment.mixup import MixInfo, subset_groups
from speechbrain_sed_condmix.dashboard import (
    log_epoch,
    log_figures,
    term_weights,
)
from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler
from speechbrain_sed_condmix.distributed import (
    audit_training_shards,
    broadcast_buffers,
    shard_for_evaluation,
    world_size,
    wrap_trained_modules,
)
from speechbrain_sed_condmix.evaluation import (
    EVAL_MODELS,
    TUNED_MODEL,
    ScoreCollector,
    ValidScores,
    selection_stats,
    to_fp32,
)
from speechbrain_sed_condmix.preemption import GracefulPreemption
from speechbrain_sed_condmix.reporting import write_test_report
from speechbrain_sed_condmix.resilience import (
    TrainingState,
    count_bad_audio,
    log_nonfinite_loss,
)
from speechbrain_sed_condmix.teacher import unwrap_module as _unwrap

logger = logging.getLogger(__name__)

#: Modules that the optimiser does not train as "extra" modules.
_NOT_EXTRA = ("frontend", "student", "teacher")


class SEDBrain(GracefulPreemption, sb.Brain):
    """Brain for semi-supervised SED with a Mean Teacher.

    Expected ``modules``: ``frontend`` (with ``mel`` and ``normalize``;
    ``mel`` may return one tensor or a list, one per model input),
    ``student`` (returns an ``SEDOutput``), ``teacher`` (an
    :class:`~speechbrain_sed_condmix.teacher.EMATeacher`) and the modules
    that the objective's terms run (e.g. ``contrastive``).

    Expected ``hparams`` (every one is read; the recipe's ``train.py``
    lists them): ``encoder``, ``objective`` (an ``SEDObjective``),
    ``lr_schedule`` (e.g. ``WarmupCosineLR``), ``param_groups``,
    ``teacher_input`` (``mixed`` or ``clean``), ``mixup`` (None: no mixup),
    ``mix_subsets``, ``mix_inputs`` (None: every input), ``input_augment``
    (None or one module or None per input), ``feature_cache`` (a
    ``FeatureCache``; no folder: none), ``channels_last``,
    ``max_bad_audio``, ``valid_every_n_epochs``, ``selection_key``,
    ``median_filter``, ``score_padded_tail``, ``csebbs_tuning``,
    ``n_event_rolls``, ``valid_ground_truth``, ``valid_durations``,
    ``test_ground_truth``, ``test_durations``, ``output_folder``,
    ``train_logger`` and ``epoch_counter``.

    A configuration that contradicts itself (a pseudo-label or contrastive
    term without ``teacher_input: clean``, a term whose module is missing)
    stops here, before any data is read.

    SIGTERM or SIGUSR1 during ``fit`` stops the run after the current
    optimiser step with an intra-epoch checkpoint and exit status 75
    (:class:`~speechbrain_sed_condmix.preemption.GracefulPreemption`).

    Under ``torchrun`` (DDP) the trained modules are wrapped, the teacher
    is not; validation and test are sharded and their scores gathered, so
    every rank computes the metrics of the whole set.

    Arguments
    ---------
    *args, **kwargs
        Passed to ``speechbrain.Brain``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hparams.objective.check(self.hparams.teacher_input, self.modules)
        none = torch.zeros(0, dtype=torch.bool)
        subset_groups(none, none, self.hparams.mix_subsets)  # names known?
        # SpeechBrain 1.1 keeps --optimizer_step_limit=N as a string.
        if isinstance(self.optimizer_step_limit, str):
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        if self.hparams.channels_last:
            # NHWC convolution weights make the convolutions produce NHWC
            # maps, which the channel-mixing gates read without a transpose
            # copy (training steps measured 4-30 % faster, on CPU and GPU).
            self.modules.to(memory_format=torch.channels_last)
        self.steps_per_epoch = None
        self.valid_scores = ValidScores()
        self.training_state = TrainingState()
        self.train_clips = []
        if self.checkpointer is not None:
            # Optional: checkpoints written before they existed still load.
            self.checkpointer.add_recoverable(
                "valid_scores", self.valid_scores, optional_load=True
            )
            self.checkpointer.add_recoverable(
                "training_state", self.training_state, optional_load=True
            )

    # ------------------------------------------------------------------
    # Data loading

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """Build loaders; keep ``MultiSourceBatchSampler`` unwrapped.

        Brain wraps any train batch sampler in a ``DistributedSampler`` under
        DDP, which would shard batches that ``MultiSourceBatchSampler``
        already shards per source. Under DDP, validation and test sets are
        sharded over the ranks (``shard_for_evaluation``) and their scores
        gathered before scoring. Arguments as ``Brain.make_dataloader``.
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
        if stage != sb.Stage.TRAIN:
            shard_for_evaluation(dataset, loader_kwargs)
        return super().make_dataloader(
            dataset, stage, ckpt_prefix, **loader_kwargs
        )

    # ------------------------------------------------------------------
    # Forward and losses

    def compute_forward(self, batch, stage):
        """Features, mixup, augmentation, student and teacher outputs.

        The batch has ``sig``, ``strong_labels``, ``weak_labels``,
        ``is_strong`` and ``is_weak``. Returns a dict: ``student`` and
        ``teacher`` outputs, the (mixed) targets, the row masks, the mix
        record ``mix`` (a ``MixInfo``) and ``teacher_input``.
        """
        batch = batch.to(self.device)
        wavs, _ = batch.sig
        strong = batch.strong_labels.data.float()
        weak = batch.weak_labels.data.float()
        is_strong = batch.is_strong.bool()
        is_weak = batch.is_weak.bool()
        # The opt-in cache (``FeatureCache``) reads each clip's linear mel
        # from disk after its first step; with no folder it is the front end.
        mels = self.hparams.feature_cache.mel(wavs, self.modules.frontend)
        if isinstance(mels, torch.Tensor):
            mels = [mels]
        info = MixInfo.identity(len(wavs), wavs.device)
        mixup = self.hparams.mixup
        if stage != sb.Stage.TRAIN:
            student_in = teacher_in = self._network_inputs(mels, augment=False)
        else:
            mixed = list(mels)
            if mixup is not None:
                which = self.hparams.mix_inputs
                which = range(len(mels)) if which is None else which
                groups = subset_groups(
                    is_strong, is_weak, self.hparams.mix_subsets
                )
                out, info = mixup([mels[i] for i in which], groups)
                for i, x in zip(which, out):
                    mixed[i] = x
                strong = info.mix_targets(strong)
                weak = info.mix_targets(weak)
            student_in = self._network_inputs(mixed)
            if self.hparams.teacher_input == "clean":
                teacher_in = self._network_inputs(mels)
            elif self.hparams.input_augment:
                teacher_in = self._network_inputs(mixed)
            else:
                teacher_in = student_in
        return {
            "student": self.modules.student(*student_in),
            "teacher": self.modules.teacher(*teacher_in),
            "strong_targets": strong,
            "weak_targets": weak,
            "is_strong": is_strong,
            "is_weak": is_weak,
            "mix": info,
            "teacher_input": self.hparams.teacher_input,
        }

    def _network_inputs(self, mels, augment=True):
        """Normalise each mel, then apply its (optional) augmentation."""
        inputs = self.modules.frontend.normalize(
            list(mels) if len(mels) > 1 else mels[0]
        )
        inputs = list(inputs) if isinstance(inputs, list) else [inputs]
        if not augment:
            return inputs
        augment = self.hparams.input_augment or []
        for i, module in enumerate(augment):
            if module is not None:
                inputs[i] = module(inputs[i])
        return inputs

    def compute_objectives(self, predictions, batch, stage):
        """The objective's loss (its supervised terms only outside
        training); collects the scores when scoring."""
        # Whatever --precision runs the networks in, the losses (and the
        # contrastive heads that feed one) and the scores are fp32.
        predictions = {
            key: to_fp32(value) if key in EVAL_MODELS else value
            for key, value in predictions.items()
        }
        train = stage == sb.Stage.TRAIN
        with torch.autocast(device_type=self.device_type, enabled=False):
            loss, terms = self.hparams.objective(
                predictions,
                self.modules,
                train=train,
                step=self.optimizer_step,
                steps_per_epoch=self.steps_per_epoch,
            )
        if not train:
            self.scores.collect(predictions, batch)
        for name, value in terms.items():
            self.loss_terms[name] = self.loss_terms.get(name, 0.0) + float(
                value
            )
        self.loss_terms["_n"] = self.loss_terms.get("_n", 0) + 1
        return loss

    # ------------------------------------------------------------------
    # Optimiser, schedules and the teacher

    def init_optimizers(self):
        """One optimiser over parameter groups with their own peak LRs.

        ``hparams.param_groups`` (e.g. ``sed_param_groups`` with the CNN,
        RNN and layer-wise ATST rates) builds the groups from the student and
        the other trained modules (e.g. the contrastive heads).
        """
        if self.opt_class is None:
            return super().init_optimizers()
        extra = [m for k, m in self.modules.items() if k not in _NOT_EXTRA]
        groups = self.hparams.param_groups(
            self.modules.student, extra_modules=extra
        )
        self.optimizer = self.opt_class(groups)
        for group in self.optimizer.param_groups:
            group["peak_lr"] = group["lr"]
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_batch_start(self, batch, should_step):
        """Bookkeeping, then each group's LR for the coming optimiser step.

        Arguments as ``Brain.on_fit_batch_start``.
        """
        self.training_state.restore_pending()
        self._batch_ids = list(getattr(batch, "id", []))
        if world_size() > 1:
            self.train_clips.extend(self._batch_ids)
        count_bad_audio(
            batch, self.training_state.bad_audio, self.hparams.max_bad_audio
        )
        self.hparams.lr_schedule(
            self.optimizer,
            step=self.optimizer_step + 1,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.hparams.epoch_counter.limit,
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """After an optimiser step, update the EMA teacher (and the EMA heads
        of the objective's modules). Arguments as ``Brain.on_fit_batch_end``.
        """
        if not should_step:
            return
        broadcast_buffers(self.modules.student)
        self.modules.teacher.update(self.modules.student, self.optimizer_step)
        for name in sorted(self.hparams.objective.active_modules()):
            module = _unwrap(self.modules[name])
            if hasattr(module, "update_teacher"):
                module.update_teacher(self.optimizer_step)

    def check_loss_isfinite(self, loss):
        """SpeechBrain's ``nonfinite_patience`` check, naming the batch."""
        log_nonfinite_loss(
            loss, self.optimizer_step, getattr(self, "_batch_ids", [])
        )
        return super().check_loss_isfinite(loss)

    def _wrap_distributed(self):
        """Wrap the trained modules in DDP, except the teacher and the
        modules of terms that weigh 0 (see ``wrap_trained_modules``)."""
        if not self.distributed_launch:
            return super()._wrap_distributed()
        wrap_trained_modules(
            self.modules,
            self.device,
            self.device_type,
            idle=self.hparams.objective.idle_modules(),
            find_unused_parameters=self.find_unused_parameters,
        )

    def _save_intra_epoch_ckpt(self):
        """SpeechBrain's intra-epoch checkpoint, logged at INFO level."""
        super()._save_intra_epoch_ckpt()
        logger.info(
            "Saved an intra-epoch checkpoint: epoch %d, batch %d",
            self.hparams.epoch_counter.current,
            self.step,
        )

    def on_fit_start(self):
        """Set up as SpeechBrain does, then say where a resumed run goes on."""
        super().on_fit_start()
        if self.step:
            logger.info(
                "Resuming epoch %d after batch %d (optimiser step %d)",
                self.hparams.epoch_counter.current + 1,
                self.step,
                self.optimizer_step,
            )

    # ------------------------------------------------------------------
    # Stages

    def on_stage_start(self, stage, epoch=None):
        """Reset the loss terms and the score buffers (``ScoreCollector``).

        Arguments as ``Brain.on_stage_start``.
        """
        self.loss_terms = {}
        resumed = self.training_state.resumed_terms
        if stage == sb.Stage.TRAIN and resumed:
            # An intra-epoch checkpoint: go on summing this epoch's terms.
            self.loss_terms = dict(resumed)
        self.training_state.resumed_terms = None
        self.training_state.loss_terms = self.loss_terms
        self.train_clips = []
        self.scores = ScoreCollector(
            self.hparams.encoder,
            self.hparams.median_filter,
            self.hparams.score_padded_tail,
        )

    def _fit_valid(self, valid_set, epoch, enable):
        # Validation is costly (PSDS on two models): run it every
        # ``valid_every_n_epochs`` epochs and always at the last epoch.
        every = int(self.hparams.valid_every_n_epochs)
        last = epoch == self.hparams.epoch_counter.limit
        if every > 1 and epoch % every and not last:
            # Still an end-of-epoch checkpoint, so that a resumed run loses
            # at most the current epoch. It has no selection key, so the
            # next checkpoint replaces it.
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"epoch": epoch},
                    max_keys=[self.hparams.selection_key],
                    num_to_keep=1,
                )
            log_epoch(self, epoch)  # every epoch's training statistics
            return
        super()._fit_valid(valid_set, epoch, enable)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log, score, checkpoint (VALID) and write the report (TEST).

        Arguments as ``Brain.on_stage_end``.
        """
        if stage == sb.Stage.TRAIN:
            audit_training_shards(
                self.train_clips,
                self.modules.teacher,
                epoch,
                self.hparams.output_folder,
            )
        else:
            stage_loss = self.scores.gather(stage_loss, self.loss_terms)
        stats = {"loss": stage_loss}
        n = max(self.loss_terms.pop("_n", 1), 1)
        stats.update({k: v / n for k, v in self.loss_terms.items()})
        if stage == sb.Stage.TRAIN:
            step = max(self.optimizer_step - 1, 0)  # the epoch's last step
            stats.update(
                term_weights(self.hparams.objective, step, self.steps_per_epoch)
            )
            self.train_stats = stats
            return
        h = self.hparams
        if stage == sb.Stage.VALID:
            results, _ = self.scores.evaluate(
                h.valid_ground_truth, h.valid_durations
            )
            stats.update(selection_stats(results))
            log_epoch(self, epoch, valid_stats=stats)
            self.valid_scores.update(
                self.scores.frame_scores[TUNED_MODEL],
                self.scores.clip_durations,
            )
            self.checkpointer.save_and_keep_only(
                meta=stats, max_keys=[h.selection_key], num_to_keep=1
            )
            return
        results, scores = self.scores.evaluate(
            h.test_ground_truth, h.test_durations, return_psd_roc=True
        )
        if if_main_process():
            write_test_report(
                results,
                scores,
                stats["loss"],
                self.scores,
                self.valid_scores,
                h,
            )
            log_figures(h.train_logger, h.output_folder, h.epoch_counter)
        # A collective call (main_process_only): every rank makes it.
        h.train_logger.log_stats(
            stats_meta={"Epoch loaded": h.epoch_counter.current},
            test_stats={
                f"{name}_{key}": results[name][key]
                for name in EVAL_MODELS
                for key in ("psds1", "psds2", "intersection_f1", "collar_f1")
                if key in results[name]
            },
        )
