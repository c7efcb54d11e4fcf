"""Pretrained weights that do not fit the recipe stop the run at start-up,
before the data preparation, with a message that names the file."""

import pytest
import torch
from tiny_runs import recipe_command, run

from speechbrain_sed_condmix.lobes.atst import ATSTFrame

# Recipe subprocesses (up to the start-up checks): slow.
pytestmark = pytest.mark.slow


def check_fails_before_prep(cmd, out, prep, *expected):
    result = run(cmd, check=False)
    assert result.returncode != 0
    # SpeechBrain's exception hook logs the error to <output>/log.txt.
    report = result.stderr + (out / "log.txt").read_text()
    for text in expected:
        assert text in report, report[-3000:]
    # load_pretrained runs before prepare_desed: nothing was prepared.
    assert not prep.exists()


def test_stage1_checkpoint_of_another_model(
    mini_desed_tiny, make_experiment, tmp_path
):
    # A CRNN experiment passed where ATST-SED stage 2 wants its stage 1.
    crnn, _ = make_experiment(tmp_path / "crnn", "crnn_mt.yaml", {})
    prep = tmp_path / "p"
    cmd = recipe_command(
        "atst_sed_stage2.yaml",
        mini_desed_tiny,
        prep,
        tmp_path / "out",
        f"--stage1_ckpt={crnn}",
    )
    check_fails_before_prep(
        cmd,
        tmp_path / "out",
        prep,
        "--stage1_ckpt:",
        "student.ckpt does not fit this recipe",
    )


def test_atst_checkpoint_of_another_size(mini_desed_tiny, tmp_path):
    # The tiny recipe row builds a 64-wide ATST-Frame; this one is 32 wide.
    other = ATSTFrame(embed_dim=32, depth=2, num_heads=4)
    path = tmp_path / "atst_as2M.ckpt"
    torch.save({"state_dict": other.state_dict()}, path)
    prep = tmp_path / "p"
    cmd = recipe_command(
        "atst_sed_stage1.yaml",
        mini_desed_tiny,
        prep,
        tmp_path / "out",
        f"--atst_ckpt={path}",
        "--atst_random_init=False",
    )
    check_fails_before_prep(
        cmd, tmp_path / "out", prep, f"Shape mismatch between {path}"
    )
