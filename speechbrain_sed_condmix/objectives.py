"""The training objective as a YAML component: loss terms, weights, ramps.

An :class:`SEDObjective` holds named loss terms. Each term knows the rows it
acts on, computes one loss per row, and has a weight and an optional
ramp-up. The objective sums ``weight * ramp * term`` and logs every term.
SEDBrain calls it and knows none of the terms, so a recipe YAML drops,
replaces or re-weights a term (``--contrastive_weight=0`` on the command
line). In a recipe (``objectives`` stands for the module's full path)::

    objective: !new:objectives.SEDObjective
        normalisation: batch
        terms:
            strong: !new:objectives.SupervisedBCE
                output: strong
            consistency: !new:objectives.MeanTeacherConsistency
                weight: !ref <const_max>
                rampup: !ref <unsupervised_rampup>

Normalisation of the unsupervised terms (a term's rows are a subset of the
batch, e.g. the unmixed rows for Mean Teacher when the teacher sees the
clean clips, the mixed rows for the pseudo-labels):

* ``batch`` (default, as the DESED baseline and ATST-SED take their
  consistency terms): the sum of the row losses over the term's rows,
  divided by the batch size. Rows outside the term count as 0, so a row
  weighs the same whatever share of the batch the term selects.
* ``rows``: the mean over the term's own rows. With a mixup probability of
  0.5 each row then weighs twice as much as with ``batch``. This was the
  behaviour of the earlier versions of this package; it is kept for their
  results.

The supervised terms are always the mean over their labelled rows, as in
the references.

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import torch

from speechbrain_sed_condmix import losses
from speechbrain_sed_condmix.schedulers import exponential_rampup

#: The normalisations of the unsupervised terms.
NORMALISATIONS = ("batch", "rows")

#: Values of ``teacher_input`` (what the EMA teacher sees in training).
TEACHER_INPUTS = ("mixed", "clean")


class EpochRampUp:
    """The Mean Teacher ramp ``exp(-5 (1 - t/T)^2)`` over a number of epochs.

    The length in optimiser steps is ``epochs * steps_per_epoch``; the step
    count is the Brain's ``optimizer_step``, which SpeechBrain checkpoints,
    so the ramp has no state of its own.

    Arguments
    ---------
    epochs : float
        Ramp length in epochs; 0 means no ramp (factor 1).

    Example
    -------
    >>> ramp = EpochRampUp(epochs=2)
    >>> ramp(step=10, steps_per_epoch=5)
    1.0
    >>> round(ramp(step=5, steps_per_epoch=5), 6)  # exp(-5 / 4)
    0.286505
    """

    def __init__(self, epochs):
        self.epochs = float(epochs)

    def length(self, steps_per_epoch):
        """Ramp length in optimiser steps."""
        return int(self.epochs * (steps_per_epoch or 0))

    def __call__(self, step, steps_per_epoch):
        """The factor in ``(0, 1]`` at optimiser step ``step``."""
        return exponential_rampup(step, self.length(steps_per_epoch))


class LossTerm(torch.nn.Module):
    """One weighted loss term of an :class:`SEDObjective`.

    Unsupervised terms define :meth:`row_losses`: the ``[B]`` loss of each
    row and the boolean ``[B]`` rows the term acts on (None: every row),
    which :class:`SEDObjective` normalises. Supervised terms
    (``unsupervised = False``) define ``loss``, their scalar loss.

    Arguments
    ---------
    weight : float
        Weight of the term; 0 skips it (it is logged as 0).
    rampup : callable, optional
        ``rampup(step, steps_per_epoch)`` factor (e.g. :class:`EpochRampUp`);
        None: no ramp.
    """

    #: Outside training only the supervised terms are computed.
    unsupervised = True
    #: The term's targets come from the teacher's view of the clean clips.
    needs_clean_teacher = False
    #: Brain modules the term runs (they get gradients through it).
    module_names = ()
    #: Names of the diagnostics that :meth:`row_losses` returns.
    diagnostics = ()

    def __init__(self, weight=1.0, rampup=None):
        super().__init__()
        self.weight = float(weight)
        self.rampup = rampup

    def effective_weight(self, step, steps_per_epoch):
        """``weight`` times the ramp-up factor at ``step``."""
        if self.rampup is None:
            return self.weight
        return self.weight * self.rampup(step, steps_per_epoch)

    def row_losses(self, predictions, modules):
        """``(row losses [B], rows [B] or None, diagnostics dict)``."""
        raise NotImplementedError


class SupervisedBCE(LossTerm):
    """Binary cross-entropy of the student on the labelled rows.

    ``output: strong`` compares the frame predictions with the strong
    labels on the strong rows, ``output: weak`` the clip predictions with
    the clip labels on the weak rows; mixed rows use their mixed targets.
    The loss is the mean over the labelled rows' elements.

    Arguments
    ---------
    output : str
        ``strong`` or ``weak``.
    weight : float
        Weight of the term.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> term = SupervisedBCE("weak")
    >>> predictions = {
    ...     "student": SimpleNamespace(weak=torch.tensor([[0.9], [0.2]])),
    ...     "weak_targets": torch.ones(2, 1),
    ...     "is_weak": torch.tensor([True, False]),
    ... }
    >>> value, _ = term.loss(predictions, modules={})
    >>> round(value.item(), 4)  # -log(0.9)
    0.1054
    """

    unsupervised = False

    def __init__(self, output, weight=1.0):
        super().__init__(weight=weight)
        if output not in ("strong", "weak"):
            raise ValueError(f"SupervisedBCE output: strong or weak: {output}")
        self.output = output

    def loss(self, predictions, modules):
        """The scalar loss and (no) diagnostics."""
        prediction = getattr(predictions["student"], self.output)
        return (
            losses.masked_bce(
                prediction,
                predictions[f"{self.output}_targets"],
                predictions[f"is_{self.output}"],
            ),
            {},
        )


def _prediction_rows(student, strong_target, weak_target, weak_weight):
    """Row MSE of frame plus ``weak_weight`` x clip predictions."""
    return losses.rowwise_mse(
        student.strong, strong_target
    ) + weak_weight * losses.rowwise_mse(student.weak, weak_target)


class MeanTeacherConsistency(LossTerm):
    """Mean Teacher: MSE between student and EMA teacher predictions.

    The rows: the whole batch when the teacher sees the student's (mixed)
    input; the unmixed rows when it sees the clean clips (the mixed rows
    then belong to :class:`MixedPseudoLabelLoss`).

    Arguments
    ---------
    weight : float
        Maximum weight (``const_max``).
    rampup : callable, optional
        The ramp-up.
    weak_weight : float
        Weight of the clip-level MSE next to the frame-level one.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from speechbrain_sed_condmix.augment.mixup import MixInfo
    >>> out = SimpleNamespace(strong=torch.zeros(2, 1, 3),
    ...                       weak=torch.zeros(2, 1))
    >>> teacher = SimpleNamespace(strong=torch.ones(2, 1, 3),
    ...                           weak=torch.ones(2, 1))
    >>> predictions = {"student": out, "teacher": teacher,
    ...                "mix": MixInfo.identity(2), "teacher_input": "mixed"}
    >>> rows, mask, _ = MeanTeacherConsistency(weak_weight=0.5).row_losses(
    ...     predictions, modules={})
    >>> rows, mask
    (tensor([1.5000, 1.5000]), None)
    """

    def __init__(self, weight=1.0, rampup=None, weak_weight=1.0):
        super().__init__(weight=weight, rampup=rampup)
        self.weak_weight = float(weak_weight)

    def row_losses(self, predictions, modules):
        """Row MSE against the teacher, on the term's rows."""
        teacher = predictions["teacher"]
        rows = _prediction_rows(
            predictions["student"],
            teacher.strong,
            teacher.weak,
            self.weak_weight,
        )
        clean = predictions["teacher_input"] == "clean"
        return rows, (~predictions["mix"].mixed if clean else None), {}


