"""Hyperparameter search over the keys of a recipe YAML, with Optuna.

The search space, the trial runner (:class:`Worker`, one process per
worker) and the readers of a run's outputs; the command line, the progress
bar and the outputs are in :mod:`speechbrain_sed_condmix.search_cli`.

``sed-tune HPARAMS --space SPACE --study_folder DIR --n_trials N`` runs a
study whose trials are recipe runs: ``train.py HPARAMS <recipe flags>
<the trial's overrides> --train_only`` in ``DIR/trials/<number>``, one
subprocess per trial. The objective is the recipe's ``selection_key`` on
its validation split: the value of the checkpoint that the run keeps
(``save/CKPT+*/CKPT.yaml``). ``--train_only`` skips the test stage, so a
trial never scores the reporting split.

* **Search space**: a YAML file ``{key: {kind, range | choices}}`` whose
  keys are top-level keys of HPARAMS; kinds ``float``, ``logfloat``,
  ``int`` and ``categorical`` (:func:`load_search_space`). A bad file stops
  at start-up naming the file, the line, the key and the problem.
* **Pruning** (``--pruner median|halving|none``): the worker reads the
  validations that the run logs (``train_log.txt``) while it trains, and
  reports the best selection value so far at each validated epoch. A pruned
  run is stopped with SIGTERM, which the Brain turns into a checkpoint and
  exit status 75; its folder gets a ``PRUNED`` file and the trial the state
  PRUNED.
* **Parallel workers** share one storage: by default the SQLite file
  ``DIR/study.db``; ``--storage URL`` names any RDB (PostgreSQL, MySQL) for
  workers on several machines. ``--workers K`` starts K workers here; with
  GPUs, worker i sees GPU ``i mod (number of GPUs)`` only
  (``CUDA_VISIBLE_DEVICES``). A lock file in ``DIR`` keeps the number of
  trials at ``--n_trials``.
* **Resumable**: the same command continues the study. A trial stopped by
  SIGTERM (pre-emption) or left RUNNING by a crash (no heartbeat for
  ``2 x --heartbeat`` seconds) is recorded FAIL and re-queued with the same
  parameters and the same folder, so its run resumes from its checkpoint.
* **Outputs** (``DIR``): ``best_overrides.yaml`` (``train.py HPARAMS
  --overrides_file=DIR/best_overrides.yaml`` runs the best trial's
  configuration), ``trials.csv`` (Optuna's table, with its ``state``
  column), and ``history.png``, ``importances.png``, ``slice.png``
  (``optuna.visualization.matplotlib``).

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import ctypes
import fcntl
import json
import logging
import math
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

#: Exit status of a pre-empted run (the Brain's, ``preemption.py``).
PREEMPTED = 75
KINDS = ("float", "logfloat", "int", "categorical")
#: The trial states that count towards ``--n_trials``.
FINISHED = ("COMPLETE", "PRUNED")


class SearchSpaceError(ValueError):
    """A search-space file that cannot be used: names file, line and key."""


@dataclass(frozen=True)
class Param:
    """One searched key: its kind and its range or choices."""

    kind: str
    low: float = None
    high: float = None
    choices: tuple = ()

    def suggest(self, trial, key):
        """Draw this key's value for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(key, int(self.low), int(self.high))
        return trial.suggest_float(
            key, self.low, self.high, log=self.kind == "logfloat"
        )


def recipe_keys(hparams_file):
    """The top-level keys of a recipe YAML (its tags are not resolved).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
    ...     _ = f.write("a: 1\\nm: !new:torch.nn.Identity\\n")
    ...     f.flush()
    ...     sorted(recipe_keys(f.name))
    ['a', 'm']
    """
    from ruamel.yaml import YAML

    with open(hparams_file, encoding="utf-8") as fin:
        return set(YAML(typ="rt").load(fin) or {})


