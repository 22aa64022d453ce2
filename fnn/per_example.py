"""Per-example gradients: the gradient of each example's own loss, batch axis kept.

    f = fnn.per_example_grads(apply, fnn.losses.cross_entropy)
    losses, grads = f(params, x, labels)   # losses (N,), each grads leaf (N, *param.shape)

Example n's loss is the loss of example n alone, as a batch of one with the loss's
default `reduction="mean"`: `losses[n] = loss(apply(params, x[n:n+1]), target[n:n+1])`,
so `losses.mean()` is the batch loss and the mean of the per-example gradients is
`fnn.value_and_grad`'s gradient.

How: one batched forward pass, then a backward pass that keeps the batch axis.
Each layer's VJP is replaced by the *per-example rule* its backward declares
(`fnn.core.BackwardRules.per_example`, right below the backward in the layer's file):
`Dense` forms one outer product per example instead of summing them, parameter-free
layers use their VJP as is, and `serial`/`parallel` walk their children. A layer
without a rule (a user's custom layer, or a backward swapped or patched with a plain
function, so the swapped rule is the one that runs) falls back to
`torch.func.vmap` over its `apply` and VJP on batches of one, which is exact but
slower; a layer whose output mixes examples (BatchNorm with batch statistics) has
no per-example gradients, and the fallback says so.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard

import torch
from typing_extensions import Protocol, final

from . import debug, tree
from .combinators import _Children
from .core import (
    VJP,
    ApplyFn,
    Params,
    check_keywords,
    declare,
    layer_info,
    layer_name,
    per_example_rule,
    rules_of,
)
from .errors import FnnError, FnnTypeError, ShapeError, describe, with_context
from .grad import Loss

__all__ = [
    "per_example_grads",
    "PerExampleRule",
]

PerExampleRule = Callable[[Any, Any, bool], tuple[Params, Any]]
"""`rule(residuals, dy, need_dx) -> (dparams, dx)`: a layer's VJP with the batch axis kept.

