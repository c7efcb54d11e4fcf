"""The recipes' trust_checkpoint key: off, a checkpoint holding more than
weights stops the run at start-up; on, it is unpickled and the log says so.
"""

import datetime

import pytest
import torch
from tiny_runs import recipe_command, run

from speechbrain_sed_condmix.lobes.atst import ATSTFrame


def start_up_report(cmd, out, prep):
    """The run's stderr and log after it stopped before the preparation."""
    result = run(cmd, check=False)
    assert result.returncode != 0
    assert not prep.exists()
    return result.stderr + (out / "log.txt").read_text()


@pytest.mark.slow  # recipe runs
def test_recipe_refuses_untrusted_checkpoint_and_honours_opt_in(
    mini_desed_tiny, tmp_path
):
    # A 32-wide encoder where the tiny recipe row builds a 64-wide one: the
    # trusted run also stops at start-up (on the shapes), which keeps the
    # test short.
    other = ATSTFrame(embed_dim=32, depth=2, num_heads=4)
    path = tmp_path / "atst_as2M.ckpt"
    hparams = {"created": datetime.date(2023, 5, 1)}
    torch.save(
        {"state_dict": other.state_dict(), "hyper_parameters": hparams}, path
    )

    def command(name, *extra):
        return recipe_command(
            "atst_sed_stage1.yaml",
            mini_desed_tiny,
            tmp_path / f"p_{name}",
            tmp_path / name,
            f"--atst_ckpt={path}",
            "--atst_random_init=False",
            *extra,
        )

    report = start_up_report(
        command("safe"), tmp_path / "safe", tmp_path / "p_safe"
    )
    assert "UnsafeCheckpointError" in report
    assert f"{path}: refused to load the checkpoint" in report
    assert "datetime.date" in report
    assert "--trust_checkpoint=True" in report

    report = start_up_report(
        command("trusted", "--trust_checkpoint=True"),
        tmp_path / "trusted",
        tmp_path / "p_trusted",
    )
    assert f"Loading {path} with trust_checkpoint=True" in report
    assert f"Shape mismatch between {path}" in report