def load_search_space(path, hparams_file):
    """Read and check a search-space file against the recipe's keys.

    Arguments
    ---------
    path : str or Path
        The YAML: ``{key: {kind: float|logfloat|int|categorical,
        range: [low, high]}}`` or ``{key: {kind: categorical, choices:
        [...]}}``.
    hparams_file : str or Path
        The recipe YAML whose top-level keys may be searched.

    Returns
    -------
    dict
        ``{key: Param}``, in the file's order.

    Raises
    ------
    SearchSpaceError
        ``"<file>:<line>: key '<key>': <problem>"``.

    Example
    -------
    >>> import tempfile
    >>> recipe = tempfile.NamedTemporaryFile("w", suffix=".yaml")
    >>> _ = recipe.write("tau: 0.5\\nlr: 0.1\\n"); recipe.flush()
    >>> space = tempfile.NamedTemporaryFile("w", suffix=".yaml")
    >>> _ = space.write("tau: {kind: float, range: [0.5, 1.0]}\\n")
    >>> _ = space.write("lr: {kind: logfloat, range: [0.5, 0.1]}\\n")
    >>> space.flush()
    >>> try:
    ...     load_search_space(space.name, recipe.name)
    ... except SearchSpaceError as error:
    ...     print(str(error).split(":", 2)[1:])
    ['2', " key 'lr': empty range [0.5, 0.1] (low must be below high)"]
    """
    from ruamel.yaml import YAML

    try:
        text = Path(path).read_text(encoding="utf-8")
        data = YAML(typ="rt").load(text)  # with line numbers
        plain = yaml.safe_load(text)  # plain Python values
    except Exception as error:  # a YAML syntax error, a missing file
        raise SearchSpaceError(f"{path}: cannot read: {error}") from None
    if not isinstance(data, dict) or not data:
        raise SearchSpaceError(f"{path}: not a mapping of keys to search")
    known = recipe_keys(hparams_file)
    space = {}
    for key in data:
        line, spec = data.lc.key(key)[0] + 1, plain[key]

        def fail(problem, key=key, line=line):
            """Stop, naming the file, the line and the key."""
            raise SearchSpaceError(f"{path}:{line}: key '{key}': {problem}")

        if key not in known:
            fail(f"not a key of {hparams_file}")
        if not isinstance(spec, dict):
            fail("expected {kind: ..., range: [low, high]} or choices")
        extra = set(spec) - {"kind", "range", "choices"}
        if extra:
            fail(f"unknown fields {sorted(extra)}")
        kind = spec.get("kind")
        if kind not in KINDS:
            fail(f"wrong kind {kind!r}: one of {', '.join(KINDS)}")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                fail("categorical needs a non-empty list of choices")
            space[key] = Param(kind, choices=tuple(choices))
            continue
        bounds = spec.get("range")
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, (int, float)) for b in bounds)
            or isinstance(bounds[0], bool)
        ):
            fail(f"{kind} needs range: [low, high], numbers")
        low, high = bounds
        if kind == "int":
            if low != int(low) or high != int(high):
                fail(f"int range {list(bounds)} has non-integer bounds")
            if low > high:
                fail(f"empty range {list(bounds)} (low above high)")
        elif not low < high:
            fail(f"empty range {list(bounds)} (low must be below high)")
        if kind == "logfloat" and low <= 0:
            fail(f"logfloat range {list(bounds)} must be above 0")
        space[key] = Param(kind, float(low), float(high))
    return space


def flag(key, value):
    """``--key=value`` for a recipe command line (YAML flow style).

    Example
    -------
    >>> flag("mixup_tau", 0.75), flag("batch_sizes", [2, 2, 4])
    ('--mixup_tau=0.75', '--batch_sizes=[2, 2, 4]')
    """
    if not isinstance(value, str):
        value = yaml.safe_dump(value, default_flow_style=True, width=1 << 20)
        value = value.strip().removesuffix("...").strip()
    return f"--{key}={value}"


def split_flags(flags, keys):
    """Split recipe flags into ``({key: value} overrides, run options)``.

    Flags whose key is a recipe key are overrides (parsed as YAML); the
    others (``--device``, ``--precision``, ...) are SpeechBrain run options.

    Example
    -------
    >>> split_flags(["--lr=0.1", "--device=cpu", "--cnn=[8, 16]"],
    ...             {"lr", "cnn"})
    ({'lr': 0.1, 'cnn': [8, 16]}, ['--device=cpu'])
    """
    overrides, options = {}, []
    for item in flags:
        key, _, value = item[2:].partition("=")
        if item.startswith("--") and key in keys:
            overrides[key] = yaml.safe_load(value) if value else None
        else:
            options.append(item)
    return overrides, options


