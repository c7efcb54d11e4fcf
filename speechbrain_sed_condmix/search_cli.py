"""``sed-tune``: the command line of the hyperparameter search.

It checks the search space, creates (or loads) the study, prepares the data
once, starts the workers (:class:`~speechbrain_sed_condmix.search.Worker`,
one process each), draws a progress bar over the trials and writes the
study's outputs. See :mod:`speechbrain_sed_condmix.search` for what a trial
is, and the README for one machine and many.

    sed-tune recipes/DESED/SED/hparams/crnn_condmix.yaml \\
        --space recipes/DESED/SED/search/crnn_condmix_hpopt.yaml \\
        --study_folder results/tune --n_trials 40 --workers 2 \\
        --data_folder=/path/to/DESED --device=cuda:0

Authors
 * speechbrain-sed-condmix contributors 2026
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from speechbrain_sed_condmix.search import (
    FINISHED,
    PREEMPTED,
    SearchSpaceError,
    _die_with_parent,
    load_search_space,
    make_storage,
    recipe_keys,
    split_flags,
)

# Outputs


def best_overrides(study, fixed):
    """The best trial's overrides: its parameters, then the fixed ones."""
    return {**study.best_trial.params, **fixed}


def write_outputs(study, folder, fixed, key):
    """``trials.csv``, ``best_overrides.yaml`` and the three plots."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as vis

    folder = Path(folder)
    table = study.trials_dataframe()
    table.to_csv(folder / "trials.csv", index=False)
    written = [folder / "trials.csv"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return written
    best = study.best_trial
    header = (
        f"# sed-tune: trial {best.number} of study {study.study_name}, "
        f"{key} {best.value:.6g} on the validation split.\n"
        "# train.py HPARAMS --overrides_file=THIS_FILE runs its "
        "configuration\n# (the searched keys first, then the fixed ones).\n"
    )
    text = yaml.safe_dump(best_overrides(study, fixed), sort_keys=False)
    (folder / "best_overrides.yaml").write_text(header + text)
    written.append(folder / "best_overrides.yaml")
    import matplotlib.pyplot as plt

    plots = {"history.png": vis.plot_optimization_history}
    if len(complete) > 1:
        plots["importances.png"] = vis.plot_param_importances
    plots["slice.png"] = vis.plot_slice

    for name, plot in plots.items():
        with contextlib.suppress(ValueError, RuntimeError):
            axes = plot(study)
            figure = getattr(axes, "figure", None)
            if figure is None:  # plot_slice: an array of axes
                figure = axes.flat[0].figure
            figure.set_size_inches(max(6, 3.5 * len(best.params)), 4)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=90)
            plt.close(figure)
            written.append(folder / name)
    return written


# ----------------------------------------------------------------------
# Command line


def default_train_script(hparams):
    """``<recipe>/train.py`` for ``<recipe>/hparams/<name>.yaml``."""
    return str(Path(hparams).resolve().parent.parent / "train.py")


def parse_args(argv):
    """Parse ``sed-tune``'s command line; unknown flags are recipe flags.

    Arguments
    ---------
    argv : list of str
        The command line, without the program name.

    Returns
    -------
    tuple
        The parsed namespace and the list of flags left for ``train.py``.
    """
    parser = argparse.ArgumentParser(
        prog="sed-tune",
        description="Search a recipe's YAML keys with Optuna. Flags that "
        "sed-tune does not know (--data_folder=..., --number_of_epochs=...) "
        "go to every trial's train.py.",
    )
    parser.add_argument("hparams", help="the recipe YAML")
    parser.add_argument("--space", required=True, help="search-space YAML")
    parser.add_argument("--study_folder", required=True)
    parser.add_argument("--n_trials", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="here")
    parser.add_argument(
        "--storage",
        help="RDB URL shared by workers on several machines "
        "(default: sqlite:///STUDY_FOLDER/study.db)",
    )
    parser.add_argument("--study_name", help="default: the folder's name")
    parser.add_argument(
        "--pruner", choices=("median", "halving", "none"), default="median"
    )
    parser.add_argument(
        "--prune_after",
        type=int,
        default=1,
        help="validated epochs before a trial may be pruned",
    )
    parser.add_argument("--startup_trials", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--threads", type=int, default=1, help="per worker")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds; a trial silent for twice as long is re-queued",
    )
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--max_failures", type=int, default=3)
    parser.add_argument("--train_script", help="default: <recipe>/train.py")
    parser.add_argument(
        "--no_prepare",
        action="store_true",
        help="skip the recipe's data preparation before the trials",
    )
    args, recipe_flags = parser.parse_known_args(argv)
    bad = [f for f in recipe_flags if not f.startswith("--") or "=" not in f]
    if bad:
        parser.error(f"recipe flags must read --key=value: {bad}")
    if any(f.startswith("--output_folder=") for f in recipe_flags):
        parser.error("each trial has its own output folder: no --output_folder")
    return args, recipe_flags


def gpu_list():
    """The GPUs this process may use (their CUDA_VISIBLE_DEVICES ids)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if "GPU" in line]


