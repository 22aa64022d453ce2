"""fnn/_compat.py: the pieces of torch whose name or place differs across supported releases."""

import torch

from fnn._compat import is_compiling


def test_is_compiling_is_false_eagerly_and_true_under_torch_compile():
    assert is_compiling() is False

    def f(x):
        return x + 1 if is_compiling() else x - 1

    x = torch.zeros(3)
    torch.testing.assert_close(f(x), x - 1)
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), x + 1)