_VALID_ITEM = " - valid "


def read_validations(train_log, key):
    """``[(epoch, value)]`` of ``valid <key>`` in a SpeechBrain train log.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w") as f:
    ...     _ = f.write("epoch: 1, lr: 1.00e-03 - train loss: 1.00 - valid "
    ...                 "loss: 2.00, valid student_obj: 2.50e-01\\n")
    ...     f.flush()
    ...     read_validations(f.name, "student_obj")
    [(1, 0.25)]
    """
    found = {}
    try:
        lines = Path(train_log).read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        if not line.startswith("epoch: ") or _VALID_ITEM not in line:
            continue
        epoch = int(line[len("epoch: ") :].split(",")[0])
        valid = line.split(_VALID_ITEM, 1)[1]
        for item in ("valid " + valid).split(", "):
            name, _, value = item.rpartition(": ")
            if name == f"valid {key}":
                found[epoch] = float(value)  # a re-run epoch: the last
    return sorted(found.items())


def selected_value(save_folder, key):
    """The selection value of the best checkpoint in ``save_folder``."""
    values = []
    for meta in Path(save_folder).glob("CKPT+*/CKPT.yaml"):
        stats = yaml.safe_load(meta.read_text()) or {}
        if key in stats:
            values.append(float(stats[key]))
    return max(values) if values else None


# ----------------------------------------------------------------------
# The study


def make_storage(url, heartbeat):
    """An RDB storage with heartbeats; stale trials are re-queued."""
    import optuna

    engine = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():  # heartbeats are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=int(heartbeat),
            grace_period=2 * int(heartbeat),
            heartbeat_stale_trial_callback=requeue,
        )


def requeue(study, trial):
    """Enqueue a failed (pre-empted, stale) trial's parameters again; the
    new trial keeps the failed one's folder and resumes its run."""
    import optuna

    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(study, trial)


def trial_folder(study_folder, trial):
    """``trials/<n>`` with n the first trial of its retry chain."""
    import optuna

    frozen = next(
        t
        for t in trial.study.get_trials(deepcopy=False)
        if t.number == trial.number
    )
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = retry.retry_history(frozen)
    return Path(study_folder) / "trials" / str([*history, trial.number][0])


try:  # looked up once here: the forked child only calls it
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent():
    """Child processes get SIGTERM when their parent dies (Linux
    ``PR_SET_PDEATHSIG``): a killed worker leaves no run behind."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))


class TrialPreempted(Exception):
    """A trial's run exited 75 without being pruned: re-queue it."""


class TrialFailed(Exception):
    """A trial's run failed (see the ``run.log`` in its folder)."""


