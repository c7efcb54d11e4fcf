"""Fixtures shared by the tests and the package's doctests: one tiny
mini-DESED generation and preparation per run, whichever pytest-xdist
worker needs it first."""

import contextlib
import os
import shutil

import pytest


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory):
    """A folder for what every pytest-xdist worker of this run may share.

    Each worker has its own base temporary folder under the run's one; the
    run's is common to them (without xdist it is the session's own). Make
    a shared result with :func:`made_once`.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / "shared"
    folder.mkdir(exist_ok=True)
    return folder


@contextlib.contextmanager
def made_once(folder):
    """Make ``folder`` once per run, whichever worker needs it first.

    Yields True to the caller that must make it (holding a file lock, so
    the other workers wait) and False once it is complete; a run that
    failed half way leaves no completion mark, so the next caller remakes
    it.
    """
    from filelock import FileLock

    done = folder.with_name(folder.name + ".done")
    with FileLock(str(folder) + ".lock"):
        if done.exists():
            yield False
            return
        if folder.exists():
            shutil.rmtree(folder)
        yield True
        done.touch()


@pytest.fixture(scope="session")
def mini_desed_tiny(shared_tmp):
    """A tiny mini-DESED (generated audio, not DESED), made once per run."""
    from speechbrain_sed_condmix.dataio.synth import generate_mini_desed

    folder = shared_tmp / "mini_desed"
    with made_once(folder) as make:
        if make:
            generate_mini_desed(folder / "data", scale="tiny", seed=0)
    return folder / "data"


@pytest.fixture(scope="session")
def prepared_tiny(mini_desed_tiny, shared_tmp):
    """``prepare_desed`` outputs for the tiny mini-DESED."""
    from speechbrain_sed_condmix.dataio.desed import prepare_desed

    save = shared_tmp / "prepared"
    with made_once(save) as make:
        if make:
            prepare_desed(mini_desed_tiny, save, progress=False)
    # Complete: its marker makes this call return the outputs at once.
    return save, prepare_desed(mini_desed_tiny, save, progress=False)


@pytest.fixture(scope="session")
def once():
    """:func:`made_once`, for the fixtures of tests/conftest.py."""
    return made_once


#: Doctests that each generate a tiny mini-DESED of their own (they test
#: the generator itself, so they cannot share the run's one): about 10 s
#: each, so they run with the slow tests, not in the inner loop.
SLOW_DOCTESTS = {
    "speechbrain_sed_condmix.dataio.synth.mini_desed.generate_mini_desed",
    "speechbrain_sed_condmix.cli.mini_desed_main",
}


def pytest_collection_modifyitems(items):
    """Mark the generator's own doctests ``slow``."""
    for item in items:
        if item.name in SLOW_DOCTESTS:
            item.add_marker(pytest.mark.slow)
