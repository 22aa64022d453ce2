"""A Griffe extension for the docs site: read a Google-style `Example:` section as `Examples:`.

fnn's docstrings head their runnable examples `Example:` (singular, as in Google's style
guide and Sphinx's napoleon). Griffe's Google parser only knows `Examples:`; it reads the
singular as a generic admonition whose `>>>` lines Markdown would render as nested block
quotes. Renaming the heading before parsing makes them highlighted doctest blocks.
Loaded by mkdocs.yml (`extensions:` of the mkdocstrings python handler).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.M)


class ExampleSections(griffe.Extension):
    """Rewrite `Example:` section headings to `Examples:` in every docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        del kwargs  # node, agent: not needed
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
