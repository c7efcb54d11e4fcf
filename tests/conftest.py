"""Shared fixtures: experiment folders (untrained, or crnn_mt trained by the
recipe). The tiny mini-DESED generation and preparation, made once per run,
are in the repository's root conftest.py, so that doctests use them too."""

import os
from pathlib import Path

import pytest

# Keep the test suite predictable on small CI machines: one thread per
# process. On a busy 2-core machine two OpenMP threads made a tiny CRNN
# training step about 100x slower (19 s against 0.2 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


#: Fixtures that train with the recipe: every test that uses one is slow.
RECIPE_FIXTURES = {"tiny_crnn_experiment", "custom_run"}


def pytest_collection_modifyitems(items):
    """Mark the tests that need a recipe run ``slow``."""
    for item in items:
        if RECIPE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


REPO = Path(__file__).resolve().parents[1]
HPARAMS_DIR = REPO / "recipes" / "DESED" / "SED" / "hparams"


def _make_experiment(folder, recipe, overrides):
    """Lay out an experiment folder like a training run's, untrained.

    ``hyperparams.yaml`` is the recipe resolved with ``overrides`` (as
    ``train.py`` saves it) and ``save/CKPT+untrained/`` holds the student
    and an EMA teacher whose weights are perturbed so that they differ
    from the student's. Returns ``(folder, loaded hparams)``.
    """
    import torch
    from hyperpyyaml import load_hyperpyyaml, resolve_references

    folder = Path(folder)
    folder.mkdir(parents=True)
    overrides = {
        "data_folder": str(folder / "data"),
        "output_folder": str(folder),
        "prep_folder": str(folder / "prep"),
        **overrides,
    }
    text = (HPARAMS_DIR / recipe).read_text()
    resolved = resolve_references(text, overrides).getvalue()
    (folder / "hyperparams.yaml").write_text(resolved)
    hparams = load_hyperpyyaml(resolved)
    teacher = hparams["teacher"]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in teacher.model.parameters():
            param.add_(0.01 * torch.randn(param.shape, generator=generator))
    ckpt = folder / "save" / "CKPT+untrained"
    ckpt.mkdir(parents=True)
    torch.save(hparams["student"].state_dict(), ckpt / "student.ckpt")
    torch.save(teacher.state_dict(), ckpt / "teacher.ckpt")
    (ckpt / "CKPT.yaml").write_text("end-of-epoch: true\nunixtime: 0\n")
    return folder, hparams


@pytest.fixture(scope="session")
def make_experiment():
    """Factory: ``make_experiment(folder, "crnn_mt.yaml", overrides)``."""
    return _make_experiment


def recipe_rows():
    """The rows of all tests/recipes/*.csv (SpeechBrain recipe-test format)."""
    import csv

    rows = []
    for path in sorted((REPO / "tests" / "recipes").glob("*.csv")):
        with open(path) as fin:
            rows.extend(csv.DictReader(fin))
    return rows


def run_recipe(row, data, work, flags=None):
    """Run one recipe row on ``data``; outputs in ``work/out``, prep ``work/p``.

    ``flags`` replaces the row's own ``test_debug_flags``; the row's
    placeholder folders are pointed at ``data`` and ``work``.
    """
    import shlex
    import subprocess
    import sys

    flags = row["test_debug_flags"] if flags is None else flags
    flags = flags.replace("tests/tmp/mini_desed_tiny_prep", str(work / "p"))
    flags = flags.replace("tests/tmp/mini_desed_tiny", str(data))
    out = work / "out"
    cmd = [
        sys.executable,
        row["Script_file"],
        row["Hparam_file"],
        *shlex.split(flags),
        f"--output_folder={out}",
        "--device=cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, work / "p"


@pytest.fixture(scope="session")
def tiny_crnn_experiment(mini_desed_tiny, shared_tmp, once):
    """crnn_mt trained for one epoch on tiny mini-DESED by the recipe.

    Uses the tiny flags of the crnn_mt row of tests/recipes/DESED.csv,
    with the TensorBoard dashboard (tests/integration/test_dashboard.py
    reads it back). Returns ``(output folder, prep folder)``.
    """
    row = next(
        r for r in recipe_rows() if r["Hparam_file"].endswith("/crnn_mt.yaml")
    )
    work = shared_tmp / "crnn_mt_tiny"
    flags = row["test_debug_flags"] + " --dashboard=tensorboard"
    with once(work) as make:
        if make:
            work.mkdir()
            run_recipe(row, mini_desed_tiny, work, flags=flags)
    return work / "out", work / "p"
