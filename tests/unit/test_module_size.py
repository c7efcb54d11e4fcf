"""One concept per module: no package module over 700 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "speechbrain_sed_condmix"
MAX_LINES = 700


def test_no_module_over_700_lines():
    too_long = {
        path.relative_to(PACKAGE).as_posix(): n_lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n_lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_sed_brain_class_under_400_lines():
    # The Brain keeps the training hooks only; the parts it delegates to
    # (objective, mixup routing, optimisation, evaluation) live in their
    # own modules.
    source = (PACKAGE / "brain.py").read_text()
    (node,) = [
        n
        for n in ast.parse(source).body
        if isinstance(n, ast.ClassDef) and n.name == "SEDBrain"
    ]
    n_lines = node.end_lineno - node.lineno + 1
    assert n_lines < 400, f"SEDBrain has {n_lines} lines"