`residuals` are the layer's VJP residuals and `dy` the cotangent of its output for
the whole batch (each example's row is the cotangent of that example's own loss).
`dparams` mirrors the layer's params with a leading batch axis on every leaf;
`dx` is the usual input cotangent (`None` allowed when `need_dx` is false). A layer
declares it with `@its_backward.per_example_rule` (see `fnn.core.BackwardRules`)."""


def _has_rule(vjp: Any) -> bool:
    """Whether `vjp` (and, for composites, every child VJP in it) has a per-example rule."""
    if type(vjp) is not VJP:
        return False
    rules = rules_of(vjp.backward)
    if rules is None or rules.per_example is None:
        return False
    children = rules.children
    return children is None or all(_has_rule(c) for c in children(vjp.residuals))


def _per_example_vjp(vjp: VJP, dy: Any, need_dx: bool) -> tuple[Params, Any]:
    return per_example_rule(vjp)(vjp.residuals, dy, need_dx)


# ---------------------------------------------------------------------------------------
# The per-example API


def per_example_grads(
    apply: ApplyFn, loss: Loss, has_aux: bool = False
) -> Callable[..., tuple[Any, Params]]:
    """Turn `apply` and `loss` into `f(params, x, target, **kwargs) -> (losses, grads)`.

    `losses[n]` is example n's own loss: the loss of `x[n:n+1]` as a batch of one with
    `reduction="mean"` (for `mse`, the mean over the example's elements; for
    `cross_entropy`, its negative log-likelihood). So `losses.mean()` is the batch loss
    and `grads[...].mean(0)` is `fnn.value_and_grad`'s gradient.

    Args:
        apply: a model's `apply(params, x, **kwargs) -> (y, vjp)`; its output must not
            mix examples (no BatchNorm with batch statistics).
        loss: `loss(pred, target) -> (value, vjp)`, e.g. `fnn.losses.cross_entropy`. With a
            `reduction` keyword (fnn's losses), `reduction="none"` must keep the batch axis
            first; any other loss is run per example under `torch.func.vmap`.
        has_aux: also return the model's output `y`.

    Returns:
        `f(params, x, target, **kwargs)`, with `x` (or each tensor of a tuple input) and
            `target` of leading batch size `N` and keywords (`key=`) given to `apply`. It returns
            `(losses, grads)`, or `((losses, y), grads)` with `has_aux=True`: `losses` of shape
            `(N,)`, `grads` mirroring `params` with a leading batch axis on every leaf, shape
            `(N, *param.shape)`, `grads[...][n]` the gradient of `losses[n]`.

    Raises:
        FnnTypeError: `apply` or `loss` is not a function (e.g. a layer instead of its apply).

    Example:
        >>> init, apply = fnn.serial(L.Dense(3), L.Relu(), L.Dense(2))
        >>> _, params = init(fnn.random.key(0), (-1, 4))
        >>> f = fnn.per_example_grads(apply, fnn.losses.cross_entropy)
        >>> losses, grads = f(params, torch.ones(5, 4), torch.tensor([0, 1, 1, 0, 1]))
        >>> losses.shape, grads["0"]["weight"].shape
        (torch.Size([5]), torch.Size([5, 3, 4]))
    """
    if not callable(apply) or not callable(loss):
        raise FnnTypeError(
            "per_example_grads: expected per_example_grads(apply, loss) with two functions, got "
            f"{describe(apply)} and {describe(loss)} (pass layer.apply, not the layer)"
        )
    plan = _plan(apply)
    info = layer_info(apply)
    reducible = loss if _takes_reduction(loss) else None

    def losses_and_grads(params: Params, x: Any, target: Any, **kwargs: Any) -> tuple[Any, Params]:
        if kwargs:
            check_keywords("per_example_grads", info, kwargs)
        if torch.is_grad_enabled():  # inputs that require grad must not build a graph
            with torch.no_grad():
                return _losses_and_grads(params, x, target, kwargs)
        return _losses_and_grads(params, x, target, kwargs)

    def _losses_and_grads(
        params: Params, x: Any, target: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, Params]:
        batch = _batch_size(x)
        new_state = None
        if "state" in kwargs:  # running statistics: example-wise in evaluation (train=False)
            kwargs = dict(kwargs)
            state = kwargs.pop("state")
            y, vjp, new_state = apply(params, x, state=state, **kwargs)
            bound = declare(
                _no_init, functools.partial(_with_state, apply, state), layer_info(apply)
            ).apply
            tape: Any = _RuleTape(vjp) if _has_rule(vjp) else _VmapTape(bound, params, x, kwargs, y)
            del vjp
        else:
            # The model's own forward pass; only if some layer in it has no rule is it re-run
            # with serial/parallel opened up, so that just that layer is vmapped.
            y, tape = _forward_leaf(apply, apply, params, x, kwargs)
            if type(tape) is _VmapTape and type(plan) is _Composite:
                y, tape = _forward(plan, params, x, kwargs)
        if reducible is not None:
            losses, dy = _per_example_loss(reducible, y, target, batch)
        else:
            losses, dy = _vmapped_loss(loss, y, target, batch)
        grads, _ = _backward(tape, dy, False)
        result = ((losses, y), grads) if has_aux else (losses, grads)
        return result if new_state is None else (*result, new_state)

    return losses_and_grads


def _no_init(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("not called")


def _with_state(
    apply: ApplyFn, state: Any, params: Params, x: Any, **kwargs: Any
) -> tuple[Any, VJP]:
    """`apply` with its running statistics fixed: `(y, vjp)`, the new state dropped."""
    y, vjp, _ = apply(params, x, state=state, **kwargs)
    return y, vjp


def _batch_size(x: Any) -> int:
    xs = tree.leaves(x)
    if not xs or not all(isinstance(t, torch.Tensor) and t.ndim >= 1 for t in xs):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else describe(t) for t in xs]
        raise ShapeError(
            f"per_example_grads: expected inputs with a leading batch axis, got {shapes}"
        )
    batch: int = xs[0].shape[0]
    if any(t.shape[0] != batch for t in xs):
        raise ShapeError(
            f"per_example_grads: all inputs need one batch size, got shapes {[tuple(t.shape) for t in xs]}"
        )
    return batch


# ---------------------------------------------------------------------------------------
# The loss, per example


class _LossWithReduction(Protocol):
    """A loss with torch's `reduction=` keyword, as fnn's losses have."""

    def __call__(
        self, pred: Any, target: Any, /, *, reduction: str
    ) -> tuple[torch.Tensor, VJP]: ...


def _takes_reduction(loss: Loss) -> TypeGuard[_LossWithReduction]:
    try:
        return "reduction" in inspect.signature(loss).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _per_example_loss(
    loss: _LossWithReduction, y: Any, target: Any, batch: int
) -> tuple[torch.Tensor, Any]:
    """`(losses, dy)` from one call of `loss(y, target, reduction="none")`.

    Example n's loss is the mean of its k elementwise values, so the cotangent of each
    value is 1/k: the gradient of example n's loss alone, not scaled by 1/N."""
    values, loss_vjp = loss(y, target, reduction="none")
    if not isinstance(values, torch.Tensor) or values.ndim == 0 or values.shape[0] != batch:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else describe(values)
        raise ShapeError(
            f"per_example_grads: the loss with reduction='none' must give values with the batch axis "
            f"first, shape ({batch}, ...), got {got}"
        )
    if values.ndim == 1:
        return values, loss_vjp(torch.ones_like(values))
    per_example = math.prod(values.shape[1:])
    losses = values.reshape(batch, per_example).mean(1)
    return losses, loss_vjp(torch.full_like(values, 1.0 / max(per_example, 1)))


def _vmapped_loss(loss: Loss, y: Any, target: Any, batch: int) -> tuple[torch.Tensor, Any]:
    """`(losses, dy)` for a loss without a `reduction` keyword: one call per example, vmapped."""
    if batch == 0:
        return tree.leaves(y)[0].new_zeros((0,)), tree.map(torch.zeros_like, y)
    try:
        result: tuple[torch.Tensor, Any] = torch.func.vmap(
            functools.partial(_one_example_loss, loss)
        )(y, target)  # (annotated: torch ≤ 2.6 types vmap's result as Any)
        return result
    except FnnError:
        raise
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:  # vmap's own
        raise FnnError(
            f"per_example_grads: the loss {getattr(loss, '__name__', describe(loss))} has no "
            f"`reduction` keyword, and running it per example under torch.func.vmap failed: {error}"
        ) from None


def _one_example_loss(loss: Loss, y: Any, target: Any) -> tuple[torch.Tensor, Any]:
    value, loss_vjp = loss(tree.map(_add_batch_axis, y), tree.map(_add_batch_axis, target))
    if not isinstance(value, torch.Tensor) or value.ndim:
        raise FnnError(
            f"per_example_grads: the loss must return a 0-d value for a batch of one, got {describe(value)}"
        )
    return value, tree.map(_drop_batch_axis, loss_vjp(torch.ones_like(value)))


def _add_batch_axis(t: Any) -> Any:
    return t.unsqueeze(0) if isinstance(t, torch.Tensor) else t


def _drop_batch_axis(t: Any) -> Any:
    return t.squeeze(0) if isinstance(t, torch.Tensor) else t


# ---------------------------------------------------------------------------------------
# The model: a forward pass that records a tape, a backward pass that walks it.
#
# Normally the tape is just the model's VJP, every part of which has a rule. Otherwise
# `serial` and `parallel` are opened up (their `apply` carries `.children`), following a
# plan made once, so each layer inside is a leaf and only a leaf without a rule is re-run
# under vmap on its own input. Their forward here does exactly what their own `apply` does.


@final  # so that `type(node) is _Leaf` tells a type checker it is not a _Composite
class _Leaf(NamedTuple):
    apply: ApplyFn


class _Composite(NamedTuple):
    kind: str  # "serial" or "parallel"
    children: _Children
    nodes: tuple[Any, ...]


class _RuleTape(NamedTuple):
    vjp: VJP


class _VmapTape(NamedTuple):
    apply: ApplyFn
    params: Params
    x: Any
    kwargs: dict[str, Any]
    y: Any


class _CompositeTape(NamedTuple):
    kind: str
    tapes: tuple[Any, ...]
    given: tuple[str, ...]
    positions: tuple[int, ...]


def _plan(apply: ApplyFn) -> _Leaf | _Composite:
    info = layer_info(apply)
    if info.kind in ("serial", "parallel"):
        layers = info.children
        return _Composite(
            info.kind, _Children(info.kind, layers), tuple(_plan(layer[1]) for layer in layers)
        )
    return _Leaf(apply)


def _forward(
    node: _Leaf | _Composite, params: Params, x: Any, kwargs: dict[str, Any]
) -> tuple[Any, Any]:
    if type(node) is _Leaf:
        return _forward_leaf(node.apply, node.apply, params, x, kwargs)
    children = node.children
    child_params, given, positions = children.split_params(params)
    if node.kind == "parallel" and (not isinstance(x, (tuple, list)) or len(x) != len(node.nodes)):
        raise ShapeError(
            f"parallel: expected a tuple of {len(node.nodes)} inputs, got {describe(x)}"
        )
    key = kwargs.get("key")
    if "key" in kwargs:  # as in serial/parallel: the key is split, the other keywords go to all
        kwargs = {k: v for k, v in kwargs.items() if k != "key"}
    keys = children.init_keys(key) if key is not None else None
    calls = (
        debug.checked_applies(children.applies) if debug.is_checking_finite() else children.applies
    )
    ys, tapes = [], []
    for i, child in enumerate(node.nodes):
        child_kwargs = dict(kwargs, key=keys[i]) if keys is not None else kwargs
        xi = x if node.kind == "serial" else x[i]
        try:
            if type(child) is _Leaf:
                y, tape = _forward_leaf(child.apply, calls[i], child_params[i], xi, child_kwargs)
            else:
                y, tape = _forward(child, child_params[i], xi, child_kwargs)
        except FnnError as error:
            raise with_context(error, children.where(i)) from None
        tapes.append(tape)
        if node.kind == "serial":
            x = y
        else:
            ys.append(y)
    out = x if node.kind == "serial" else tuple(ys)
    return out, _CompositeTape(node.kind, tuple(tapes), given, positions)


def _forward_leaf(
    apply: ApplyFn,
    call: Callable[..., tuple[Any, VJP]],
    params: Params,
    x: Any,
    kwargs: dict[str, Any],
) -> tuple[Any, _RuleTape | _VmapTape]:
    out = call(params, x, **kwargs)
    if not isinstance(out, tuple) or len(out) != 2:
        raise FnnError(
            f"{layer_name(apply)}: per_example_grads needs apply to return (y, vjp), got {describe(out)} "
            "(models with running statistics, state=, are not supported: BatchNorm mixes examples)"
        )
    y, vjp = out
    if _has_rule(vjp):
        return y, _RuleTape(vjp)
    return y, _VmapTape(apply, params, x, kwargs, y)  # the VJP (and its residuals) is dropped


def _backward(tape: Any, dy: Any, need_dx: bool) -> tuple[Params, Any]:
    """The backward of ."""
    kind = type(tape)
    if kind is _RuleTape:
        return _per_example_vjp(tape.vjp, dy, need_dx)
    if kind is _VmapTape:
        return _vmap_backward(tape, dy)
    count = len(tape.tapes)
    grads: list[Any] = [None] * count
    if tape.kind == "serial":
        for i in range(count - 1, -1, -1):
            try:
                grads[i], dy = _backward(tape.tapes[i], dy, need_dx or i > 0)
            except FnnError as error:
                raise with_context(error, f"serial[{i}]") from None
        dx = dy
    else:
        if not isinstance(dy, (tuple, list)) or len(dy) != count:
            raise ShapeError(
                f"parallel VJP: expected a tuple of {count} cotangents, got {describe(dy)}"
            )
        dxs = []
        for i in range(count):
            try:
                grads[i], dxi = _backward(tape.tapes[i], dy[i], need_dx)
            except FnnError as error:
                raise with_context(error, f"parallel[{i}]") from None
            dxs.append(dxi)
        dx = tuple(dxs)
    return {name: grads[i] for name, i in zip(tape.given, tape.positions)}, dx


# ---------------------------------------------------------------------------------------
# The fallback: vmap over a layer's apply and VJP, on batches of one


def _vmap_backward(tape: _VmapTape, dy: Any) -> tuple[Params, Any]:
    """The backward of _vmap."""
    name = layer_name(tape.apply)
    batch = tree.leaves(tape.x)[0].shape[0]
    if batch == 0:
        return tree.map(_empty_batch_of, tape.params), tree.map(torch.zeros_like, tape.x)
    one = functools.partial(_one_example_layer, tape.apply, tape.kwargs)
    try:
        ys, dparams, dx = torch.func.vmap(one, in_dims=(None, 0, 0))(tape.params, tape.x, dy)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
        # the batched forward worked, so this is about batches of one or vmap
        raise FnnError(
            f"{name}: no per-example rule, and running it on batches of one under torch.func.vmap "
            f"failed ({type(error).__name__}: {error}). If it mixes examples (BatchNorm with batch "
            "statistics), per-example gradients are not defined; otherwise give it a rule with "
            "a rule (@its_backward.per_example_rule, see fnn.core.BackwardRules)"
        ) from None
    if batch > 1 and not _same_outputs(ys, tape.y):
        raise FnnError(
            f"{name}: its output for an example changes with the rest of the batch (e.g. BatchNorm "
            "with batch statistics, or randomness drawn for the whole batch), so per-example "
            "gradients are not defined for it"
        )
    return dparams, dx


def _empty_batch_of(p: torch.Tensor) -> torch.Tensor:
    return p.new_zeros((0, *p.shape))


def _one_example_layer(
    apply: ApplyFn, kwargs: dict[str, Any], params: Params, x: Any, dy: Any
) -> tuple[Any, ...]:
    y, vjp = apply(params, tree.map(_add_batch_axis, x), **kwargs)
    dparams, dx = vjp(tree.map(_add_batch_axis, dy))
    return tree.map(_drop_batch_axis, y), dparams, tree.map(_drop_batch_axis, dx)


def _same_outputs(per_example: Any, batched: Any) -> bool:
    for a, b in zip(tree.leaves(per_example), tree.leaves(batched)):
        if not isinstance(b, torch.Tensor) or not b.is_floating_point() or not b.numel():
            continue
        tol = torch.finfo(b.dtype).eps ** 0.5
        if not torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max())):
            return False
    return True
