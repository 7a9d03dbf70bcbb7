"""The linter runs with the tests: `ruff check` (pyflakes, pycodestyle, import order) on the package, the
tests, the tools, the benchmarks and the notebooks (ruff reads .ipynb itself). Its settings are
pyproject.toml's [tool.ruff]; `ruff check --fix` repairs the import order and unused imports."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("rlnotes", "tests", "tools", "benchmarks", "notebooks")


def _ruff() -> list[str]:
    beside_python = Path(sys.executable).parent / "ruff"  # the venv's, installed with the `test` extra
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]' (it is in the test extra)")
    return [found]


def test_ruff_finds_nothing():
    result = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *TARGETS],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"
