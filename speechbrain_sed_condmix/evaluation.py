"""Evaluation of the student and the teacher at validation and test time.

:class:`ScoreCollector` keeps each model's frame and clip scores per clip,
merges them across DDP ranks, turns them into score DataFrames (raw and
median-filtered) and computes the metrics with sed_scores_eval;
:func:`selection_stats` adds the checkpoint-selection keys;
:class:`ValidScores` saves the teacher's validation scores with each
checkpoint for the post-processing tuning at test time.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from speechbrain_sed_condmix.distributed import gather_objects, world_size
from speechbrain_sed_condmix.metrics import clip_macro_f1, compute_sed_metrics
from speechbrain_sed_condmix.postprocessing import median_filter
from speechbrain_sed_condmix.scores import frame_scores_to_dataframe

#: The models scored at validation and test time.
EVAL_MODELS = ("student", "teacher")

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


def to_fp32(output):
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


class ScoreCollector:
    """Scores of every evaluated model for one validation or test stage.

    Arguments
    ---------
    encoder : FrameLabelEncoder
        The label encoder (classes, frame duration).
    median_filter_size : int or list
        Median filter length(s) in frames.
    score_padded_tail : bool
        Score the zero-padded frames past a short clip's end (the
        reference's behaviour) or not.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from speechbrain_sed_condmix.dataio.encoder import FrameLabelEncoder
    >>> encoder = FrameLabelEncoder(["Dog", "Cat"])
    >>> collector = ScoreCollector(encoder, 1, score_padded_tail=False)
    >>> out = SimpleNamespace(strong=torch.rand(1, 2, 156),
    ...                       weak=torch.rand(1, 2))
    >>> predictions = {"student": out, "teacher": out,
    ...                "is_strong": torch.tensor([True]),
    ...                "is_weak": torch.tensor([False]),
    ...                "weak_targets": torch.zeros(1, 2)}
    >>> collector.collect(predictions, SimpleNamespace(id=["a"],
    ...                                                duration=[10.0]))
    >>> raw, filtered = collector.score_frames("teacher")
    >>> list(raw), list(raw["a"].columns[2:])
    (['a'], ['Dog', 'Cat'])
    """

    def __init__(self, encoder, median_filter_size, score_padded_tail):
        self.encoder = encoder
        self.median_filter_size = median_filter_size
        self.score_padded_tail = score_padded_tail
        self.frame_scores = {name: {} for name in EVAL_MODELS}
        self.clip_scores = {name: {} for name in EVAL_MODELS}
        self.clip_targets = {}
        self.clip_durations = {}

    def collect(self, predictions, batch):
        """Keep the batch's frame scores (strong rows), clip scores and
        targets (weak rows) and durations."""
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

    def gather(self, stage_loss, loss_terms):
        """Merge every rank's scores and losses (DDP); return the loss.

        The scores are keyed by clip id, so the clips that the distributed
        sampler repeats to even out the shards count once. Every rank ends
        with the whole set, so all compute the same metrics.
        ``loss_terms`` (``{name: sum}``, with the batch count ``_n``) is
        replaced by the sums over the ranks.
        """
        if world_size() == 1:
            return stage_loss
        parts = gather_objects(
            {
                "frame_scores": self.frame_scores,
                "clip_scores": self.clip_scores,
                "clip_targets": self.clip_targets,
                "clip_durations": self.clip_durations,
                "loss_terms": loss_terms,
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
        loss_terms.clear()
        loss_terms.update(terms)
        # The stage loss is a mean over each rank's batches.
        batches = [part["loss_terms"].get("_n", 0) for part in parts]
        total = sum(float(p["loss"]) * b for p, b in zip(parts, batches))
        return total / max(sum(batches), 1)

    def to_dataframes(self, frame_scores, durations):
        """``{clip: [T, C] array}`` as score DataFrames, raw."""
        encoder = self.encoder
        return {
            clip_id: frame_scores_to_dataframe(
                scores,
                encoder.classes,
                frame_duration=encoder.frame_duration,
                duration=None if self.score_padded_tail else durations[clip_id],
            )
            for clip_id, scores in frame_scores.items()
        }

    def score_frames(self, name):
        """Score DataFrames of one model: raw and median-filtered."""
        raw = self.to_dataframes(self.frame_scores[name], self.clip_durations)
        return raw, median_filter(raw, self.median_filter_size)

    def evaluate(self, ground_truth, durations, return_psd_roc=False):
        """Metrics of each model, and its (raw, filtered) score DataFrames."""
        results, scores = {}, {}
        for name in EVAL_MODELS:
            stats = {}
            if self.frame_scores[name]:
                raw, filtered = self.score_frames(name)
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


def selection_stats(results):
    """Validation statistics of each model, with the selection keys.

    ``<model>_psds`` is PSDS1 + PSDS2 (ATST-SED stage 2 selects on it) and
    ``<model>_obj`` the DCASE baseline objective, weak F1 + synthetic
    validation intersection F1.

    Arguments
    ---------
    results : dict
        ``{model: metrics}`` from :meth:`ScoreCollector.evaluate`.

    Returns
    -------
    dict
        Flat ``{<model>_<key>: value}``.

    Example
    -------
    >>> stats = selection_stats({"student": {
    ...     "psds1": 0.25, "psds2": 0.5, "weak_f1": 0.5,
    ...     "intersection_f1": 0.25}})
    >>> stats["student_psds"], stats["student_obj"]
    (0.75, 0.75)
    """
    stats = {}
    for name, model_stats in results.items():
        for key in ("psds1", "psds2", "intersection_f1", "weak_f1"):
            if key in model_stats:
                stats[f"{name}_{key}"] = model_stats[key]
        stats[f"{name}_psds"] = model_stats.get("psds1", 0.0) + model_stats.get(
            "psds2", 0.0
        )
        stats[f"{name}_obj"] = model_stats.get(
            "weak_f1", 0.0
        ) + model_stats.get("intersection_f1", 0.0)
    return stats
