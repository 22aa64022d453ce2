"""mypy --strict runs on fnn/ with the suite (config in pyproject's [tool.mypy]), so CI fails on
a type error in the package.

A cold run (fresh clone, no cache) takes about 30 s; later runs reuse .mypy_cache/ (gitignored)
and take a few seconds.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_is_clean():
    if importlib.util.find_spec("mypy") is None:
        pytest.fail('mypy is not installed: run python -m pip install -e ".[dev]"')
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],  # files, strictness and Python version: pyproject.toml
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