def study_config(args, recipe_flags):
    """The study's ``study.json``: what every worker needs."""
    folder = Path(args.study_folder).resolve()
    keys = recipe_keys(args.hparams)
    fixed, _ = split_flags(recipe_flags, keys)
    train = args.train_script or default_train_script(args.hparams)
    return {
        "study_folder": str(folder),
        "study_name": args.study_name or folder.name,
        "storage": args.storage or f"sqlite:///{folder / 'study.db'}",
        "hparams": str(Path(args.hparams).resolve()),
        "space": str(Path(args.space).resolve()),
        "train_script": str(Path(train).resolve()),
        "cwd": os.getcwd(),
        "recipe_flags": recipe_flags,
        "fixed_overrides": fixed,
        "selection_key": selection_key(args.hparams, fixed),
        "n_trials": args.n_trials,
        "pruner": args.pruner,
        "prune_after": args.prune_after,
        "startup_trials": args.startup_trials,
        "seed": args.seed,
        "heartbeat": args.heartbeat,
        "poll": args.poll,
        "max_failures": args.max_failures,
    }


def selection_key(hparams, fixed):
    """The recipe's ``selection_key``, or its override."""
    if "selection_key" in fixed:
        return fixed["selection_key"]
    with open(hparams, encoding="utf-8") as fin:
        for line in fin:
            if line.startswith("selection_key:"):
                return line.split(":", 1)[1].split("#")[0].strip()
    raise SystemExit(f"{hparams}: no selection_key")


def prepare_data(config, threads):
    """Prepare the data once, before parallel trials could race on it: the
    recipe with no epoch (``--number_of_epochs=0 --train_only``)."""
    folder = Path(config["study_folder"]) / "prepare"
    command = [
        sys.executable,
        config["train_script"],
        config["hparams"],
        *[f for f in config["recipe_flags"] if "number_of_epochs=" not in f],
        "--number_of_epochs=0",
        f"--output_folder={folder}",
        "--train_only",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "run.log", "a") as log:
        done = subprocess.run(
            command, cwd=config["cwd"], env=env, stdout=log, stderr=log
        )
    if done.returncode:
        raise SystemExit(
            f"sed-tune: the data preparation failed (exit {done.returncode}):"
            f" see {folder / 'run.log'}"
        )


def run_workers(config, count, threads):
    """Start ``count`` workers, draw a progress bar over the trials and
    return their exit statuses."""
    import optuna
    from tqdm import tqdm

    gpus = gpu_list()
    workers = []
    for index in range(count):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        worker_config = Path(config["study_folder"]) / f"worker{index}.json"
        worker_config.write_text(json.dumps({**config, "worker": index}))
        log = open(Path(config["study_folder"]) / f"worker{index}.log", "a")
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "speechbrain_sed_condmix.search",
                    str(worker_config),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        )

    def forward(signum, frame):
        """Pass a stop signal on to the workers still running."""
        for process in workers:
            if process.poll() is None:
                process.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, forward)
    storage = make_storage(config["storage"], config["heartbeat"])
    study = optuna.load_study(study_name=config["study_name"], storage=storage)
    with tqdm(total=config["n_trials"], desc="trials", unit="trial") as bar:
        while True:
            alive = any(p.poll() is None for p in workers)
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state.name in FINISHED for t in trials)
            if min(done, bar.total) > bar.n:
                bar.update(min(done, bar.total) - bar.n)
            if not alive:
                break
            time.sleep(min(config["poll"], 2.0))
    return [p.returncode for p in workers]


def main(argv=None):
    """``sed-tune``: run or continue a study; write its outputs."""
    import optuna

    argv = sys.argv[1:] if argv is None else list(argv)
    args, recipe_flags = parse_args(argv)
    try:
        space = load_search_space(args.space, args.hparams)
    except (SearchSpaceError, OSError) as error:
        raise SystemExit(f"sed-tune: {error}") from None
    config = study_config(args, recipe_flags)
    both = sorted(set(space) & set(config["fixed_overrides"]))
    if both:
        raise SystemExit(
            f"sed-tune: {args.space}: keys {both} are searched and also "
            "given as recipe flags: drop one of the two"
        )
    folder = Path(config["study_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(config["storage"], config["heartbeat"])
    study = optuna.create_study(
        study_name=config["study_name"],
        storage=storage,
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("search")
    search = {k: config[k] for k in ("hparams", "space", "recipe_flags")}
    if recorded is None:
        study.set_user_attr("search", search)
    elif recorded != search:
        raise SystemExit(
            f"sed-tune: {folder} holds a study of another search "
            f"({recorded}); use another --study_folder"
        )
    (folder / "study.json").write_text(json.dumps(config, indent=2) + "\n")
    start = time.perf_counter()
    if not args.no_prepare:
        prepare_data(config, args.threads)
    codes = run_workers(config, args.workers, args.threads)
    minutes = (time.perf_counter() - start) / 60
    study = optuna.load_study(study_name=config["study_name"], storage=storage)
    written = write_outputs(
        study, folder, config["fixed_overrides"], config["selection_key"]
    )
    states = {}
    for trial in study.trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    print(f"sed-tune: {states} in {minutes:.1f} min; wrote", end=" ")
    print(", ".join(str(p) for p in written))
    if PREEMPTED in codes:
        return PREEMPTED
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
