"""The `>>>` examples in fnn's docstrings run and print what they say."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import fnn
from fnn import layers as L

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(fnn.__path__, "fnn."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"fnn": fnn, "torch": torch, "L": L}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, extraglobs=globs):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
