"""Recipe smoke tests: each row of tests/recipes/DESED.csv runs end to end.

The rows follow SpeechBrain's recipe-test format; here they run on the tiny
mini-DESED (generated audio, not DESED) of the session fixture, with the
row's own flags, for one short epoch.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import recipe_rows, run_recipe

REPO = Path(__file__).resolve().parents[2]
ROWS = recipe_rows()
#: Rows that run on mini-DESED (the custom-data row has its own tests, in
#: test_custom_data.py, on data in the generic format; the pretraining row,
#: which reads unlabeled audio only, in test_pretrain_recipe.py).
DESED_ROWS = [
    r
    for r in ROWS
    if r["Dataset"] == "DESED" and r["Task"] == "SoundEventDetection"
]


def test_every_hparams_file_has_a_row():
    listed = {row["Hparam_file"] for row in ROWS}
    on_disk = {
        str(p.relative_to(REPO))
        for p in (REPO / "recipes").rglob("hparams/*.yaml")
    }
    assert listed == on_disk
    for row in ROWS:
        for key in ("Script_file", "Hparam_file", "Data_prep_file"):
            # A recipe without data preparation (pretraining) has none.
            if key != "Data_prep_file" or row[key]:
                assert (REPO / row[key]).is_file(), row[key]


#: Outputs of the rows already run, by hparams file (stage 2 reuses stage 1).
_RUNS = {}
STAGE1 = "recipes/DESED/SED/hparams/atst_sed_stage1.yaml"


def run_row(row, data, root):
    """Run one row once; return its output folder and prep folder."""
    if row["Hparam_file"] in _RUNS:
        return _RUNS[row["Hparam_file"]]
    flags = row["test_debug_flags"]
    if "tests/tmp/atst_stage1_out" in flags:
        stage1 = next(r for r in ROWS if r["Hparam_file"] == STAGE1)
        stage1_out, _ = run_row(stage1, data, root)
        flags = flags.replace("tests/tmp/atst_stage1_out", str(stage1_out))
    work = root / Path(row["Hparam_file"]).stem
    _RUNS[row["Hparam_file"]] = run_recipe(row, data, work, flags)
    return _RUNS[row["Hparam_file"]]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("recipes")


@pytest.mark.slow
@pytest.mark.parametrize(
    "row", DESED_ROWS, ids=[r["Hparam_file"] for r in DESED_ROWS]
)
def test_recipe_runs(row, mini_desed_tiny, runs_root, request):
    if row["Hparam_file"].endswith("/crnn_mt.yaml"):
        # The same row, run once for the whole suite (with the TensorBoard
        # dashboard on: the recipe's other outputs are the same).
        _RUNS[row["Hparam_file"]] = request.getfixturevalue(
            "tiny_crnn_experiment"
        )
    out, prep = run_row(row, mini_desed_tiny, runs_root)
    files = re.search(r"file_exists=\[(.*?)\]", row["test_debug_checks"])
    for name in files.group(1).split(","):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for model in ("student", "teacher"):
        for key in ("psds1", "psds2", "intersection_f1", "collar_f1"):
            assert 0.0 <= metrics[model][key] <= 1.0
        assert set(metrics[model]["per_class"]) >= {"Dog", "Speech"}
    assert math.isfinite(metrics["loss"])
    # one score file per scored validation clip, for both models
    gt = (prep / "validation_gt.tsv").read_text().splitlines()[1:]
    clips = {line.split("\t")[0][:-4] for line in gt}
    for model in ("student", "teacher"):
        scored = {
            p.stem for p in (out / "test_scores" / model / "raw").glob("*.tsv")
        }
        assert scored == clips
    # every loss term is logged and finite
    log = (out / "train_log.txt").read_text()
    terms = dict(re.findall(r"train (\w+): ([0-9.e+-]+|nan|inf)", log))
    assert terms and all(math.isfinite(float(v)) for v in terms.values())
    expected = {"loss", "strong", "weak", "consistency"}
    hparams = (out / "hyperparams.yaml").read_text()
    if "contrastive:" in hparams:
        expected |= {"pseudo_label", "contrastive"}
    assert expected <= set(terms), sorted(terms)
    for name in expected - {"consistency"}:
        assert float(terms[name]) > 0, name


@pytest.mark.slow
def test_atst_recipe_without_checkpoint_stops_at_start(tmp_path):
    """A real ATST config with no --atst_ckpt says where to get the file."""
    cmd = [
        sys.executable,
        "recipes/DESED/SED/train.py",
        STAGE1,
        f"--data_folder={tmp_path / 'absent'}",
        f"--output_folder={tmp_path / 'out'}",
        "--atst_dim=64",
        "--atst_depth=2",
        "--atst_heads=4",
        "--device=cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr  # SpeechBrain logs the error
    assert "--atst_ckpt=" in output
    assert "atst_as2M.ckpt" in output
    assert "github.com/Audio-WestlakeU" in output
    # it stopped before the data preparation (the data folder is absent)
    assert "SEDDataError" not in output
