"""SpeechBrain's own recipe consistency checks pass on this repository.

The checks are SpeechBrain's files, kept outside the repository (a copy of
``shared/upstream/speechbrain_checks`` beside the checkout, as CI lays it
out): check_yaml_vs_script on every row of every ``tests/recipes/*.csv``,
check_docstrings over the package and ``recipes/``, and the four recipe
checks of ``tests/consistency/test_recipe.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KIT = Path("shared") / "upstream" / "speechbrain_checks" / "run_checks.py"


def find_kit():
    """``$SPEECHBRAIN_CHECKS`` or the first ``shared/`` beside an ancestor."""
    if os.environ.get("SPEECHBRAIN_CHECKS"):
        return Path(os.environ["SPEECHBRAIN_CHECKS"]) / "run_checks.py"
    for folder in REPO.parents:
        if (folder / KIT).is_file():
            return folder / KIT
    return None


@pytest.mark.slow
def test_speechbrain_recipe_checks_pass():
    runner = find_kit()
    if runner is None:
        if os.environ.get("CI"):
            pytest.fail(f"SpeechBrain's checks not found: ../{KIT}")
        pytest.skip(f"SpeechBrain's checks not found beside the repo: {KIT}")
    result = subprocess.run(
        [sys.executable, str(runner), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = result.stdout + result.stderr
    errors = [line for line in report.splitlines() if "ERROR" in line]
    assert result.returncode == 0, "\n".join(errors) or report[-3000:]
    # Every check ran: the yaml check saw every recipe row.
    rows = sum(
        len(path.read_text().strip().splitlines()) - 1
        for path in (REPO / "tests" / "recipes").glob("*.csv")
    )
    assert f"PASS  check_yaml_vs_script ({rows} rows)" in report
    assert "speechbrain checks: 6/6 passed" in report
