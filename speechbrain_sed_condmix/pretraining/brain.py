"""ATSTFramePretrainBrain: ATST-Frame self-supervised pretraining.

One training step:

1. waveform crops -> ATST power mel -> normalised (MinMax-scaled dB) mel
   (``modules.frontend``, an ``ATSTMelFrontEnd``);
2. view 1 is the clean mel; view 2 is mixed with a memory-bank partner
   (``hparams.mixup``, a :class:`~.views.MemoryBankMixup`) and warped in
   frequency (``hparams.view_augment``, a :class:`~.views.FrequencyResizeCrop`);
3. one block mask per clip (``hparams.mask``, a :func:`~.views.block_mask`
   partial), shared by the two views;
4. the student (encoder with masked input, projector, predictor) and the
   teacher (unmasked input, EMA encoder and projector) run on the
   concatenated views and return the masked frames; the loss is
   :func:`~.model.symmetric_frame_loss`;
5. before each optimiser step ``hparams.schedule`` sets the learning rate
   and weight decay; after it the teacher moves towards the student with
   the scheduled momentum.

At the end of every epoch the main process writes the checkpoint
(resumable, with SpeechBrain's checkpointer) and the ATST-Frame file
``hparams.export_path`` in the pretraining layout.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import logging

import speechbrain as sb
import torch
from speechbrain.utils.distributed import main_process_only

from speechbrain_sed_condmix.distributed import (
    world_size,
    wrap_trained_modules,
)
from speechbrain_sed_condmix.preemption import GracefulPreemption
from speechbrain_sed_condmix.pretraining.model import (
    save_pretrain_checkpoint,
    symmetric_frame_loss,
)
from speechbrain_sed_condmix.pretraining.schedules import (
    pretrain_param_groups,
)
from speechbrain_sed_condmix.resilience import TrainingState

logger = logging.getLogger(__name__)


class ATSTFramePretrainBrain(GracefulPreemption, sb.Brain):
    """Brain for ATST-Frame pretraining on unlabeled audio (module doc).

    Expected ``modules``: ``frontend`` (``mel`` and ``normalize``),
    ``student`` (an ``ATSTFrameBYOL`` with a predictor) and ``teacher``
    (a ``MomentumTeacher``). Expected ``hparams`` (the recipe's
    ``train.py`` lists them): ``mixup``, ``view_augment``, ``mask``,
    ``schedule``, ``batch_size``, ``export_path``, ``hyper_parameters``,
    ``train_logger`` and ``epoch_counter``.

    SIGTERM or SIGUSR1 stops the run after the current optimiser step with
    an intra-epoch checkpoint and exit status 75. Under ``torchrun`` the
    student is wrapped in DDP, the teacher is not.

    Arguments
    ---------
    *args, **kwargs
        Passed to ``speechbrain.Brain``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(self.optimizer_step_limit, str):
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        self.steps_per_epoch = None
        self.momentum = None
        self.training_state = TrainingState()
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(
                "training_state", self.training_state
            )

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """SpeechBrain's loader; records the training steps per epoch.

        Arguments as ``Brain.make_dataloader``.
        """
        loader = super().make_dataloader(
            dataset, stage, ckpt_prefix, **loader_kwargs
        )
        if stage == sb.Stage.TRAIN:
            self.steps_per_epoch = len(loader)
            if self.steps_per_epoch == 0:
                raise ValueError(
                    f"{len(dataset)} training clips make no batch of "
                    f"batch_size={self.hparams.batch_size} (drop_last): "
                    "use more clips or a smaller batch_size"
                )
        return loader

    def compute_forward(self, batch, stage):
        """Views, mask, student and teacher on the concatenated views.

        Returns ``(student frames, teacher frames)``, each ``[2N, d]``
        for the ``N`` masked frames of the batch.
        """
        batch = batch.to(self.device)
        wavs, _ = batch.sig
        frontend = self.modules.frontend
        clean = frontend.normalize(frontend.mel(wavs))
        mixed = self.hparams.view_augment(self.hparams.mixup(clean))
        n_tokens = clean.shape[-1] // self.hparams.hyper_parameters["patch_w"]
        mask = self.hparams.mask(len(clean), n_tokens, device=self.device)
        views = torch.cat([clean, mixed])
        masks = torch.cat([mask, mask])
        self.mask_share = float(mask.float().mean())
        return (
            self.modules.student(views, masks),
            self.modules.teacher(views, masks),
        )

    def compute_objectives(self, predictions, batch, stage):
        """The symmetric ``2 - 2 cos`` loss over the masked frames."""
        student_out, teacher_out = predictions
        with torch.autocast(device_type=self.device_type, enabled=False):
            return symmetric_frame_loss(student_out.float(), teacher_out)

    def init_optimizers(self):
        """AdamW (``opt_class``) over the student's two groups."""
        if self.opt_class is None:
            return super().init_optimizers()
        self.optimizer = self.opt_class(
            pretrain_param_groups(self.modules.student)
        )
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def on_fit_batch_start(self, batch, should_step):
        """The learning rate, weight decay and momentum of the next step.

        Arguments as ``Brain.on_fit_batch_start``.
        """
        self.training_state.restore_pending()
        self.momentum = self.hparams.schedule(
            self.optimizer,
            step=self.optimizer_step,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.hparams.epoch_counter.limit,
            batch_size=self.hparams.batch_size,
            world=world_size(),
        )

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """After an optimiser step, the EMA update of the teacher.

        Arguments as ``Brain.on_fit_batch_end``.
        """
        if should_step:
            self.modules.teacher.update(self.modules.student, self.momentum)

    def _wrap_distributed(self):
        """Wrap the student in DDP (SyncBatchNorm on CUDA only); the
        teacher stays unwrapped and starts from rank 0's weights."""
        if not self.distributed_launch:
            return super()._wrap_distributed()
        wrap_trained_modules(
            self.modules,
            self.device,
            self.device_type,
            idle=set(),
            find_unused_parameters=self.find_unused_parameters,
        )

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch (the checkpoint and the ATST-Frame file follow).

        Arguments as ``Brain.on_stage_end``.
        """
        if stage != sb.Stage.TRAIN:
            return
        stats = {
            "loss": stage_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "weight_decay": self.optimizer.param_groups[0]["weight_decay"],
            # 1 - m: the momentum itself rounds to 1.00 in the log.
            "one_minus_momentum": 1.0 - self.momentum,
        }
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch": epoch, "steps": self.optimizer_step},
            train_stats=stats,
        )
        self.train_loss = stage_loss

    def _fit_valid(self, valid_set, epoch, enable):
        # No validation set: the end of the epoch is the checkpoint. Saved
        # here, after Brain has reset its batch counter, so that a resumed
        # run starts the next epoch at its first batch.
        super()._fit_valid(valid_set, epoch, enable)
        if self.checkpointer is not None:
            self.checkpointer.save_and_keep_only(
                meta={"epoch": epoch, "loss": self.train_loss}, num_to_keep=1
            )
        self.export(epoch)

    @main_process_only
    def export(self, epoch):
        """Write ``hparams.export_path`` (ATST-Frame pretraining layout).

        Arguments
        ---------
        epoch : int
            The epoch just finished (recorded in ``hyper_parameters``).
        """
        info = dict(self.hparams.hyper_parameters)
        info.update(epoch=epoch, optimizer_steps=self.optimizer_step)
        save_pretrain_checkpoint(
            self.hparams.export_path,
            self.modules.student,
            self.modules.teacher,
            info,
        )
        logger.info(
            "Wrote the ATST-Frame pretraining checkpoint %s (epoch %d, "
            "%d optimiser steps)",
            self.hparams.export_path,
            epoch,
            self.optimizer_step,
        )
