"""Test helpers: autograd references (tests only: fnn itself never uses autograd)."""

from __future__ import annotations

import pytest
import torch

import fnn


def autograd_vjp(fn, params, x, dy):
    """`(dparams, dx)` of `fn(params, x)` by torch.autograd, for the cotangent `dy`."""
    with torch.enable_grad():
        params = fnn.tree.map(lambda t: t.detach().clone().requires_grad_(True), params)
        xs = x if isinstance(x, tuple) else (x,)
        xs = tuple(t.detach().clone().requires_grad_(True) for t in xs)
        y = fn(params, xs if isinstance(x, tuple) else xs[0])
        ys = y if isinstance(y, tuple) else (y,)
        dys = dy if isinstance(dy, tuple) else (dy,)
        leaves = fnn.tree.leaves(params)
        grads = torch.autograd.grad(ys, [*leaves, *xs], dys, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip([*leaves, *xs], grads)]
    dparams = fnn.tree.unflatten(fnn.tree.structure(params), grads[: len(leaves)])
    dx = tuple(grads[len(leaves) :])
    return dparams, dx if isinstance(x, tuple) else dx[0]


def assert_trees_close(actual, expected, atol=1e-10, rtol=1e-7):
    fnn.tree.assert_same_structure(expected, actual, "gradient tree")
    for path, a, e in zip(
        fnn.tree.paths(expected), fnn.tree.leaves(actual), fnn.tree.leaves(expected)
    ):
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m, p=path: f"{p}: {m}")


def randn(seed, *shape, dtype=torch.float64):
    return fnn.random.normal(fnn.random.key(seed), shape, dtype=dtype)


def torch_disk_mlp(params, activation=torch.nn.ReLU):
    """The torch.nn twin of the disk MLP 2→25→25→25→2, loaded with fnn `params`."""
    seq = torch.nn.Sequential(
        torch.nn.Linear(2, 25),
        activation(),
        torch.nn.Linear(25, 25),
        activation(),
        torch.nn.Linear(25, 25),
        activation(),
        torch.nn.Linear(25, 2),
    ).to(fnn.tree.leaves(params)[0].dtype)
    seq.load_state_dict(fnn.tree.to_state_dict(params))
    return seq


def autograd_loss_and_grads(seq, loss_fn, x, target):
    """`(loss, grads)` of a torch.nn model by autograd, grads as an fnn params tree."""
    with torch.enable_grad():
        seq.zero_grad()
        loss = loss_fn(seq(x), target)
        loss.backward()
    grads = {name: p.grad for name, p in seq.named_parameters()}
    return loss.detach(), fnn.tree.from_state_dict(grads)


TORCH = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
COMPILE_REASON = (
    f"torch {torch.__version__}: dynamo before 2.13 cannot call a NamedTuple instance (an fnn "
    "VJP, vjp(dy)) inside a compiled graph (measured: 2.4, 2.6, 2.8 and 2.10 fail; 2.13 and "
    "2.14 pass); the same code runs eagerly, and is tested, on every supported torch"
)
requires_compile = pytest.mark.skipif(TORCH < (2, 13), reason=COMPILE_REASON)
