"""Command lines of tiny recipe runs for the resume, determinism and
start-up tests: the recipe's row of tests/recipes/DESED.csv on the tiny
mini-DESED (generated audio, not DESED), one thread, no cSEBB tuning or
event rolls (they do not change what these tests compare)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import recipe_rows

REPO = Path(__file__).resolve().parents[2]
#: One clip of synth_train and unlabeled and two weak clips per batch: the
#: 14 weak_train clips of tiny mini-DESED give 7 batches per epoch.
BATCH_SIZES = "[1,2,1]"
STEPS_PER_EPOCH = 7
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def recipe_command(recipe, data, prep, out, *extra):
    """``python train.py hparams/<recipe> <tiny flags> <extra>``.

    ``extra`` flags replace the row's flags of the same name.
    """
    row = next(
        r for r in recipe_rows() if r["Hparam_file"].endswith("/" + recipe)
    )
    given = {flag.split("=")[0] for flag in extra}
    replaced = given | {"--batch_sizes"}
    flags = [
        flag.replace("tests/tmp/mini_desed_tiny_prep", str(prep)).replace(
            "tests/tmp/mini_desed_tiny", str(data)
        )
        for flag in row["test_debug_flags"].split()
        if flag.split("=")[0] not in replaced
    ]
    return [
        sys.executable,
        row["Script_file"],
        row["Hparam_file"],
        *flags,
        *([] if "--batch_sizes" in given else [f"--batch_sizes={BATCH_SIZES}"]),
        f"--output_folder={out}",
        "--device=cpu",
        "--csebbs_tuning=False",
        "--n_event_rolls=0",
        *extra,
    ]


def run(cmd, check=True):
    """Run a command in the repository; fail with its stderr if asked."""
    cmd = [part for part in cmd if part]
    result = subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def latest_checkpoint(save):
    """The most recent checkpoint folder, by the save time in its CKPT.yaml.

    Not by name: names have one-second resolution and a clash suffix, and
    a name freed by deleting an old checkpoint is reused, so a checkpoint
    saved later in the same second can sort before an older one.
    """
    folders = [p for p in Path(save).glob("CKPT+*") if p.is_dir()]
    return max(
        folders,
        key=lambda p: yaml.safe_load((p / "CKPT.yaml").read_text())["unixtime"],
    )
