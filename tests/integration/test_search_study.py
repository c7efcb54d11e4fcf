"""sed-tune studies: parallel workers, pruning, resume, best overrides.

Most trials run ``tests/data/fake_train.py`` (a run without a model that
logs and checkpoints as the recipe does), so that the storage, pruning and
resume logic runs in seconds; one study runs the real recipe on tiny
mini-DESED (generated audio, not DESED).
"""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from tiny_runs import ENV, REPO, recipe_command

pytestmark = pytest.mark.slow

FAKE = REPO / "tests/data/fake_train.py"


def fake_study(tmp_path, *extra, epochs=3, sleep=0.2):
    """The sed-tune command of a study of fake runs."""
    hparams = tmp_path / "fake.yaml"
    hparams.write_text(
        "x: 0.5\nchoice: a\nepochs: 3\nsleep: 0.2\nslow_below: 0.0\n"
        "output_folder: null\nselection_key: score\n"
    )
    space = tmp_path / "space.yaml"
    space.write_text(
        "x: {kind: float, range: [0.0, 1.0]}\n"
        "choice: {kind: categorical, choices: [a, b]}\n"
    )
    return [
        sys.executable,
        "-m",
        "speechbrain_sed_condmix.search_cli",
        str(hparams),
        "--space",
        str(space),
        "--study_folder",
        str(tmp_path / "study"),
        "--train_script",
        str(FAKE),
        "--no_prepare",
        "--poll",
        "0.05",
        "--heartbeat",
        "1",
        *extra,
        f"--epochs={epochs}",
        f"--sleep={sleep}",
    ]


def run(cmd, **kwargs):
    return subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, **kwargs
    )


def load(tmp_path):
    folder = tmp_path / "study"
    return optuna.load_study(
        study_name="study", storage=f"sqlite:///{folder / 'study.db'}"
    )


def starts(tmp_path, folder):
    path = tmp_path / "study" / folder / "starts.txt"
    return path.read_text().split("\n")[:-1]


