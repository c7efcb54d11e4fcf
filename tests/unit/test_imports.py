"""The package's dependency rules: import-linter contracts in pyproject.toml.

``lint-imports`` must keep every contract on the package as it is, and each
contract must break when a module makes the import it forbids (checked on a
copy of the package with one import added).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter.api import read_configuration

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "speechbrain_sed_condmix"


def _contract_names():
    """``{contract id: name}`` from pyproject.toml."""
    config = read_configuration(str(REPO / "pyproject.toml"))
    return {c["id"]: c["name"] for c in config["contracts_options"]}


def _lint_imports(root):
    """Run ``lint-imports`` on the package under ``root``; return its run.

    ``PYTHONPATH`` puts ``root`` first so that the copy in a temporary
    folder, not the installed package, is analysed.
    """
    executable = Path(sys.executable).with_name("lint-imports")
    if not executable.exists():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.fail(
                "lint-imports is not installed (pip install "
                "import-linter, see tools/install.sh)"
            )
        executable = Path(found)
    return subprocess.run(
        [str(executable), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _status(output, name):
    """``"KEPT"`` or ``"BROKEN"`` for the contract ``name`` in the report."""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith(name + " "):
            return line.rsplit(" ", 1)[-1]
    raise AssertionError(f"contract {name!r} not in the report:\n{output}")


def test_package_keeps_every_contract():
    names = _contract_names()
    run = _lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in names.values():
        assert _status(run.stdout, name) == "KEPT"
    assert f"Contracts: {len(names)} kept, 0 broken." in run.stdout


#: One forbidden import per contract: (contract id, file, import to add).
VIOLATIONS = [
    ("lobes", "lobes/heads.py", f"import {PACKAGE}.brain"),
    ("lobes", "lobes/features.py", f"from {PACKAGE}.dataio import prep"),
    ("lobes", "lobes/crnn.py", f"import {PACKAGE}.metrics"),
    ("dataio", "dataio/encoder.py", f"import {PACKAGE}.lobes.crnn"),
    ("dataio", "dataio/prep.py", f"import {PACKAGE}.inference"),
    ("scores", "metrics.py", f"import {PACKAGE}.lobes.features"),
    ("scores", "postprocessing.py", f"import {PACKAGE}.brain"),
    ("training-parts", "augment/mixup.py", f"import {PACKAGE}.brain"),
    ("training-parts", "losses.py", f"import {PACKAGE}.brain"),
    ("inference", "inference.py", f"import {PACKAGE}.brain"),
    ("pretraining", "pretraining/views.py", f"import {PACKAGE}.dataio.prep"),
    ("evaluation-chain", "metrics.py", f"import {PACKAGE}.postprocessing"),
    ("evaluation-chain", "scores.py", f"import {PACKAGE}.tuning"),
    ("acyclic", "teacher.py", f"import {PACKAGE}.optim"),
    ("acyclic", "dataio/desed.py", f"import {PACKAGE}.dataio.pipelines"),
]


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A pristine copy of the package and pyproject.toml; returns its root."""
    root = tmp_path_factory.mktemp("import_rules")
    shutil.copytree(
        REPO / PACKAGE,
        root / PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    "contract, module, statement",
    VIOLATIONS,
    ids=[f"{c}:{m}" for c, m, _ in VIOLATIONS],
)
def test_forbidden_import_breaks_its_contract(
    package_copy, contract, module, statement
):
    target = package_copy / PACKAGE / module
    original = target.read_text()
    try:
        target.write_text(original + f"\n{statement}  # noqa\n")
        run = _lint_imports(package_copy)
    finally:
        target.write_text(original)
    assert run.returncode != 0, run.stdout + run.stderr
    assert _status(run.stdout, _contract_names()[contract]) == "BROKEN"


def test_every_contract_has_a_violation_check():
    assert {c for c, _, _ in VIOLATIONS} == set(_contract_names())
