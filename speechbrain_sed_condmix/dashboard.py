"""The training log, with an optional TensorBoard or W&B dashboard.

:class:`SEDTrainLogger` is the recipes' ``train_logger``: it always writes
``train_log.txt`` (SpeechBrain's ``FileTrainLogger``) and, where the YAML's
``dashboard`` asks for one, sends the same statistics to SpeechBrain's
``TensorboardLogger`` or ``WandBLogger`` (offline by default: ``wandb sync``
uploads the run later). Every value in ``train_log.txt`` is a scalar of the
dashboard, at the step of its epoch: the loss terms and their effective
weights, each parameter group's learning rate, the EMA decay and the
validation and test metrics of the student and the teacher. Test-time
figures (the PSD-ROC curves) go to the dashboard as images.

Under DDP only the main process writes (``log_stats`` is a collective call
that every rank makes, as with SpeechBrain's loggers).

``tensorboard`` and ``wandb`` are optional extras::

    pip install speechbrain-sed-condmix[tensorboard]   # or [wandb]

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import importlib
from pathlib import Path

from speechbrain.utils.distributed import if_main_process, main_process_only
from speechbrain.utils.train_logger import FileTrainLogger, TrainLogger

#: The ``dashboard`` choices of the recipe YAMLs.
DASHBOARDS = ("file", "tensorboard", "wandb")

#: Default ``wandb.init`` options: offline, nothing sent during the run.
WANDB_DEFAULTS = {"project": "speechbrain-sed-condmix", "mode": "offline"}


def require_extra(module, extra):
    """Import an optional dependency or stop with how to install it.

    Arguments
    ---------
    module : str
        The module to import.
    extra : str
        The package extra that installs it.

    Returns
    -------
    module
        The imported module.

    Example
    -------
    >>> require_extra("json", "none").__name__
    'json'
    >>> require_extra("no_such_module_x", "tensorboard")
    Traceback (most recent call last):
    ...
    ImportError: dashboard: tensorboard needs the package 'no_such_module_x'...
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"dashboard: {extra} needs the package {module!r}, which is not "
            f"installed. Install it with `pip install "
            f"speechbrain-sed-condmix[{extra}]` (or `pip install {extra}`), "
            "or set dashboard: file in the recipe YAML."
        ) from error


def epoch_meta(epoch, optimizer, teacher, step):
    """An epoch's ``stats_meta``: its LRs and the teacher's EMA decay.

    Arguments
    ---------
    epoch : int
        The epoch.
    optimizer : torch.optim.Optimizer
        Its parameter groups (with their ``name``, e.g. from
        ``sed_param_groups``) give ``lr_<name>``; ``lr`` is the first
        group's, as the text log has always shown it.
    teacher : EMATeacher
        Its ``alpha(step)`` is the ``ema_decay`` of the last update.
    step : int
        The optimiser step.

    Returns
    -------
    dict
        ``{"epoch", "lr", "lr_<group>"..., "ema_decay"}``.

    Example
    -------
    >>> import torch
    >>> from speechbrain_sed_condmix.teacher import EMATeacher
    >>> student = torch.nn.Linear(2, 2)
    >>> optimizer = torch.optim.SGD(
    ...     [{"name": "cnn", "params": [student.weight], "lr": 0.1},
    ...      {"name": "rnn", "params": [student.bias], "lr": 0.2}])
    >>> epoch_meta(3, optimizer, EMATeacher(student, decay=0.999), step=3)
    {'epoch': 3, 'lr': 0.1, 'lr_cnn': 0.1, 'lr_rnn': 0.2, 'ema_decay': 0.75}
    """
    groups = optimizer.param_groups
    meta = {"epoch": epoch, "lr": groups[0]["lr"]}
    for i, group in enumerate(groups):
        meta[f"lr_{group.get('name', i)}"] = group["lr"]
    meta["ema_decay"] = float(teacher.alpha(step))
    return meta


def term_weights(objective, step, steps_per_epoch):
    """``weight_<term>``: each term's weight x ramp-up at ``step``.

    Computed from the step, not kept from the last batch, so that a run
    resumed at an epoch's end logs what the uninterrupted run logs.

    Arguments
    ---------
    objective : SEDObjective
        Its ``terms``.
    step : int
        The optimiser step whose weights to give.
    steps_per_epoch : int
        For the epoch-based ramps.

    Returns
    -------
    dict
        ``{"weight_<term>": float}``.

    Example
    -------
    >>> from speechbrain_sed_condmix.objectives import (
    ...     EpochRampUp, MeanTeacherConsistency, SEDObjective)
    >>> objective = SEDObjective({"consistency": MeanTeacherConsistency(
    ...     weight=2.0, rampup=EpochRampUp(10))})
    >>> term_weights(objective, 0, 100), term_weights(objective, 5000, 100)
    ({'weight_consistency': ...}, {'weight_consistency': 2.0})
    """
    return {
        f"weight_{name}": float(term.effective_weight(step, steps_per_epoch))
        for name, term in objective.terms.items()
    }


def log_epoch(brain, epoch, valid_stats=None):
    """Log an epoch: ``epoch_meta``, the training and validation stats.

    A collective call under DDP: every rank makes it, the main one writes.

    Arguments
    ---------
    brain : SEDBrain
        Its ``hparams.train_logger``, ``optimizer``, ``modules.teacher``,
        ``optimizer_step`` and ``train_stats`` (the epoch's training
        statistics, if any).
    epoch : int
        The epoch.
    valid_stats : dict, optional
        The validation statistics (None: the epoch was not validated).
    """
    train_stats = getattr(brain, "train_stats", None)
    if train_stats is None and valid_stats is None:
        return  # nothing to log (no training stage ran in this process)
    meta = epoch_meta(
        epoch, brain.optimizer, brain.modules.teacher, brain.optimizer_step
    )
    brain.hparams.train_logger.log_stats(
        stats_meta=meta, train_stats=train_stats, valid_stats=valid_stats
    )