def test_two_workers_share_the_storage_and_run_each_trial_once(tmp_path):
    cmd = fake_study(tmp_path, "--n_trials", "6", "--workers", "2")
    cmd += ["--pruner", "none"]
    done = run(cmd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    folders = sorted((tmp_path / "study/trials").iterdir())
    assert [f.name for f in folders] == [str(n) for n in range(6)]
    lines = [starts(tmp_path, f"trials/{n}") for n in range(6)]
    assert all(len(line) == 1 and line[0].endswith(" start") for line in lines)
    # Both workers (the fake run's parent process) ran trials.
    assert len({line[0].split()[0] for line in lines}) == 2
    for trial in study.trials:  # the objective: the best checkpoint's value
        assert trial.value == pytest.approx(3 * trial.params["x"])
        assert trial.user_attrs["folder"] == f"trials/{trial.number}"
    # Outputs: the table with Optuna's state column, plots, best overrides.
    import pandas as pd

    table = pd.read_csv(tmp_path / "study/trials.csv")
    assert list(table["state"]) == ["COMPLETE"] * 6
    for name in ("history.png", "importances.png", "slice.png"):
        assert (tmp_path / "study" / name).stat().st_size > 1000
    best = yaml.safe_load((tmp_path / "study/best_overrides.yaml").read_text())
    top = max(study.trials, key=lambda t: t.value)
    assert best == {**top.params, "epochs": 3, "sleep": 0.2}
    # The same command again: the study is complete, nothing runs.
    again = run(cmd, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(load(tmp_path).trials) == 6


def test_a_pruned_trial_stops_early_and_is_pruned(tmp_path):
    cmd = fake_study(
        tmp_path, "--n_trials", "3", "--startup_trials", "2", epochs=6
    )
    cmd.append("--slow_below=0.5")  # 2 s an epoch: time to stop it
    folder = tmp_path / "study"
    folder.mkdir()
    study = optuna.create_study(
        study_name="study",
        storage=f"sqlite:///{folder / 'study.db'}",
        direction="maximize",
    )
    for x in (0.9, 0.8, 0.1):  # the third is far below the median
        study.enqueue_trial({"x": x, "choice": "a"})
    done = run(cmd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    log = (folder / "trials/2/train_log.txt").read_text().splitlines()
    assert 1 <= len(log) < 6  # stopped early, by SIGTERM (exit 75)
    assert (folder / "trials/2/PRUNED").read_text().startswith("pruned after")
    assert trials[2].intermediate_values[1] == pytest.approx(0.1)
    assert not (folder / "trials/0/PRUNED").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_study_resumes(tmp_path, sig):
    """SIGTERM (pre-emption): the trial's run exits 75 and its trial is
    re-queued; SIGKILL (a crash): the trial is left RUNNING, goes stale and
    is re-queued. Either way the rerun resumes the run in its folder."""
    cmd = fake_study(tmp_path, "--n_trials", "3", "--pruner", "none")
    cmd += ["--seed", "3"]
    cmd[cmd.index("--sleep=0.2")] = "--sleep=0.4"
    first = subprocess.Popen(
        cmd, cwd=REPO, env=ENV, start_new_session=True, stderr=subprocess.PIPE
    )
    log = tmp_path / "study/trials/1/train_log.txt"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 1):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    os.killpg(first.pid, sig)
    first.wait(timeout=60)
    assert first.returncode == (75 if sig == signal.SIGTERM else -9)
    time.sleep(0.5)  # let a killed group's processes go
    params = load(tmp_path).trials[1].params
    done = run(cmd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = load(tmp_path).trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL", states
    retry = next(t for t in trials[2:] if t.params == params)
    assert retry.state.name == "COMPLETE"
    assert retry.user_attrs["folder"] == "trials/1"
    lines = starts(tmp_path, "trials/1")
    assert len(lines) == 2 and lines[1].split()[1] == "resume", lines
    assert int(lines[1].split()[2]) >= 1  # it went on from its checkpoint
    assert retry.value == pytest.approx(3 * params["x"])


def test_real_recipe_trials_and_best_overrides_reproduce(
    tmp_path, mini_desed_tiny
):
    """Two tiny recipe trials (one epoch); train.py with the best-overrides
    file resolves the best trial's configuration (hyperparams.yaml)."""
    prep = tmp_path / "prep"
    base = recipe_command(
        "crnn_condmix.yaml", mini_desed_tiny, prep, tmp_path / "unused"
    )
    searched = ("--output_folder=", "--mixup_tau=", "--pseudo_label_weight=")
    flags = [f for f in base[3:] if not f.startswith(searched)]
    space = tmp_path / "space.yaml"
    space.write_text(
        "mixup_tau: {kind: float, range: [0.5, 1.0]}\n"
        "pseudo_label_weight: {kind: logfloat, range: [0.25, 16.0]}\n"
    )
    folder = tmp_path / "study"
    cmd = [
        sys.executable,
        "-m",
        "speechbrain_sed_condmix.search_cli",
        base[2],
        "--space",
        str(space),
        "--study_folder",
        str(folder),
        "--n_trials",
        "2",
        "--poll",
        "0.5",
        *flags,
    ]
    done = run(cmd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    best = study.best_trial
    trial = folder / best.user_attrs["folder"]
    assert not (trial / "metrics.json").exists()  # no test stage
    saved = yaml.safe_load(
        next((trial / "save").glob("CKPT+*/CKPT.yaml")).read_text()
    )
    assert best.value == saved["student_obj"]
    again = tmp_path / "again"
    reproduce = [
        sys.executable,
        base[1],
        base[2],
        f"--overrides_file={folder / 'best_overrides.yaml'}",
        f"--output_folder={again}",
        "--device=cpu",
        "--train_only",
    ]
    done = run(reproduce, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = (again / "hyperparams.yaml").read_text()
    theirs = (trial / "hyperparams.yaml").read_text()
    assert f"mixup_tau: {best.params['mixup_tau']}" in ours
    # The same text, but for the output folder (and where long lines wrap).
    ours, theirs = (
        ours.replace(str(again), "OUT"),
        theirs.replace(str(trial), "OUT"),
    )
    assert ours.split() == theirs.split()
