"""Shared fixtures: one tiny mini-DESED generation and preparation per run."""

import os

import pytest

# Keep the test suite predictable on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def mini_desed_tiny(tmp_path_factory):
    """A tiny mini-DESED (generated audio, not DESED), made once per run."""
    from speechbrain_sed_condmix.dataio.synth import generate_mini_desed

    return generate_mini_desed(
        tmp_path_factory.mktemp("mini_desed") / "data", scale="tiny", seed=0
    )


@pytest.fixture(scope="session")
def prepared_tiny(mini_desed_tiny, tmp_path_factory):
    """``prepare_desed`` outputs for the tiny mini-DESED."""
    from speechbrain_sed_condmix.dataio.desed import prepare_desed

    save = tmp_path_factory.mktemp("prepared")
    return save, prepare_desed(mini_desed_tiny, save, progress=False)