class MixedPseudoLabelLoss(LossTerm):
    """MSE of the mixed rows to the mixed teacher pseudo-labels.

    Targets: ``lam T(x_i) + (1 - lam) T(x_j)`` for a composition,
    ``T(x_i)`` for a perturbation (``MixInfo.mix_pseudo_labels``), from the
    teacher's predictions on the clean clips. Also logs the loss of each
    mode (``<name>_composition``, ``<name>_perturbation``, means over the
    mode's rows), which the weight does not scale.

    Arguments
    ---------
    weight : float
        Maximum weight.
    rampup : callable, optional
        The ramp-up.
    weak_weight : float
        Weight of the clip-level MSE next to the frame-level one.
    """

    needs_clean_teacher = True
    diagnostics = ("composition", "perturbation")

    def __init__(self, weight=1.0, rampup=None, weak_weight=1.0):
        super().__init__(weight=weight, rampup=rampup)
        self.weak_weight = float(weak_weight)

    def row_losses(self, predictions, modules):
        """Row MSE to the pseudo-labels; the mixed rows."""
        info, teacher = predictions["mix"], predictions["teacher"]
        rows = _prediction_rows(
            predictions["student"],
            info.mix_pseudo_labels(teacher.strong),
            info.mix_pseudo_labels(teacher.weak),
            self.weak_weight,
        )
        return rows, info.mixed, _per_mode(rows, info)


