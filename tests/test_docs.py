"""Every Python code block in README.md and docs/*.md runs, in order, per file.

Blocks fenced ```py (the JAX snippets in docs/jax-users.md) are illustrative and not run.
"""

import pathlib
import re
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(path):
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize(
    "path", [f for f in FILES if blocks(f)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_code_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # A real module, so functions defined in the docs pickle by reference (VJPs must pickle).
    module = types.ModuleType(f"doc_{path.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, code in enumerate(blocks(path)):
        try:
            exec(compile(code, f"{path.name}[block {i}]", "exec"), module.__dict__)
        except Exception as error:
            raise AssertionError(
                f"{path.name}, code block {i} failed: {error!r}\n{code}"
            ) from error


def test_docs_exist():
    for name in ["index.md", "tutorial.md", "custom-layer.md"]:
        assert (ROOT / "docs" / name).is_file(), name
