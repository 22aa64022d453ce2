"""README.md: each ```python block runs on its own (a fresh namespace, as a reader pastes it),
and the quickstart visibly learns. (tests/test_docs.py also runs the blocks in order.)"""

import contextlib
import io
import pathlib
import re
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, re.S | re.M)


def run_alone(code: str, name: str) -> str:
    """Run `code` in a fresh module namespace; return what it printed."""
    module = types.ModuleType(name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), module.__dict__)
    return out.getvalue()


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_block_runs_on_its_own(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"readme_block_{index}"
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    printed = run_alone(BLOCKS[index], name)
    # what the README says a block prints (`# ...` after a print, or a ```text block after it)
    for claim in re.findall(r"print\(.*\)  # (.+)$", BLOCKS[index], re.M):
        assert claim in printed, (claim, printed)


def test_quickstart_learns_and_prints_what_the_readme_shows():
    quickstart = next(b for b in BLOCKS if "fnn.data.disk" in b)
    printed = run_alone(quickstart, "readme_quickstart")
    accuracies = [float(a) for a in re.findall(r"test accuracy ([\d.]+) %", printed)]
    assert len(accuracies) == 4 and accuracies[-1] >= 95.0, printed
    # the numbers the README shows, up to the rounding of another torch release's kernels
    shown = re.search(r"prints\n\n```text\n(.*?)```", README, re.S).group(1)
    number = re.compile(r"[\d.]+")
    assert len(printed.splitlines()) == len(shown.splitlines())
    for line, claim in zip(printed.splitlines(), shown.splitlines()):
        assert number.sub("#", line) == number.sub("#", claim)
        got, want = (list(map(float, number.findall(t))) for t in (line, claim))
        assert got == pytest.approx(want, abs=1.0), (line, claim)
