"""Every key of every recipe YAML is read by the recipe or the Brain."""

import dataclasses
import re
from pathlib import Path

import pytest
from speechbrain.utils.run_opts import RunOptions

REPO = Path(__file__).resolve().parents[2]
HPARAMS = sorted((REPO / "recipes").rglob("hparams/*.yaml"))
CODE = [
    REPO / "recipes/DESED/SED/train.py",
    REPO / "recipes/DESED/SSL/train.py",
    *sorted((REPO / "speechbrain_sed_condmix").rglob("*.py")),
]
# Brain reads its run options from the hparams when not given on the CLI.
RUN_OPTIONS = {field.name for field in dataclasses.fields(RunOptions)}


def top_level_keys(text):
    return re.findall(r"^([A-Za-z_][\w]*):", text, flags=re.MULTILINE)


def unused_keys(text, code):
    unused = []
    for key in top_level_keys(text):
        if key.startswith("__") or key in RUN_OPTIONS:
            continue
        if f"<{key}>" in text:
            continue
        patterns = (
            f'hparams["{key}"]',
            f'hparams.get("{key}"',
            f"hparams.{key}",
            f'hparams, "{key}"',
        )
        if not any(p in code for p in patterns):
            unused.append(key)
    return unused


@pytest.mark.parametrize("path", HPARAMS, ids=lambda p: p.name)
def test_every_key_is_used(path):
    code = "\n".join(p.read_text() for p in CODE)
    unused = unused_keys(path.read_text(), code)
    assert not unused, f"{path.name}: keys never read: {unused}"


def test_the_check_can_fail():
    text = "x: 1\ny: !ref <x>\nz: 2\nw: 3\nmax_grad_norm: 5\n"
    code = 'hparams["z"]'
    assert unused_keys(text, code) == ["y", "w"]
