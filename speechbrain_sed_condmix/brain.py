"""SEDBrain: semi-supervised sound event detection with SpeechBrain.

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
4. the loss, assembled from YAML weights, each unsupervised weight ramped
   up with ``exp(-5 (1 - t/T)^2)``:

   * supervised BCE on strong frames (strong rows) and clip labels (weak
     rows), against the mixed labels (composition rows) or the dominant
     clip's labels (perturbation rows);
   * ``const_max`` x consistency MSE between student and teacher (the whole
     batch when the teacher sees the mixed input; the unmixed rows
     otherwise);
   * ``pseudo_label_weight`` x MSE to the teacher's pseudo-labels on the
     mixed rows: ``lam T(x_i) + (1 - lam) T(x_j)`` for composition,
     ``T(x_i)`` for perturbation;
   * ``contrastive_weight`` x the embedding-level contrastive loss
     (``modules.contrastive``) on the mixed rows;
5. after the optimiser step, the EMA updates (teacher, teacher projector).

Validation and test score the student and the teacher with the same code:
frame scores -> median filter -> sed_scores_eval metrics. Each checkpoint
also keeps the teacher's validation scores (``ValidScores``); the test stage
tunes the teacher's post-processing on them (per-class thresholds, cSEBB
when the optional sebbs package is installed), reports it next to the plain
median filter, saves it as ``postprocessing.json`` for ``sed-export`` and
draws event rolls of a few test clips.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process
from torch.nn import SyncBatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, IterableDataset

from speechbrain_sed_condmix import losses
from speechbrain_sed_condmix.augment.mixup import MixInfo
from speechbrain_sed_condmix.dataio.sampler import MultiSourceBatchSampler
from speechbrain_sed_condmix.metrics import (
    PSDS1_PARAMS,
    PSDS2_PARAMS,
    clip_macro_f1,
    compute_sed_metrics,
)
from speechbrain_sed_condmix.optim import sed_param_groups
from speechbrain_sed_condmix.postprocessing import (
    PostProcessing,
    evaluate_postprocessing,
    frame_scores_to_dataframe,
    median_filter,
    tune_postprocessing,
    write_scores,
)
from speechbrain_sed_condmix.safe_load import load_checkpoint
from speechbrain_sed_condmix.schedulers import (
    exponential_rampup,
    warmup_cosine_factor,
)
from speechbrain_sed_condmix.teacher import _unwrap

logger = logging.getLogger(__name__)

#: The models scored at validation and test time.
EVAL_MODELS = ("student", "teacher")

#: Modules that are not trained by the optimiser's "rnn" group.
_NOT_EXTRA = ("frontend", "student", "teacher")

#: The model whose post-processing is tuned (and that is exported).
TUNED_MODEL = "teacher"


@register_checkpoint_hooks
class ValidScores:
    """Validation frame scores of a model, saved with its checkpoint.

    The test stage tunes the post-processing on the validation scores of
    the very checkpoint it tests (and that ``export_detector`` packs),
    without a second pass over the validation set.

    Example
    -------
    >>> store = ValidScores()
    >>> store.update({"a": np.ones((3, 2))}, {"a": 0.2})
    >>> path = getfixture("tmp_path") / "valid_scores.ckpt"
    >>> store.save(path)
    >>> back = ValidScores()
    >>> back.load(path)
    >>> back.scores["a"].shape, back.durations
    ((3, 2), {'a': 0.2})
    """

    def __init__(self):
        self.scores = {}
        self.durations = {}

    def update(self, scores, durations):
        """Keep ``{clip_id: [T, C] array}`` and their durations (s)."""
        self.scores = {
            k: np.asarray(v, dtype=np.float32) for k, v in scores.items()
        }
        self.durations = {k: float(durations[k]) for k in self.scores}

    @mark_as_saver
    def save(self, path):
        """Write the scores as one compressed NumPy archive."""
        ids = sorted(self.scores)
        n_classes = self.scores[ids[0]].shape[1] if ids else 0
        stacked = [self.scores[i] for i in ids]
        with open(path, "wb") as fout:
            np.savez_compressed(
                fout,
                ids=np.array(ids, dtype=str),
                durations=np.array([self.durations[i] for i in ids]),
                lengths=np.array([len(a) for a in stacked], dtype=np.int64),
                scores=np.concatenate(stacked)
                if stacked
                else np.zeros((0, n_classes), dtype=np.float32),
            )

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            parts = np.split(data["scores"], np.cumsum(data["lengths"])[:-1])
            self.scores = dict(zip(ids, parts)) if ids else {}
            self.durations = dict(
                zip(ids, (float(d) for d in data["durations"]))
            )


def world_size():
    """Number of processes of the initialised process group (else 1).

    Example
    -------
    >>> world_size()
    1
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def gather_objects(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank.

    Without a process group (one process) this is ``[obj]``.

    Example
    -------
    >>> gather_objects({"a": 1})
    [{'a': 1}]
    """
    if world_size() == 1:
        return [obj]
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def state_fingerprint(module):
    """SHA-256 of a module's state dict (names, dtypes, shapes, bytes).

    Two modules with bit-identical parameters and buffers have the same
    fingerprint; a checkpoint's ``teacher.ckpt`` loaded with ``torch.load``
    gives the fingerprint of the saved teacher.

    Arguments
    ---------
    module : torch.nn.Module or dict
        A module or a state dict.

    Returns
    -------
    str
        Hex digest.

    Example
    -------
    >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> _ = b.load_state_dict(a.state_dict())
    >>> state_fingerprint(a) == state_fingerprint(b.state_dict())
    True
    >>> with torch.no_grad():
    ...     _ = b.bias.add_(1e-7)
    >>> state_fingerprint(a) == state_fingerprint(b)
    False
    """
    state = module if isinstance(module, dict) else module.state_dict()
    digest = hashlib.sha256()
    for name, value in state.items():
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@register_checkpoint_hooks
class TrainingState:
    """Random-number states and run bookkeeping, saved with each checkpoint.

    Restoring the torch (CPU and CUDA), NumPy and Python generators makes a
    resumed run draw the same mixup partners, dropout masks and crops as an
    uninterrupted one. It also keeps the list of training clips that failed
    to decode (``bad_audio``) and, for an intra-epoch checkpoint, the loss
    terms summed so far in the epoch. Under DDP the main process saves its
    own generator states and every rank restores them (ranks start from the
    same seed anyway, see ``speechbrain.utils.seed_everything``).

    Example
    -------
    >>> state = TrainingState()
    >>> state.bad_audio.append("a.wav: cannot decode")
    >>> path = getfixture("tmp_path") / "state.ckpt"
    >>> state.save(path)
    >>> first = torch.rand(3)
    >>> back = TrainingState()
    >>> back.load(path, end_of_epoch=True)
    >>> torch.equal(torch.rand(3), first), back.bad_audio
    (True, ['a.wav: cannot decode'])
    """

    def __init__(self):
        self.bad_audio = []
        self.loss_terms = {}
        self.resumed_terms = None
        self.pending = None

    @mark_as_saver
    def save(self, path):
        """Write the generator states and the bookkeeping."""
        state = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "bad_audio": list(self.bad_audio),
            "loss_terms": dict(self.loss_terms),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(state, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore what :meth:`save` wrote.

        After an intra-epoch checkpoint the generator states are applied by
        :meth:`restore_pending` at the first batch: the uninterrupted run
        drew the loader's seed at the start of the epoch, before the state
        was saved, and the resumed run draws it again when it re-creates
        the loader's iterator.
        """
        # NumPy arrays and Python tuples: on the safe loader's allow-list.
        state = load_checkpoint(path)
        self.bad_audio = list(state["bad_audio"])
        if end_of_epoch:
            self.pending = None
            self._set_generators(state)
            self.resumed_terms = None  # that epoch is logged already
        else:
            self.pending = state
            self.resumed_terms = state["loss_terms"]

    def restore_pending(self):
        """Apply the generator states of an intra-epoch checkpoint, once."""
        if self.pending is not None:
            self._set_generators(self.pending)
            self.pending = None

    @staticmethod
    def _set_generators(state):
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            cuda = state["cuda"][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(cuda)


class SEDBrain(sb.Brain):
    """Brain for semi-supervised SED with a Mean Teacher.

    Expected ``modules``: ``frontend`` (with ``mel`` and ``normalize``;
    ``mel`` may return one tensor or a list, one per model input),
    ``student`` (returns an ``SEDOutput``), ``teacher`` (an
    :class:`~speechbrain_sed_condmix.teacher.EMATeacher`) and, for the
    contrastive term, ``contrastive`` (an ``EmbeddingContrastiveLoss``).

    Expected ``hparams``: ``encoder`` (a ``FrameLabelEncoder``), ``lr``,
    ``const_max``, ``rampup_epochs``, ``median_filter``,
    ``valid_every_n_epochs``, ``selection_key``, ``valid_ground_truth``,
    ``valid_durations``, ``test_ground_truth``, ``test_durations``,
    ``score_padded_tail``, ``output_folder``, ``train_logger``,
    ``epoch_counter``. Optional (default): ``mixup`` (None),
    ``mix_subsets`` ([strong, weak]), ``mix_inputs`` (all), ``teacher_input``
    ("mixed"), ``input_augment`` (None), ``weak_loss_weight`` (1),
    ``weak_consistency_weight`` (1), ``pseudo_label_weight`` (0),
    ``contrastive_weight`` (0), ``embedding_tap`` ("embeddings"),
    ``param_groups`` (one group at ``lr``), ``lr_floor`` (None: no cosine
    decay), ``max_bad_audio`` (0: stop at the first training clip that
    fails to decode).

    Under ``torchrun`` (DDP) the trained modules are wrapped, the teacher
    is not; validation and test are sharded and their scores gathered, so
    every rank computes the metrics of the whole set (see
    :meth:`_wrap_distributed`, :meth:`make_dataloader`).

    Arguments
    ---------
    *args, **kwargs
        Passed to ``speechbrain.Brain``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SpeechBrain 1.1 keeps --optimizer_step_limit=N as a string.
        if isinstance(self.optimizer_step_limit, str):
            self.optimizer_step_limit = int(self.optimizer_step_limit)
        if getattr(self.hparams, "channels_last", False):
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
        DDP, which would shard batches that are already sharded per source.
        ``MultiSourceBatchSampler`` shards itself, so it is used as it is.
        Under DDP, validation and test sets are sharded over the ranks
        (``DistributedSampler`` without shuffling) and their scores gathered
        before scoring (:meth:`on_stage_end`).

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
        if (
            stage != sb.Stage.TRAIN
            and world_size() > 1
            and not isinstance(dataset, IterableDataset)
            and loader_kwargs.get("sampler") is None
            and loader_kwargs.get("batch_sampler") is None
        ):
            # Each rank scores a shard of the evaluation set; on_stage_end
            # gathers the scores. The sampler pads the last shard with
            # repeated clips, which the gathering (keyed by clip id) drops.
            loader_kwargs["sampler"] = DistributedSampler(
                dataset, shuffle=False
            )
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
            ``student`` and ``teacher`` outputs, the (mixed) targets, the
            row masks and the mix record ``mix`` (a ``MixInfo``).
        """
        batch = batch.to(self.device)
        wavs, _ = batch.sig
        strong = batch.strong_labels.data.float()
        weak = batch.weak_labels.data.float()
        is_strong = batch.is_strong.bool()
        is_weak = batch.is_weak.bool()
        mels = self.modules.frontend.mel(wavs)
        if isinstance(mels, torch.Tensor):
            mels = [mels]
        info = MixInfo.identity(len(wavs), wavs.device)
        mixup = getattr(self.hparams, "mixup", None)
        if stage != sb.Stage.TRAIN:
            student_in = teacher_in = self._network_inputs(mels, augment=False)
        else:
            mixed = list(mels)
            if mixup is not None:
                which = getattr(self.hparams, "mix_inputs", None)
                which = range(len(mels)) if which is None else which
                groups = self._mix_groups(is_strong, is_weak)
                out, info = mixup([mels[i] for i in which], groups)
                for i, x in zip(which, out):
                    mixed[i] = x
                strong = info.mix_targets(strong)
                weak = info.mix_targets(weak)
            student_in = self._network_inputs(mixed)
            if self._teacher_sees_clean():
                teacher_in = self._network_inputs(mels)
            elif getattr(self.hparams, "input_augment", None):
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
        }

    def _teacher_sees_clean(self):
        mode = getattr(self.hparams, "teacher_input", "mixed")
        if mode not in ("mixed", "clean"):
            raise ValueError(f"teacher_input must be mixed or clean: {mode}")
        return mode == "clean"

    def _mix_groups(self, is_strong, is_weak):
        """Row indices of each mixed subset (partners stay in a subset)."""
        rows = {
            "strong": is_strong,
            "weak": is_weak,
            "unlabeled": ~(is_strong | is_weak),
        }
        names = getattr(self.hparams, "mix_subsets", None)
        names = ["strong", "weak"] if names is None else names
        unknown = set(names) - set(rows)
        if unknown:
            raise ValueError(f"mix_subsets: unknown subsets {sorted(unknown)}")
        return [torch.nonzero(rows[n]).flatten() for n in names]

    def _network_inputs(self, mels, augment=True):
        """Normalise each mel, then apply its (optional) augmentation."""
        inputs = self.modules.frontend.normalize(
            list(mels) if len(mels) > 1 else mels[0]
        )
        inputs = list(inputs) if isinstance(inputs, list) else [inputs]
        if not augment:
            return inputs
        augment = getattr(self.hparams, "input_augment", None) or []
        for i, module in enumerate(augment):
            if module is not None:
                inputs[i] = module(inputs[i])
        return inputs

    def compute_objectives(self, predictions, batch, stage):
        """The loss terms; collects scores when scoring.

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
        # Whatever --precision runs the networks in, the losses (and the
        # contrastive heads that feed one) and the scores are fp32.
        predictions = {
            key: _to_fp32(value) if key in EVAL_MODELS else value
            for key, value in predictions.items()
        }
        with torch.autocast(device_type=self.device_type, enabled=False):
            return self._objectives(predictions, batch, stage)

    def _objectives(self, predictions, batch, stage):
        student = predictions["student"]
        is_strong = predictions["is_strong"]
        is_weak = predictions["is_weak"]
        loss_strong = losses.masked_bce(
            student.strong, predictions["strong_targets"], is_strong
        )
        loss_weak = losses.masked_bce(
            student.weak, predictions["weak_targets"], is_weak
        )
        weak_weight = getattr(self.hparams, "weak_loss_weight", 1.0)
        terms = {"strong": loss_strong, "weak": loss_weak}
        loss = loss_strong + weak_weight * loss_weak
        if stage == sb.Stage.TRAIN:
            loss = loss + self._unsupervised_loss(predictions, terms)
        else:
            self._collect_scores(predictions, batch)
        for name, value in terms.items():
            self.loss_terms[name] = self.loss_terms.get(name, 0.0) + float(
                value.detach()
            )
        self.loss_terms["_n"] = self.loss_terms.get("_n", 0) + 1
        return loss

    def _unsupervised_loss(self, predictions, terms):
        """Consistency, pseudo-label and contrastive terms, ramped up.

        Each term is added to ``terms`` (unweighted) for logging; a term
        whose weight is 0 is not computed and logged as 0.
        """
        student = predictions["student"]
        teacher = predictions["teacher"]
        info = predictions["mix"]
        ramp = self.rampup_factor()
        weak_w = getattr(self.hparams, "weak_consistency_weight", 1.0)
        clean = self._teacher_sees_clean()

        def prediction_rows(target_strong, target_weak):
            # Row losses: the MT, pseudo-label and per-mode terms are masked
            # means of them, computed once.
            return losses.rowwise_mse(
                student.strong, target_strong
            ) + weak_w * losses.rowwise_mse(student.weak, target_weak)

        # Mean Teacher: the whole batch when the teacher sees the same
        # (mixed) input; otherwise the rows left unmixed.
        mt_rows = ~info.mixed if clean else None
        terms["consistency"] = losses.masked_mean(
            prediction_rows(teacher.strong, teacher.weak), mt_rows
        )
        total = self.hparams.const_max * ramp * terms["consistency"]
        zero = student.weak.sum() * 0.0
        pl_weight = float(getattr(self.hparams, "pseudo_label_weight", 0.0))
        cl_weight = float(getattr(self.hparams, "contrastive_weight", 0.0))
        if (pl_weight or cl_weight) and not clean:
            raise ValueError(
                "pseudo_label_weight and contrastive_weight need "
                "teacher_input: clean (targets come from the unmixed clips)"
            )
        for key in ("pseudo_label", "contrastive"):
            for part in ("", "_composition", "_perturbation"):
                terms[key + part] = zero
        if pl_weight:
            rows = prediction_rows(
                info.mix_pseudo_labels(teacher.strong),
                info.mix_pseudo_labels(teacher.weak),
            )
            terms["pseudo_label"] = losses.masked_mean(rows, info.mixed)
            for mode in ("composition", "perturbation"):
                terms[f"pseudo_label_{mode}"] = losses.masked_mean(
                    rows.detach(), getattr(info, mode)
                )
            total = total + pl_weight * ramp * terms["pseudo_label"]
        if cl_weight:
            tap = getattr(self.hparams, "embedding_tap", "embeddings")
            contrastive = self.modules.contrastive
            student_emb = getattr(student, tap)
            teacher_emb = getattr(teacher, tap)
            # One pass through the heads: the per-mode parts are read from
            # the same row losses (a second pass would also update the
            # heads' BatchNorm statistics again).
            rows = contrastive(student_emb, teacher_emb, info, reduction="none")
            terms["contrastive"] = losses.masked_mean(rows, info.mixed)
            for mode in ("composition", "perturbation"):
                terms[f"contrastive_{mode}"] = losses.masked_mean(
                    rows.detach(), getattr(info, mode)
                )
            total = total + cl_weight * ramp * terms["contrastive"]
        return total

    # ------------------------------------------------------------------
    # Optimiser, schedules and the teacher

    def init_optimizers(self):
        """One optimiser over parameter groups with their own peak LRs.

        ``hparams.param_groups`` (e.g. ``sed_param_groups`` with the CNN,
        RNN and layer-wise ATST rates) builds the groups from the student and
        the other trained modules (e.g. the contrastive heads); without it,
        every trainable parameter gets ``lr``.
        """
        if self.opt_class is None:
            return super().init_optimizers()
        extra = [m for k, m in self.modules.items() if k not in _NOT_EXTRA]
        make_groups = getattr(self.hparams, "param_groups", None)
        if make_groups is None:
            groups = sed_param_groups(
                self.modules.student, lr=self.hparams.lr, extra_modules=extra
            )
        else:
            groups = make_groups(self.modules.student, extra_modules=extra)
        self.optimizer = self.opt_class(groups)
        for group in self.optimizer.param_groups:
            group["peak_lr"] = group["lr"]
        self.optimizers_dict = {"opt_class": self.optimizer}
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("optimizer", self.optimizer)

    def rampup_length(self):
        """Ramp-up length in optimiser steps (``rampup_epochs`` epochs)."""
        steps = self.steps_per_epoch or 0
        return int(self.hparams.rampup_epochs * steps)

    def rampup_factor(self):
        """The exponential ramp-up factor at the current step."""
        return exponential_rampup(self.optimizer_step, self.rampup_length())

    def consistency_weight(self):
        """``const_max`` times the ramp-up factor at the current step."""
        return self.hparams.const_max * self.rampup_factor()

    def on_fit_batch_start(self, batch, should_step):
        """Set each group's learning rate for the coming optimiser step.

        The factor is the exponential warm-up over ``rampup_epochs``, then
        1, or a cosine decay to ``lr_floor`` at the last epoch.

        Arguments
        ---------
        batch : PaddedBatch
            The batch.
        should_step : bool
            Whether the optimiser steps after this batch.
        """
        self.training_state.restore_pending()
        self._batch_ids = list(getattr(batch, "id", []))
        if world_size() > 1:
            self.train_clips.extend(self._batch_ids)
        self._count_bad_audio(batch)
        counter = getattr(self.hparams, "epoch_counter", None)
        epochs = counter.limit if counter is not None else 0
        total = epochs * (self.steps_per_epoch or 0)
        factor = warmup_cosine_factor(
            self.optimizer_step + 1,
            self.rampup_length(),
            total,
            floor=getattr(self.hparams, "lr_floor", None),
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Update the EMA teacher (and teacher projector) after each step.

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
            self._sync_student_buffers()
            self.modules.teacher.update(
                self.modules.student, self.optimizer_step
            )
            if "contrastive" in self.modules:
                _unwrap(self.modules.contrastive).update_teacher(
                    self.optimizer_step
                )

    def _sync_student_buffers(self):
        """Give every rank the main process's student buffers.

        BatchNorm running statistics are updated by each rank's own forward
        (on CPU, where ``SyncBatchNorm`` is not available, they differ
        between ranks); DDP would broadcast rank 0's at the next forward. The
        teacher averages them now, so they are broadcast first: the EMA is
        then identical on every rank.
        """
        if world_size() == 1:
            return
        buffers = [
            b
            for b in _unwrap(self.modules.student).buffers()
            if b.is_floating_point()
        ]
        if not buffers:
            return
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        torch.distributed.broadcast(flat, src=0)
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    def _count_bad_audio(self, batch):
        """Count training clips that failed to decode; stop past the limit.

        The training datasets replace such a clip by the next one of its
        subset and name it in the item's ``bad_audio`` field (see
        ``speechbrain_sed_condmix.dataio.pipelines.SkipBadAudio``).
        """
        failed = [
            entry for item in getattr(batch, "bad_audio", []) for entry in item
        ]
        if not failed:
            return
        bad = self.training_state.bad_audio
        for entry in failed:
            logger.warning("Skipped a training clip: %s", entry)
            bad.append(entry)
        limit = int(getattr(self.hparams, "max_bad_audio", 0))
        if len(bad) > limit:
            listing = "\n  ".join(bad)
            raise RuntimeError(
                f"{len(bad)} training clips failed to decode, more than "
                f"max_bad_audio={limit}; fix or remove them (or re-run the "
                f"data preparation):\n  {listing}"
            )

    def check_loss_isfinite(self, loss):
        """SpeechBrain's ``nonfinite_patience`` check, naming the batch.

        Arguments
        ---------
        loss : torch.Tensor
            The (scaled) loss of the current batch.
        """
        if not torch.isfinite(loss):
            logger.warning(
                "Non-finite loss (%s) at optimiser step %d, batch clips: %s",
                float(loss.detach()),
                self.optimizer_step,
                ", ".join(map(str, getattr(self, "_batch_ids", []))),
            )
        super().check_loss_isfinite(loss)

    def _wrap_distributed(self):
        """Wrap the trained modules in DDP; keep the teacher (and idle
        modules) out; make every rank's teacher rank 0's.

        As SpeechBrain, but: ``SyncBatchNorm`` only on CUDA (it does not run
        on CPU); the contrastive heads stay unwrapped when
        ``contrastive_weight`` is 0 (they get no gradient, which DDP would
        wait for); the EMA teacher (no trainable parameter) is never wrapped
        and its weights are broadcast from rank 0 before any checkpoint is
        recovered, so that the EMA is identical on all ranks even if the
        initial copies differed.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        idle = set()
        if not float(getattr(self.hparams, "contrastive_weight", 0.0)):
            idle.add("contrastive")
        for name, module in self.modules.items():
            if name in idle or name == "teacher":
                continue
            if not any(p.requires_grad for p in module.parameters()):
                continue
            if self.device_type == "cuda":
                module = SyncBatchNorm.convert_sync_batchnorm(module)
                device_ids = [self.device]
            else:
                device_ids = None
            self.modules[name] = DistributedDataParallel(
                module,
                device_ids=device_ids,
                find_unused_parameters=self.find_unused_parameters,
            )
        if world_size() > 1:
            for tensor in self.modules.teacher.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)

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
        """Reset the loss terms and the score buffers.

        Arguments
        ---------
        stage : sb.Stage
            The stage.
        epoch : int, optional
            The epoch.
        """
        self.loss_terms = {}
        resumed = self.training_state.resumed_terms
        if stage == sb.Stage.TRAIN and resumed:
            # An intra-epoch checkpoint: go on summing this epoch's terms.
            self.loss_terms = dict(resumed)
        self.training_state.resumed_terms = None
        self.training_state.loss_terms = self.loss_terms
        self.train_clips = []
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
            # Still an end-of-epoch checkpoint, so that a resumed run loses
            # at most the current epoch. It has no selection key, so the
            # next checkpoint replaces it.
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"epoch": epoch},
                    max_keys=[self.hparams.selection_key],
                    num_to_keep=1,
                )
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
        if stage == sb.Stage.TRAIN:
            self._check_ddp_training(epoch)
        else:
            stage_loss = self._gather_eval_scores(stage_loss)
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
                for key in ("psds1", "psds2", "intersection_f1", "weak_f1"):
                    if key in model_stats:
                        stats[f"{name}_{key}"] = model_stats[key]
                # ATST-SED stage 2 selects on PSDS1 + PSDS2.
                stats[f"{name}_psds"] = model_stats.get(
                    "psds1", 0.0
                ) + model_stats.get("psds2", 0.0)
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
            self.valid_scores.update(
                self.frame_scores[TUNED_MODEL], self.clip_durations
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
        # A collective call (main_process_only): every rank makes it.
        self.hparams.train_logger.log_stats(
            stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
            test_stats={
                f"{name}_{key}": results[name][key]
                for name in EVAL_MODELS
                for key in ("psds1", "psds2", "intersection_f1", "collar_f1")
                if key in results[name]
            },
        )

    def _gather_eval_scores(self, stage_loss):
        """Merge every rank's scores and losses (DDP); return the loss.

        The scores are keyed by clip id, so the clips that the distributed
        sampler repeats to even out the shards count once. Every rank ends
        with the whole set, so all compute the same metrics.
        """
        if world_size() == 1:
            return stage_loss
        parts = gather_objects(
            {
                "frame_scores": self.frame_scores,
                "clip_scores": self.clip_scores,
                "clip_targets": self.clip_targets,
                "clip_durations": self.clip_durations,
                "loss_terms": self.loss_terms,
                "loss": stage_loss,
            }
        )
        terms = {}
        for part in parts:
            for name in EVAL_MODELS:
                self.frame_scores[name].update(part["frame_scores"][name])
                self.clip_scores[name].update(part["clip_scores"][name])
            self.clip_targets.update(part["clip_targets"])
            self.clip_durations.update(part["clip_durations"])
            for key, value in part["loss_terms"].items():
                terms[key] = terms.get(key, 0) + value
        self.loss_terms.clear()
        self.loss_terms.update(terms)
        # The stage loss is a mean over each rank's batches.
        batches = [part["loss_terms"].get("_n", 0) for part in parts]
        total = sum(float(p["loss"]) * b for p, b in zip(parts, batches))
        return total / max(sum(batches), 1)

    def _check_ddp_training(self, epoch):
        """Under DDP, check and record the epoch's shards and teachers.

        Gathers each rank's training clips and teacher fingerprint; logs an
        error if two ranks trained on the same clip id or if the teachers
        differ, and writes both to ``<output_folder>/ddp_train_check.json``
        (main process).
        """
        if world_size() == 1:
            return
        teacher = _unwrap(self.modules.teacher)
        parts = gather_objects(
            {"clips": self.train_clips, "teacher": state_fingerprint(teacher)}
        )
        seen, shared = set(), set()
        for part in parts:
            shared |= seen & set(part["clips"])
            seen |= set(part["clips"])
        if shared:
            # An error in the log, not a stop: two subsets may share ids.
            logger.error(
                "Epoch %s: ranks trained on clips with the same ids %s",
                epoch,
                sorted(shared)[:10],
            )
        fingerprints = [part["teacher"] for part in parts]
        if len(set(fingerprints)) > 1:
            logger.error("Epoch %s: the ranks' EMA teachers differ", epoch)
        if if_main_process():
            out = Path(self.hparams.output_folder) / "ddp_train_check.json"
            out.write_text(
                json.dumps(
                    {
                        "epoch": epoch,
                        "world_size": len(parts),
                        "train_clips": [part["clips"] for part in parts],
                        "teacher_fingerprint": fingerprints,
                    },
                    indent=1,
                )
            )

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
        self._write_postprocessing(out, summary, scores)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))

    def _write_postprocessing(self, out, summary, scores):
        """Tune post-processing on validation; compare it; event rolls.

        Writes ``postprocessing.json`` (read by ``export_detector``), adds
        ``summary["postprocessing"]`` (median filter with tuned thresholds
        and, with sebbs installed, cSEBB on the test set) and draws
        ``event_rolls/<clip>.png`` for ``n_event_rolls`` test clips.
        """
        from speechbrain_sed_condmix.metrics import load_ground_truth
        from speechbrain_sed_condmix.plots import plot_event_roll

        if TUNED_MODEL not in scores:
            return
        raw = scores[TUNED_MODEL][0]
        classes = self.hparams.encoder.classes
        postprocessing = PostProcessing(
            classes,
            median_filter=self.hparams.median_filter,
            info={"tuned": "no: no validation scores in the checkpoint"},
        )
        if self.valid_scores.scores:
            encoder = self.hparams.encoder
            pad_tail = getattr(self.hparams, "score_padded_tail", False)
            valid = {
                clip_id: frame_scores_to_dataframe(
                    values,
                    classes,
                    frame_duration=encoder.frame_duration,
                    duration=None
                    if pad_tail
                    else self.valid_scores.durations[clip_id],
                )
                for clip_id, values in self.valid_scores.scores.items()
            }
            postprocessing = tune_postprocessing(
                valid,
                self.hparams.valid_ground_truth,
                self.hparams.valid_durations,
                self.hparams.median_filter,
                csebbs=getattr(self.hparams, "csebbs_tuning", True),
            )
            postprocessing.info["tuned_on"] = str(
                self.hparams.valid_ground_truth
            )
            compared = evaluate_postprocessing(
                postprocessing,
                raw,
                self.hparams.test_ground_truth,
                self.hparams.test_durations,
            )
            summary["postprocessing"] = {
                "model": TUNED_MODEL,
                "tuned_on": str(self.hparams.valid_ground_truth),
                **compared,
            }
            logger.info(
                "Test results (%s), post-processing tuned on %s:\n%s",
                TUNED_MODEL,
                self.hparams.valid_ground_truth,
                format_side_by_side(compared),
            )
        postprocessing.save(out / "postprocessing.json")
        truth = load_ground_truth(self.hparams.test_ground_truth)
        n_rolls = int(getattr(self.hparams, "n_event_rolls", 4))
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


def _to_fp32(output):
    """A model output (``SEDOutput`` or tensor) with fp32 tensors."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if hasattr(output, "_replace"):  # NamedTuple such as SEDOutput
        return output._replace(
            **{
                k: v.float()
                for k, v in output._asdict().items()
                if isinstance(v, torch.Tensor) and v.is_floating_point()
            }
        )
    return output


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
