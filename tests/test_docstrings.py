"""Every public function, class and layer constructor has a complete docstring.

Complete means: a docstring; an `Example:` section with a `>>>` doctest (test_doctests.py runs
it); every parameter of the signature, and no other name, in `Args:` (for a NamedTuple, its
fields may be in `Attributes:`); and, unless the function returns `None`, a `Returns:` (or
`Yields:`) section of one item, its continuation lines indented. Exception classes need only
a docstring; type aliases (`fnn.Params`, `fnn.optim.Schedule`, ...) are not walked.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

import fnn

PUBLIC_MODULES = [
    "fnn",
    "fnn.core",
    "fnn.layers",
    "fnn.losses",
    "fnn.optim",
    "fnn.tree",
    "fnn.random",
    "fnn.initializers",
    "fnn.data",
    "fnn.io",
    "fnn.debug",
    "fnn.distributed",
    "fnn.testing",
    "fnn.rules",
    "fnn.state",
    "fnn.per_example",
    "fnn.summary",
    "fnn.remat",
    "fnn.errors",
]

# Protocols that only name a call signature, which their one-line docstring spells out.
NO_EXAMPLE = {
    "fnn.core.Backward",
    "fnn.core.InitFn",
    "fnn.core.ApplyFn",
    "fnn.core.BackwardFn",
    "fnn.initializers.Initializer",
    "fnn.state.InitStateFn",
}


def public_api() -> dict[str, object]:
    """`{qualified name: object}` for every public function and class, each once."""
    found: dict[str, object] = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [name for name in vars(module) if not name.startswith("_")]
        for name in names:
            obj = getattr(module, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # submodules, constants, type aliases
            if not obj.__module__.startswith("fnn"):
                continue  # an alias of an outside type: fnn.Key is torch.Tensor
            found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


API = public_api()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def section(doc: str, title: str) -> list[str] | None:
    """The lines of a Google-style section (`Args:`, `Example:`, ...), or None if absent."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{title}:":
            body = []
            for later in lines[i + 1 :]:
                if later.strip() and _indent(later) <= _indent(line):
                    break
                body.append(later)
            return body
    return None


def documented_names(doc: str, title: str) -> set[str]:
    """The entry names of a section: `name:` or `name (type):` at the section's indentation."""
    body = [line for line in section(doc, title) or [] if line.strip()]
    if not body:
        return set()
    base = min(_indent(line) for line in body)
    entry = re.compile(r"(\*{0,2}\w+)(?: \(.+?\))?:")
    return {
        m.group(1) for line in body if _indent(line) == base and (m := entry.match(line.strip()))
    }


def parameter_names(obj: object) -> list[str]:
    names = []
    for p in inspect.signature(obj).parameters.values():
        stars = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(stars + p.name)
    return names


def test_the_walk_finds_the_public_api():
    for name in fnn.__all__:  # a new public submodule must be added to PUBLIC_MODULES
        if inspect.ismodule(getattr(fnn, name)):
            assert f"fnn.{name}" in PUBLIC_MODULES, name
    for name in ["fnn.layers.dense.Dense", "fnn.combinators.serial", "fnn.optim.adam.adamw"]:
        assert name in API
    assert len(API) > 100


@pytest.mark.parametrize("name", sorted(API))
def test_public_docstring(name):
    obj = API[name]
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"{name} has no docstring"
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return  # exception classes: a one-line docstring is enough
    if fnn.core.rules_of(obj) is not None:
        return  # backward functions: their math line, and docs/api/backward.md lists them
    if name in NO_EXAMPLE:
        return
    example = section(doc, "Example") or section(doc, "Examples")
    assert example and any(">>>" in line for line in example), (
        f"{name}: no `Example:` section with a `>>>` doctest"
    )
    params = parameter_names(obj)
    args = documented_names(doc, "Args")
    documented = args | documented_names(doc, "Attributes") if inspect.isclass(obj) else args
    missing = [p for p in params if p not in documented]
    assert not missing, f"{name}: parameters {missing} not in its `Args:` section"
    unknown = sorted(args - set(params))
    assert not unknown, f"{name}: `Args:` names {unknown}, which are not parameters"
    for title in ("Returns", "Yields"):  # one item: the API reference would split more in rows
        body = [line for line in section(doc, title) or [] if line.strip()]
        assert all(_indent(line) > _indent(body[0]) for line in body[1:]), (
            f"{name}: indent the continuation lines of its `{title}:` section"
        )
    if inspect.isfunction(obj):
        returns = inspect.signature(obj).return_annotation
        if returns not in (None, "None"):
            assert section(doc, "Returns") or section(doc, "Yields"), f"{name}: no `Returns:`"
