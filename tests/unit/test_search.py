"""sed-tune's search-space checks and its readers of a run's outputs."""

from pathlib import Path

import optuna
import pytest

from speechbrain_sed_condmix import search, search_cli

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/DESED/SED"


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "mixup_tau: 0.5\nrampup_epochs: 5\nmode: beta\n"
        "model: !new:torch.nn.Identity\n"
    )
    return path


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "key", "problem"),
    [
        (
            "mixup_tau: {kind: float, range: [0.5, 1.0]}\n"
            "mixup_tua: {kind: float, range: [0.5, 1.0]}\n",
            2,
            "mixup_tua",
            "not a key of",
        ),
        (
            "mixup_tau: {kind: float, range: [1.0, 0.5]}\n",
            1,
            "mixup_tau",
            "empty range",
        ),
        (
            "mixup_tau: {kind: float, range: [0.5, 0.5]}\n",
            1,
            "mixup_tau",
            "empty range",
        ),
        (
            "rampup_epochs: {kind: int, range: [9, 3]}\n",
            1,
            "rampup_epochs",
            "empty range",
        ),
        ("mode: {kind: categorical, choices: []}\n", 1, "mode", "non-empty"),
        (
            "mixup_tau: {kind: real, range: [0.5, 1.0]}\n",
            1,
            "mixup_tau",
            "wrong kind 'real'",
        ),
        ("mixup_tau: {range: [0.5, 1.0]}\n", 1, "mixup_tau", "wrong kind None"),
        (
            "mixup_tau: {kind: logfloat, range: [0.0, 1.0]}\n",
            1,
            "mixup_tau",
            "above 0",
        ),
        (
            "mixup_tau: {kind: float, range: [a, b]}\n",
            1,
            "mixup_tau",
            "numbers",
        ),
        (
            "mixup_tau: {kind: float, low: 0.5}\n",
            1,
            "mixup_tau",
            "unknown fields",
        ),
    ],
)
def test_bad_space_names_file_line_key_and_problem(
    tmp_path, recipe, text, line, key, problem
):
    space = write(tmp_path, text)
    with pytest.raises(search.SearchSpaceError) as error:
        search.load_search_space(space, recipe)
    message = str(error.value)
    assert message.startswith(f"{space}:{line}: key '{key}': ")
    assert problem in message


def test_bad_space_stops_sed_tune_before_any_study(tmp_path, recipe):
    space = write(tmp_path, "mixup_tua: {kind: float, range: [0.5, 1.0]}\n")
    folder = tmp_path / "study"
    argv = [str(recipe), "--space", str(space), "--study_folder", str(folder)]
    with pytest.raises(SystemExit) as stop:
        search_cli.main(argv)
    assert f"{space}:1: key 'mixup_tua': not a key of {recipe}" in str(
        stop.value
    )
    assert not folder.exists()


def test_space_values_and_suggestions(tmp_path, recipe):
    space = search.load_search_space(
        write(
            tmp_path,
            "mixup_tau: {kind: float, range: [0.5, 1.0]}\n"
            "rampup_epochs: {kind: int, range: [2, 4]}\n"
            "mode: {kind: categorical, choices: [beta, uniform]}\n",
        ),
        recipe,
    )
    assert space["rampup_epochs"] == search.Param("int", 2.0, 4.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    seen = []
    for _ in range(30):
        trial = study.ask()
        seen.append({k: p.suggest(trial, k) for k, p in space.items()})
    assert all(0.5 <= s["mixup_tau"] <= 1.0 for s in seen)
    assert {s["rampup_epochs"] for s in seen} == {2, 3, 4}
    assert {s["mode"] for s in seen} == {"beta", "uniform"}
    assert all(type(s["mode"]) is str for s in seen)


@pytest.mark.parametrize("name", ["crnn_condmix", "atst_sedv2", "crnn_mt"])
def test_committed_spaces_load(name):
    space = search.load_search_space(
        RECIPE / "search" / f"{name}_hpopt.yaml",
        RECIPE / "hparams" / f"{name}.yaml",
    )
    assert space


def test_read_validations_keeps_the_last_run_of_an_epoch(tmp_path):
    log = tmp_path / "train_log.txt"
    line = (
        "epoch: {}, lr: 1.00e-03 - train loss: 1.00 - valid loss: 2.00, "
        "valid teacher_obj: 9.00e-01, valid student_obj: {}\n"
    )
    log.write_text(
        line.format(1, "2.50e-01")
        + "epoch: 2, lr: 1.00e-03 - train loss: 1.00\n"  # not validated
        + line.format(3, "3.00e-01")
        + line.format(3, "3.50e-01")  # epoch 3 again, after a resume
    )
    assert search.read_validations(log, "student_obj") == [(1, 0.25), (3, 0.35)]
    assert search.read_validations(tmp_path / "none.txt", "x") == []


def test_selected_value_is_the_best_checkpoint(tmp_path):
    for name, value in (("a", 0.2), ("b", 0.4)):
        (tmp_path / f"CKPT+{name}").mkdir()
        (tmp_path / f"CKPT+{name}" / "CKPT.yaml").write_text(
            f"student_obj: {value}\nend-of-epoch: true\n"
        )
    assert search.selected_value(tmp_path, "student_obj") == 0.4
    assert search.selected_value(tmp_path, "teacher_obj") is None


def test_recipe_flags_split_into_overrides_and_run_options():
    keys = search.recipe_keys(RECIPE / "hparams/crnn_condmix.yaml")
    fixed, options = search.split_flags(
        ["--number_of_epochs=4", "--batch_sizes=[1,2,1]", "--device=cpu"], keys
    )
    assert fixed == {"number_of_epochs": 4, "batch_sizes": [1, 2, 1]}
    assert options == ["--device=cpu"]
    assert search_cli.selection_key(
        RECIPE / "hparams/crnn_condmix.yaml", {}
    ) == ("student_obj")