#: Names of the frame embeddings a contrastive term can tap -> the
#: ``SEDOutput`` field that holds them.
EMBEDDING_TAPS = {
    "bigru": "embeddings",
    "cnn": "cnn_embeddings",
    "atst": "encoder_embeddings",
}


class EmbeddingContrastiveTerm(LossTerm):
    """The embedding-level contrastive loss on the mixed rows.

    Runs the Brain module ``module`` (an
    :class:`~speechbrain_sed_condmix.losses.EmbeddingContrastiveLoss`,
    trained and DDP-wrapped as a Brain module) on the student's and the
    teacher's ``embedding_tap`` outputs. Logs each mode's loss like
    :class:`MixedPseudoLabelLoss`.

    Arguments
    ---------
    weight : float
        Maximum weight.
    rampup : callable, optional
        The ramp-up.
    embedding_tap : str
        The model output field that holds the frame embeddings
        (``embeddings``, ``cnn_embeddings``, ``encoder_embeddings``), or
        one of the names ``bigru``, ``cnn`` and ``atst`` for them: the
        CRNN's BiGRU output, its CNN output, ATST-Frame's output.
    module : str
        Name of the contrastive module in ``Brain.modules``.
    """

    needs_clean_teacher = True
    diagnostics = ("composition", "perturbation")

    def __init__(
        self,
        weight=1.0,
        rampup=None,
        embedding_tap="embeddings",
        module="contrastive",
    ):
        super().__init__(weight=weight, rampup=rampup)
        tap = EMBEDDING_TAPS.get(embedding_tap, embedding_tap)
        if tap not in EMBEDDING_TAPS.values():
            raise ValueError(
                f"embedding_tap {embedding_tap!r} is not a frame embedding "
                f"output; choose one of {sorted(EMBEDDING_TAPS)} or "
                f"{sorted(EMBEDDING_TAPS.values())}"
            )
        self.embedding_tap = tap
        self.module_names = (module,)

    def row_losses(self, predictions, modules):
        """Row contrastive losses; the mixed rows."""
        info = predictions["mix"]
        # One pass through the heads: the per-mode parts are read from the
        # same row losses (a second pass would also update the heads'
        # BatchNorm statistics again).
        rows = modules[self.module_names[0]](
            getattr(predictions["student"], self.embedding_tap),
            getattr(predictions["teacher"], self.embedding_tap),
            info,
            reduction="none",
        )
        return rows, info.mixed, _per_mode(rows, info)


def _per_mode(rows, info):
    """Diagnostics: the mean row loss of each mixup mode."""
    return {
        mode: losses.masked_mean(rows.detach(), getattr(info, mode))
        for mode in ("composition", "perturbation")
    }


