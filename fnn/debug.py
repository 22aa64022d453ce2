"""Opt-in debugging aids: find the first layer that produces NaN or Inf.

Inside `with fnn.debug.check_finite():`, every layer run by `serial` or `parallel`
has its input, its output and, in the backward pass, its incoming cotangent and
its gradients checked; the first non-finite tensor raises `NonFiniteError` naming
the layer by its path in the model (`serial[2] Dense: output contains NaN/Inf …`).

The checks synchronise with the device and cost a reduction per tensor, so they
are for debugging only. Off (the default), they cost one flag read per
`serial`/`parallel` call. The mode is context-local (a `contextvars.ContextVar`: each
thread and each asyncio task has its own, and it never outlives its `with` block) and
applies to the forward passes run while it is on (their VJPs keep checking afterwards).
It switches nothing else: the same layers and VJPs run, with checks around them.

    >>> init, apply = fnn.serial(L.Dense(2), L.Relu())
    >>> _, params = init(fnn.random.key(0), (-1, 2))
    >>> params["0"]["bias"] = torch.tensor([float("nan"), 0.0])
    >>> with fnn.debug.check_finite():
    ...     apply(params, torch.ones(3, 2))
    Traceback (most recent call last):
    ...
    fnn.debug.NonFiniteError: serial[0] Dense: output contains NaN/Inf (3 NaN, 0 Inf of 6 elements)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any

import torch

from . import tree
from .core import VJP, ApplyFn, Params, backward, layer_name, per_example_rule
from .errors import FnnError

__all__ = [
    "check_finite",
    "NonFiniteError",
    "is_checking_finite",
    "checked_applies",
    "checked_backward",
]

_CHECK_FINITE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "fnn_check_finite", default=False
)
"""True inside `check_finite()`, in this context only; `serial` and `parallel` read it."""


class NonFiniteError(FnnError):
    """A layer's output, cotangent or gradient contains NaN or Inf (in `check_finite` mode)."""


class check_finite(contextlib.ContextDecorator):
    """Context manager (or decorator) that turns NaN/Inf checking on (or off) inside it.

    While it is on, the first non-finite input, output, cotangent or gradient of a layer run
    by `serial` or `parallel` raises `NonFiniteError` naming the layer.

    Args:
        enabled: `True` (default) to check, `False` to switch checking off inside.

    Example:
        >>> with fnn.debug.check_finite():
        ...     fnn.debug.is_checking_finite()
        True
        >>> fnn.debug.is_checking_finite()
        False
    """

    def __init__(self, enabled: bool = True):
        self.enabled = bool(enabled)
        self._tokens: list[contextvars.Token[bool]] = []

    def __enter__(self) -> check_finite:
        self._tokens.append(_CHECK_FINITE.set(self.enabled))
        return self

    def __exit__(self, *exc: object) -> None:
        _CHECK_FINITE.reset(self._tokens.pop())


def is_checking_finite() -> bool:
    """Whether `check_finite` mode is on.

    Returns:
        `True` inside `with check_finite():` (in this thread or task), else `False`.

    Example:
        >>> fnn.debug.is_checking_finite()
        False
    """
    return _CHECK_FINITE.get()


def checked_applies(applies: tuple[ApplyFn, ...]) -> tuple[ApplyFn, ...]:
    """The children's `apply` functions wrapped with finiteness checks (for combinators).

    Args:
        applies: the children's `apply` functions.

    Returns:
        The same functions, each checking its input, its output and (through its VJP, whose
            backward becomes `checked_backward`) its cotangents and gradients.

    Example:
        >>> (checked,) = fnn.debug.checked_applies((L.Relu().apply,))
        >>> y, vjp = checked({}, torch.ones(2))
        >>> vjp.backward is fnn.debug.checked_backward
        True
    """
    return tuple(functools.partial(_checked_apply, layer_name(a), a) for a in applies)


def _checked_apply(
    name: str, apply: ApplyFn, params: Params, x: Any, **kwargs: Any
) -> tuple[Any, VJP]:
    """`apply(params, x, **kwargs)` with its input and output checked; its VJP checks too."""
    _check(x, f"{name}: input already contains NaN/Inf (it came from outside the model)")
    y, vjp = apply(params, x, **kwargs)
    _check(y, f"{name}: output contains NaN/Inf")
    return y, VJP(checked_backward, (vjp, name))


# the wrapped VJP, unchanged: (dparams, dx) = vjp(dy), with dy, dparams and dx checked
@backward
def checked_backward(residuals: tuple[VJP, str], dy: Any) -> tuple[Params, Any]:
    """`(dparams, dx) = vjp(dy)` of the wrapped VJP, with `dy`, `dparams` and `dx` checked."""
    vjp, name = residuals
    _check(
        dy,
        f"{name} VJP: the incoming cotangent already contains NaN/Inf (from the loss or the caller)",
    )
    dparams, dx = vjp(dy)
    for path, leaf in zip(tree.paths(dparams), tree.leaves(dparams)):
        _check(leaf, f"{name} VJP: the gradient of params{path} contains NaN/Inf")
    _check(dx, f"{name} VJP: the input gradient contains NaN/Inf")
    return dparams, dx


def _check(value: Any, message: str) -> None:
    for t in tree.leaves(value):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                nan = int(torch.isnan(t).sum())
                inf = int(t.numel() - finite.sum()) - nan
                raise NonFiniteError(f"{message} ({nan} NaN, {inf} Inf of {t.numel()} elements)")


# per example: the wrapped layer's rule, with the same checks
@checked_backward.per_example_rule
def _checked_per_example(residuals: tuple[VJP, str], dy: Any, need_dx: bool) -> tuple[Params, Any]:
    vjp, name = residuals
    _check(
        dy,
        f"{name} VJP: the incoming cotangent already contains NaN/Inf (from the loss or the caller)",
    )
    dparams, dx = per_example_rule(vjp)(vjp.residuals, dy, need_dx)
    for path, leaf in zip(tree.paths(dparams), tree.leaves(dparams)):
        _check(leaf, f"{name} VJP: the per-example gradient of params{path} contains NaN/Inf")
    if dx is not None:
        _check(dx, f"{name} VJP: the input gradient contains NaN/Inf")
    return dparams, dx


def _checked_child(residuals: tuple[VJP, str]) -> tuple[VJP, ...]:
    return residuals[:1]


checked_backward.holds_children(_checked_child)