class StudyLock:
    """An exclusive ``flock`` on ``<study folder>/ask.lock``."""

    def __init__(self, folder):
        self.path = Path(folder) / "ask.lock"
        self.handle = None

    def acquire(self):
        """Wait for the lock and take it."""
        self.handle = open(self.path, "a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def release(self):
        """Let go of the lock, if held."""
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class Worker:
    """Runs trials of one study until it has ``n_trials`` finished ones.

    Arguments
    ---------
    config : dict
        ``study.json`` of the study folder (see :func:`main`).
    """

    def __init__(self, config):
        self.config = config
        self.folder = Path(config["study_folder"])
        self.space = load_search_space(config["space"], config["hparams"])
        self.child = None
        self.stopping = False
        self.lock = StudyLock(self.folder)
        self.last_failed = False

    def on_signal(self, signum, frame):
        """Pre-emption: pass the signal to the running trial, then stop."""
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def study(self):
        """The study in the shared storage, created on first use."""
        import optuna

        c = self.config
        sampler = optuna.samplers.TPESampler(
            seed=c["seed"] + c["worker"],
            constant_liar=True,
            n_startup_trials=c["startup_trials"],
        )
        if c["pruner"] == "median":
            pruner = optuna.pruners.MedianPruner(
                n_startup_trials=c["startup_trials"],
                n_warmup_steps=c["prune_after"],
            )
        elif c["pruner"] == "halving":
            pruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=max(c["prune_after"], 1)
            )
        else:
            pruner = optuna.pruners.NopPruner()
        return optuna.load_study(
            study_name=c["study_name"],
            storage=make_storage(c["storage"], c["heartbeat"]),
            sampler=sampler,
            pruner=pruner,
        )

    def run(self):
        """The worker loop; returns the exit status (75: pre-empted)."""
        import optuna
        from optuna.trial import TrialState

        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self.on_signal)
        study = self.study()
        failures = 0
        while not self.stopping:
            self.lock.acquire()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter(
                        "ignore", optuna.exceptions.ExperimentalWarning
                    )
                    optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                done = sum(t.state.name in FINISHED for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
            except BaseException:
                self.lock.release()
                raise
            if done + running >= self.config["n_trials"]:
                self.lock.release()
                if not running:
                    return 0
                time.sleep(self.config["heartbeat"])  # stale, or finishing
                continue
            try:
                study.optimize(self.objective, n_trials=1, catch=TrialFailed)
            except TrialPreempted as stop:
                number = stop.args[0]
                trial = next(t for t in study.trials if t.number == number)
                requeue(study, trial)
                return PREEMPTED
            finally:
                self.lock.release()
            failures = failures + 1 if self.last_failed else 0
            if failures >= self.config["max_failures"]:
                logger.error("%d failed trials in a row: stopping", failures)
                return 1
        return PREEMPTED

    def command(self, params, folder):
        """The recipe command of a trial."""
        c = self.config
        return [
            sys.executable,
            c["train_script"],
            c["hparams"],
            *c["recipe_flags"],
            *[flag(key, value) for key, value in params.items()],
            f"--output_folder={folder}",
            "--train_only",
        ]

    def objective(self, trial):
        """One recipe run; the best selection value on validation."""
        import optuna

        self.lock.release()  # the trial exists: the next one may be asked
        self.last_failed = False
        params = {k: p.suggest(trial, k) for k, p in self.space.items()}
        folder = trial_folder(self.folder, trial)
        folder.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("folder", str(folder.relative_to(self.folder)))
        key, best, reported = self.config["selection_key"], -math.inf, set()
        with open(folder / "run.log", "a") as log:
            self.child = subprocess.Popen(
                [str(part) for part in self.command(params, folder)],
                cwd=self.config["cwd"],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
            if self.stopping:  # a signal came while it started
                self.child.send_signal(signal.SIGTERM)
            pruned = False
            while True:
                finished = self.child.poll() is not None
                log_file = folder / "train_log.txt"
                for epoch, value in read_validations(log_file, key):
                    if epoch in reported or pruned:
                        continue
                    best = max(best, value)
                    reported.add(epoch)
                    trial.report(best, epoch)
                    if not finished and trial.should_prune():
                        pruned = epoch
                        self.child.send_signal(signal.SIGTERM)
                if finished:
                    break
                time.sleep(self.config["poll"])
        code, self.child = self.child.returncode, None
        if pruned:
            (folder / "PRUNED").write_text(
                f"pruned after epoch {pruned}: best {key} {best:.4g}\n"
            )
            raise optuna.TrialPruned(f"epoch {pruned}, {key} {best:.4g}")
        if code == PREEMPTED or (code and self.stopping):
            raise TrialPreempted(trial.number)
        value = selected_value(folder / "save", key) if code == 0 else None
        if value is None:
            self.last_failed = True
            if code:
                raise TrialFailed(f"exit status {code}: see {folder}/run.log")
            raise TrialFailed(f"no checkpoint with {key} in {folder}/save")
        return value


def worker_main(config_file):
    """One worker process (started by :func:`run_workers`)."""
    logging.basicConfig(level=logging.INFO)
    config = json.loads(Path(config_file).read_text())
    return Worker(config).run()


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
