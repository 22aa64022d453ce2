"""mypy --strict runs on fnn/ with the suite (config in pyproject's [tool.mypy]), so CI fails on
a type error in the package.

The verdict depends on the pinned mypy (dev extra) and on torch's own type stubs, which change
with every torch release. fnn type-checks cleanly against the stubs of every torch from the
floor to the newest release measured (TYPECHECKED_TORCH). A torch newer than that may bring
stubs that change mypy's verdict without any change in fnn, so there the check is skipped,
saying so, rather than turning a fresh machine red. To extend the range: install the new
torch, run `python -m mypy`, fix what it reports, raise TYPECHECKED_TORCH (README, "Upgrading
the pins").

A cold run (fresh clone, no cache) takes about 30 s; later runs reuse .mypy_cache/ (gitignored)
and take a few seconds.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TYPECHECKED_TORCH = (2, 14)  # the newest torch release whose stubs fnn was checked against


def torch_release() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


@pytest.mark.skipif(
    torch_release() > TYPECHECKED_TORCH,
    reason=f"torch {torch.__version__} is newer than the newest torch whose type stubs fnn "
    f"was checked against ({'.'.join(map(str, TYPECHECKED_TORCH))}): its stubs may change "
    "mypy's verdict without any change in fnn; see tests/test_typecheck.py to extend the range",
)
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