class SEDObjective(torch.nn.Module):
    """The training objective: a weighted sum of named loss terms.

    Arguments
    ---------
    terms : dict
        ``{name: LossTerm}``; the names are the logged keys.
    normalisation : str
        ``batch`` (default) or ``rows``: how an unsupervised term's row
        losses become a scalar (see the module docstring).
    log_grad_norms : bool
        A diagnostic of the balance of the terms: at each training step,
        log ``grad_norm_<term>``, the gradient norm of ``weight x term``
        (without the ramp-up, so the values compare across the ramp) on the
        student's parameters. It costs one extra backward pass per term, so
        it is meant for short runs.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from speechbrain_sed_condmix.augment.mixup import MixInfo
    >>> mix = MixInfo.identity(2)
    >>> mix.mixed = torch.tensor([True, False])
    >>> student = SimpleNamespace(strong=torch.zeros(2, 1, 1),
    ...                           weak=torch.zeros(2, 1))
    >>> teacher = SimpleNamespace(strong=torch.ones(2, 1, 1),
    ...                           weak=torch.ones(2, 1))
    >>> predictions = {"student": student, "teacher": teacher, "mix": mix,
    ...                "teacher_input": "clean"}
    >>> terms = {"consistency": MeanTeacherConsistency(weight=2.0)}
    >>> batch_mean = SEDObjective(terms, normalisation="batch")
    >>> batch_mean(predictions, {}, train=True)[0]  # 2 x (0 + 2) / 2 rows
    tensor(2.)
    >>> SEDObjective(terms, normalisation="rows")(
    ...     predictions, {}, train=True)[0]  # 2 x 2 / 1 unmixed row
    tensor(4.)
    """

    def __init__(self, terms, normalisation="batch", log_grad_norms=False):
        super().__init__()
        self.log_grad_norms = bool(log_grad_norms)
        if normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}: "
                f"{normalisation!r}"
            )
        for name, term in terms.items():
            if not isinstance(term, LossTerm):
                raise TypeError(
                    f"objective term {name!r} is not a LossTerm: {term!r}"
                )
        self.terms = torch.nn.ModuleDict(terms)
        self.normalisation = normalisation
        #: Effective weights of the last call, ``{name: weight x ramp}``.
        self.last_weights = {}

    def check(self, teacher_input, modules):
        """Stop at start-up on a configuration that contradicts itself.

        Arguments
        ---------
        teacher_input : str
            ``mixed`` or ``clean``: what the teacher sees in training.
        modules : dict-like
            The Brain's modules.
        """
        if teacher_input not in TEACHER_INPUTS:
            raise ValueError(
                f"teacher_input must be one of {TEACHER_INPUTS}: "
                f"{teacher_input!r}"
            )
        for name, term in self.terms.items():
            if not term.weight:
                continue
            if term.needs_clean_teacher and teacher_input != "clean":
                raise ValueError(
                    f"objective term {name!r} needs teacher_input: clean "
                    "(its targets come from the teacher's view of the "
                    f"unmixed clips); the YAML sets {teacher_input!r}. Set "
                    f"teacher_input: clean, or its weight to 0."
                )
            missing = [m for m in term.module_names if m not in modules]
            if missing:
                raise ValueError(
                    f"objective term {name!r} runs the module(s) {missing}, "
                    "which are not in the YAML's modules"
                )

    def active_modules(self):
        """Names of the Brain modules that the weighted terms run."""
        return {
            m
            for term in self.terms.values()
            if term.weight
            for m in term.module_names
        }

    def idle_modules(self):
        """Names of the Brain modules that only terms of weight 0 run."""
        used = {m for term in self.terms.values() for m in term.module_names}
        return used - self.active_modules()

    def forward(self, predictions, modules, train, step=0, steps_per_epoch=0):
        """The total loss and the logged terms.

        Arguments
        ---------
        predictions : dict
            ``SEDBrain.compute_forward``'s output.
        modules : dict-like
            The Brain's modules (terms run e.g. the contrastive heads).
        train : bool
            Training: every term; otherwise the supervised terms only.
        step : int
            Optimiser step (for the ramps).
        steps_per_epoch : int
            Optimiser steps per epoch (for the ramps).

        Returns
        -------
        total : torch.Tensor
            The weighted sum.
        logged : dict
            ``{name: scalar tensor}``: each term (unweighted, detached) and
            its diagnostics; a term of weight 0 is logged as 0.
        """
        total, logged, weights, graphs = None, {}, {}, {}
        for name, term in self.terms.items():
            if term.unsupervised and not train:
                continue
            weight = term.effective_weight(step, steps_per_epoch)
            weights[name] = weight
            if not term.unsupervised:
                value, extra = term.loss(predictions, modules)
            elif not term.weight:
                # Not computed (its modules may be idle under DDP).
                value = torch.zeros(())
                extra = dict.fromkeys(term.diagnostics, value)
            else:
                rows, mask, extra = term.row_losses(predictions, modules)
                value = self._reduce(rows, mask)
            if term.weight and value.requires_grad:
                graphs[name] = term.weight * value
            if term.weight:
                total = (
                    weight * value
                    if total is None
                    else total + (weight * value)
                )
            logged[name] = value.detach()
            for key, part in extra.items():
                logged[f"{name}_{key}"] = part.detach()
        if self.log_grad_norms and train and torch.is_grad_enabled():
            logged.update(self._grad_norms(graphs, modules))
        if total is None:
            # Every term weighs 0: still a graph, so backward() works.
            total = predictions["student"].weak.sum() * 0.0
        self.last_weights = weights
        return total, logged

    @staticmethod
    def _grad_norms(graphs, modules):
        """``grad_norm_<term>``: the L2 norm of the gradient of ``weight x
        term`` (no ramp-up) on the student's parameters, the part that every
        term trains; the graph is kept for the step's own backward."""
        params = [p for p in modules["student"].parameters() if p.requires_grad]
        norms = {}
        for name, value in graphs.items():
            grads = torch.autograd.grad(
                value, params, retain_graph=True, allow_unused=True
            )
            squares = [g.float().square().sum() for g in grads if g is not None]
            norm = torch.stack(squares).sum().sqrt() if squares else 0 * value
            norms[f"grad_norm_{name}"] = norm.detach()
        return norms

    def _reduce(self, rows, mask):
        """A term's scalar from its row losses and rows."""
        if self.normalisation == "rows" or mask is None:
            return losses.masked_mean(rows, mask)
        # Indexing rather than rows * mask: a NaN outside the term's rows
        # stays out of it, as with the per-row mean.
        mask = mask.bool().to(rows.device)
        return rows[mask].sum() / len(rows)
