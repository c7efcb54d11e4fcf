"""The recipe gives SEDBrain exactly the keys it reads; a YAML that lacks
one, or names an unknown subset, stops before any data is read."""

import importlib.util
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "recipes" / "DESED" / "SED" / "train.py"
RECIPE = REPO / "recipes" / "DESED" / "SED" / "hparams" / "crnn_mt.yaml"


def load_train_module():
    spec = importlib.util.spec_from_file_location("sed_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hparams():
    return load_hyperpyyaml(
        RECIPE.read_text(),
        {"data_folder": "unused", "cnn_filters": [4] * 7, "rnn_hidden": 8},
    )


def test_brain_hparams_are_the_brains_keys_and_the_yamls_run_options(
    hparams,
):
    train = load_train_module()
    given = train.brain_hparams(hparams, RECIPE)
    # The YAML's run options go to Brain as it reads them from hparams.
    for key in ("max_grad_norm", "nonfinite_patience", "ckpt_interval_minutes"):
        assert given[key] == hparams[key]
    # Keys of the YAML that SEDBrain does not read are not given to it.
    for key in ("data_folder", "batch_sizes", "student", "lr", "seed"):
        assert key not in given
    assert given["objective"] is hparams["objective"]


def test_a_missing_key_stops_with_the_file_and_the_key(hparams):
    train = load_train_module()
    partial = {k: v for k, v in hparams.items() if k != "mix_subsets"}
    with pytest.raises(SystemExit, match="crnn_mt.yaml: no key 'mix_subsets'"):
        train.brain_hparams(partial, RECIPE)


def test_an_unknown_mix_subset_stops_when_the_brain_is_built():
    from test_brain import make_brain

    with pytest.raises(
        ValueError, match=r"mix_subsets: unknown subsets \['strnog'\]"
    ):
        make_brain(mix_subsets=["strnog", "weak"])
