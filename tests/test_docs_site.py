"""The documentation site builds with `mkdocs build --strict`: every link resolves, every
page of docs/ is in the nav, and the API reference is rendered from fnn's docstrings."""

import html
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

import fnn

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages(nav):
    """The .md paths named in mkdocs.yml's nav, at any depth."""
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            yield from nav_pages(value)
        else:
            yield value


def squeezed(text):
    """`text` without whitespace: tags and line breaks put spaces in different places."""
    return "".join(text.split())


def page_text(page):
    """A built page's text: no tags, entities decoded, no whitespace."""
    return squeezed(html.unescape(re.sub(r"<[^>]+>", " ", page)))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    missing = [m for m in ("mkdocs", "material", "mkdocstrings") if not importlib.util.find_spec(m)]
    assert not missing, f"{missing} not installed: python -m pip install -e '.[dev]' (or '.[docs]')"
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # Material's banner about MkDocs 2
        timeout=300,
    )
    output = result.stdout + result.stderr
    print(output)  # shown by pytest when a test fails
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    return site_dir


def test_every_page_is_in_the_nav():
    from mkdocs.config import load_config

    in_nav = set(nav_pages(load_config(str(ROOT / "mkdocs.yml"))["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.glob("**/*.md")}
    assert on_disk - in_nav == set(), "pages missing from mkdocs.yml's nav"
    assert in_nav - on_disk == set(), "nav entries without a page"


def test_site_builds_with_every_page(site):
    for page in DOCS.glob("**/*.md"):
        name = page.relative_to(DOCS).with_suffix("").as_posix()
        built = site / (
            "index.html" if name == "index" else f"{name.removesuffix('/index')}/index.html"
        )
        assert built.is_file(), f"{page.name} was not built"


def test_api_reference_renders_docstrings(site):
    core = (site / "api" / "core" / "index.html").read_text()
    summary = fnn.value_and_grad.__doc__.strip().split("\n\n")[0]
    assert squeezed(summary.replace("`", "")) in page_text(core)
    # the Example sections are highlighted Python sessions, not Markdown block quotes
    assert 'class="gp">&gt;&gt;&gt;' in core
    for page in (site / "api").glob("**/*.html"):
        assert "<blockquote>" not in page.read_text(), page


def test_api_reference_covers_the_public_api(site):
    # every name in the __all__ of fnn and of its public modules has an entry (an anchor)
    anchors = set()
    for page in (site / "api").glob("**/*.html"):
        anchors.update(re.findall(r'id="(fnn\.[\w.]+)"', page.read_text()))
    names = {a.rsplit(".", 1)[1] for a in anchors}
    modules = [fnn] + [
        getattr(fnn, n) for n in fnn.__all__ if isinstance(getattr(fnn, n), types.ModuleType)
    ]
    missing = [
        f"{module.__name__}.{name}"
        for module in modules
        for name in module.__all__
        if not isinstance(obj := getattr(module, name), types.ModuleType)
        and name not in names
        and getattr(obj, "__name__", None) not in names  # glorot_uniform = xavier_uniform
    ]
    assert missing == [], "public names missing from the API reference (or without a docstring)"