def log_figures(train_logger, folder, epoch_counter):
    """Send the test's PSD-ROC figures to the dashboard, if there is one.

    Arguments
    ---------
    train_logger : TrainLogger
        The recipe's logger (one without ``log_images``: nothing to do).
    folder : str or Path
        The experiment folder, with ``psd_roc_<model>_<scenario>.png``.
    epoch_counter : EpochCounter
        Its ``current`` epoch is the figures' step.
    """
    if hasattr(train_logger, "log_images"):
        paths = sorted(Path(folder).glob("psd_roc_*.png"))
        figures = {"psd_roc/" + p.stem[len("psd_roc_") :]: p for p in paths}
        train_logger.log_images(figures, epoch_counter.current)


class SEDTrainLogger(TrainLogger):
    """``train_log.txt`` and, optionally, a TensorBoard or W&B dashboard.

    Arguments
    ---------
    save_file : str
        The text log (``train_log.txt``).
    dashboard : str
        ``file`` (the text log only), ``tensorboard`` or ``wandb``.
    save_dir : str
        The dashboard's folder (TensorBoard event files, W&B's offline run).
    wandb_options : dict, optional
        ``wandb.init`` keyword arguments over :data:`WANDB_DEFAULTS`
        (e.g. ``mode: online``, ``entity``, ``name``).
    precision : int
        Decimal places of the text log.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> log = SEDTrainLogger(tmp / "train_log.txt")
    >>> log.log_stats({"epoch": 1, "lr_cnn": 0.001},
    ...               train_stats={"loss": 0.5}, verbose=False)
    >>> print((tmp / "train_log.txt").read_text().strip())
    epoch: 1, lr_cnn: 1.00e-03 - train loss: 5.00e-01
    >>> SEDTrainLogger(tmp / "log.txt", dashboard="tensorbord")
    Traceback (most recent call last):
    ...
    ValueError: dashboard must be one of ('file', 'tensorboard', 'wandb'): ...
    """

    def __init__(
        self,
        save_file,
        dashboard="file",
        save_dir=None,
        wandb_options=None,
        precision=2,
    ):
        if dashboard not in DASHBOARDS:
            raise ValueError(
                f"dashboard must be one of {DASHBOARDS}: {dashboard!r}"
            )
        self.file_logger = FileTrainLogger(save_file, precision=precision)
        self.dashboard = dashboard
        self.save_dir = save_dir
        self.board = None
        if dashboard != "file" and save_dir is None:
            raise ValueError(f"dashboard: {dashboard} needs a save_dir")
        if dashboard == "tensorboard":
            require_extra("tensorboard", "tensorboard")
            from speechbrain.utils.train_logger import TensorboardLogger

            # Its SummaryWriter exists on the main process only.
            self.board = TensorboardLogger(str(save_dir))
        elif dashboard == "wandb":
            wandb = require_extra("wandb", "wandb")
            from speechbrain.utils.train_logger import WandBLogger

            options = {**WANDB_DEFAULTS, **(wandb_options or {})}
            if if_main_process():
                Path(save_dir).mkdir(parents=True, exist_ok=True)
            # Its run exists on the main process only.
            self.board = WandBLogger(wandb.init, dir=str(save_dir), **options)

    @main_process_only
    def log_stats(
        self,
        stats_meta,
        train_stats=None,
        valid_stats=None,
        test_stats=None,
        verbose=True,
    ):
        """Write one line of ``train_log.txt`` and the dashboard scalars.

        The dashboard's step is ``stats_meta``'s ``epoch`` (or ``Epoch
        loaded`` at test time). TensorBoard tags are ``<key>`` for the
        ``stats_meta`` keys and ``<key>/<stage>`` for the others, as with
        SpeechBrain's ``TensorboardLogger``; W&B gets SpeechBrain's nested
        ``{stage: {key: value}}`` record. Arguments as
        ``TrainLogger.log_stats``.
        """
        self.file_logger.log_stats(
            stats_meta, train_stats, valid_stats, test_stats, verbose
        )
        if self.board is None:
            return
        step = stats_meta.get("epoch", stats_meta.get("Epoch loaded"))
        if self.dashboard == "wandb":
            self.board.log_stats(
                stats_meta, train_stats, valid_stats, test_stats
            )
            return
        writer = self.board.writer
        for key, value in stats_meta.items():
            writer.add_scalar(key, float(value), step)
        stages = (("train", train_stats), ("valid", valid_stats))
        for stage, stats in (*stages, ("test", test_stats)):
            for key, value in (stats or {}).items():
                writer.add_scalar(f"{key}/{stage}", float(value), step)
        writer.flush()

    def log_images(self, images, step=None):
        """Send PNG files to the dashboard (main process; else nothing).

        Arguments
        ---------
        images : dict
            ``{tag: path to a PNG}``.
        step : int, optional
            The step shown with them.
        """
        if self.board is None or not if_main_process() or not images:
            return
        from matplotlib.image import imread

        if self.dashboard == "wandb":
            wandb = require_extra("wandb", "wandb")
            # No step: W&B takes only increasing steps, and the tested
            # epoch is not the last one logged.
            self.board.run.log(
                {tag: wandb.Image(str(path)) for tag, path in images.items()}
            )
            return
        for tag, path in images.items():
            pixels = imread(str(path))[..., :3]  # RGB(A) floats in [0, 1]
            self.board.writer.add_image(tag, pixels, step, dataformats="HWC")
        self.board.writer.flush()
