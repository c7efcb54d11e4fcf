"""One concept per module: no package module over 700 lines."""

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
