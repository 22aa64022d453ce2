"""Per-example gradients: the gradient of each example's own loss, batch axis kept.

    f = fnn.per_example_grads(apply, fnn.losses.cross_entropy)
    losses, grads = f(params, x, labels)   # losses (N,), each grads leaf (N, *param.shape)

Example n's loss is the loss of example n alone, as a batch of one with the loss's
default `reduction="mean"`: `losses[n] = loss(apply(params, x[n:n+1]), target[n:n+1])`,
so `losses.mean()` is the batch loss and the mean of the per-example gradients is
`fnn.value_and_grad`'s gradient.

How: one batched forward pass, then a backward pass that keeps the batch axis.
Each layer's VJP is replaced by a *per-example rule* keyed by its backward function
(`register_per_example`): `Dense` forms one outer product per example instead of
summing them, parameter-free layers use their VJP as is, and `serial`/`parallel`
walk their children. A layer without a rule (a user's custom layer) falls back to
`torch.func.vmap` over its `apply` and VJP on batches of one, which is exact but
slower; a layer whose output mixes examples (BatchNorm with batch statistics) has
no per-example gradients, and the fallback says so.
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable
from typing import Any, NamedTuple, TypeGuard

import torch
from typing_extensions import Protocol, final

from . import debug, tree
from .combinators import _Children, parallel_backward, serial_backward
from .core import VJP, ApplyFn, BackwardFn, Params, layer_name
from .errors import FnnError, FnnTypeError, ShapeError, describe, with_context
from .grad import Loss
from .layers import _checks, activations, dropout, fan, reshape
from .layers.dense import dense_backward

__all__ = ["per_example_grads", "register_per_example", "PerExampleRule"]

PerExampleRule = Callable[[Any, Any, bool], tuple[Params, Any]]
"""`rule(residuals, dy, need_dx) -> (dparams, dx)`: a layer's VJP with the batch axis kept.

`residuals` are the layer's VJP residuals and `dy` the cotangent of its output for
the whole batch (each example's row is the cotangent of that example's own loss).
`dparams` mirrors the layer's params with a leading batch axis on every leaf;
`dx` is the usual input cotangent (`None` allowed when `need_dx` is false)."""

_RULES: dict[BackwardFn, PerExampleRule] = {}
# Backward functions whose residuals hold child VJPs: a rule applies only if all children have one.
_CHILD_VJPS: dict[BackwardFn, Callable[[Any], tuple[VJP, ...]]] = {}


def register_per_example(backward: BackwardFn, rule: PerExampleRule | None = None) -> None:
    """Give the layer whose VJP uses `backward` a per-example rule (see `PerExampleRule`).

    Layers without a rule fall back to `torch.func.vmap`, which is exact but slower.

    Args:
        backward: the module-level backward function of the layer's `fnn.VJP`.
        rule: `rule(residuals, dy, need_dx) -> (dparams, dx)` with a leading batch axis `N`
            on every `dparams` leaf; `None` declares the layer parameter-free and
            example-wise (output row n depends on input row n only), so its ordinary VJP
            is already right.

    Raises:
        FnnTypeError: `backward` (or a given `rule`) is not callable.

    Example:
        >>> def double_backward(residuals, dy):       # y = 2x  ⇒  dx = 2 dy
        ...     return {}, 2 * dy
        >>> register_per_example(double_backward)
    """
    if not callable(backward) or (rule is not None and not callable(rule)):
        raise FnnTypeError(
            f"register_per_example: expected a backward function and a rule (or None), got "
            f"{describe(backward)} and {describe(rule)}"
        )
    _RULES[backward] = rule if rule is not None else functools.partial(_example_wise, backward)


def _has_rule(vjp: Any) -> bool:
    """Whether `vjp` (and, for composites, every child VJP in it) has a per-example rule."""
    if type(vjp) is not VJP or vjp.backward not in _RULES:
        return False
    children = _CHILD_VJPS.get(vjp.backward)
    return children is None or all(_has_rule(c) for c in children(vjp.residuals))


def _per_example_vjp(vjp: VJP, dy: Any, need_dx: bool) -> tuple[Params, Any]:
    return _RULES[vjp.backward](vjp.residuals, dy, need_dx)


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
    reducible = loss if _takes_reduction(loss) else None

    def losses_and_grads(params: Params, x: Any, target: Any, **kwargs: Any) -> tuple[Any, Params]:
        batch = _batch_size(x)
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
        return ((losses, y), grads) if has_aux else (losses, grads)

    return losses_and_grads


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
    except Exception as error:  # vmap's own errors come as RuntimeError/ValueError/…
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
    kind = getattr(apply, "layer_name", None)
    layers = getattr(apply, "children", None)
    if kind in ("serial", "parallel") and isinstance(layers, tuple):
        return _Composite(kind, _Children(kind, layers), tuple(_plan(layer[1]) for layer in layers))
    return _Leaf(apply)


def _forward(
    node: _Leaf | _Composite, params: Params, x: Any, kwargs: dict[str, Any]
) -> tuple[Any, Any]:
    if type(node) is _Leaf:
        return _forward_leaf(node.apply, node.apply, params, x, kwargs)
    children = node.children
    child_params, given, positions = children.split_params(params)
    if node.kind == "parallel" and (not isinstance(x, tuple | list) or len(x) != len(node.nodes)):
        raise ShapeError(
            f"parallel: expected a tuple of {len(node.nodes)} inputs, got {describe(x)}"
        )
    key = kwargs.get("key")
    if "key" in kwargs:  # as in serial/parallel: the key is split, the other keywords go to all
        kwargs = {k: v for k, v in kwargs.items() if k != "key"}
    keys = children.init_keys(key) if key is not None else None
    calls = debug.checked(children.applies) if debug.CHECK_FINITE else children.applies
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
        if not isinstance(dy, tuple | list) or len(dy) != count:
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
    name = layer_name(tape.apply)
    batch = tree.leaves(tape.x)[0].shape[0]
    if batch == 0:
        return tree.map(_empty_batch_of, tape.params), tree.map(torch.zeros_like, tape.x)
    one = functools.partial(_one_example_layer, tape.apply, tape.kwargs)
    try:
        ys, dparams, dx = torch.func.vmap(one, in_dims=(None, 0, 0))(tape.params, tape.x, dy)
    except (
        Exception
    ) as error:  # the batched forward worked, so this is about batches of one or vmap
        raise FnnError(
            f"{name}: no per-example rule, and running it on batches of one under torch.func.vmap "
            f"failed ({type(error).__name__}: {error}). If it mixes examples (BatchNorm with batch "
            "statistics), per-example gradients are not defined; otherwise give it a rule with "
            "fnn.per_example.register_per_example"
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


# ---------------------------------------------------------------------------------------
# Rules for fnn's layers


# y = x Wᵀ + b   ⇒   per example: dW[n] = Σₘ dy[n,m] ⊗ x[n,m],  db[n] = Σₘ dy[n,m],  dx = dy W
def dense_per_example(
    residuals: tuple[torch.Tensor, torch.Tensor, bool], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    x, weight, has_bias = residuals
    expected = x.shape[:-1] + weight.shape[:1]
    if not isinstance(dy, torch.Tensor) or dy.shape != expected or dy.dtype is not x.dtype:
        _checks.cotangent_like("Dense", dy, expected, x)
    if x.ndim == 2:  # (N, in): one outer product per example, a single broadcast multiply
        grads = {"weight": dy.unsqueeze(2).mul(x.unsqueeze(1))}
        db = dy
        dx = dy.mm(weight) if need_dx else None
    elif x.ndim > 2:  # (N, …, in): sum the outer products over the middle axes
        batch, middle = x.shape[0], math.prod(x.shape[1:-1])
        dy3 = dy.reshape(batch, middle, dy.shape[-1])
        grads = {"weight": dy3.transpose(1, 2).bmm(x.reshape(batch, middle, x.shape[-1]))}
        db = dy3.sum(1)
        dx = dy.matmul(weight) if need_dx else None
    else:
        raise ShapeError(
            f"Dense: per-example gradients need an input with a batch axis (N, ..., in), got {tuple(x.shape)}"
        )
    if has_bias:
        grads["bias"] = db
    return grads, dx


# parameter-free and example-wise: dparams = {} and dx = vjp(dy), row n from row n
def _example_wise(
    backward: BackwardFn, residuals: Any, dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    del need_dx
    grads: tuple[Params, Any] = backward(residuals, dy)
    return grads


# softmax over the last axis: example-wise unless that axis is the batch axis
def _last_axis_per_example(
    name: str, backward: BackwardFn, y: torch.Tensor, dy: torch.Tensor, need_dx: bool
) -> tuple[Params, torch.Tensor]:
    del need_dx
    if y.ndim < 2:
        raise FnnError(
            f"{name}: on an input of shape {tuple(y.shape)} its last axis is the batch axis, so it "
            "mixes examples and per-example gradients are not defined"
        )
    grads: tuple[Params, torch.Tensor] = backward(y, dy)
    return grads


# concatenation: example-wise unless it joins along the batch axis
def _concat_per_example(
    residuals: tuple[int, tuple[int, ...], torch.Size], dy: torch.Tensor, need_dx: bool
) -> tuple[Params, tuple[torch.Tensor, ...]]:
    del need_dx
    axis, _, shape = residuals
    if axis % len(shape) == 0:
        raise FnnError(
            "FanInConcat: joining along the batch axis mixes examples; per-example "
            "gradients are not defined"
        )
    return fan.fan_in_concat_backward(residuals, dy)


# y = fₙ(…f₁(x))   ⇒   walk the children's rules in reverse
def _serial_per_example(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]], dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    vjps, given, positions = residuals
    grads: list[Any] = [None] * len(vjps)
    for i in range(len(vjps) - 1, -1, -1):
        try:
            grads[i], dy = _per_example_vjp(vjps[i], dy, need_dx or i > 0)
        except FnnError as error:
            raise with_context(error, f"serial[{i}]") from None
    return {name: grads[i] for name, i in zip(given, positions)}, dy


# (y₀, y₁, …) = (f₀(x₀), f₁(x₁), …)   ⇒   each child's rule on its own cotangent
def _parallel_per_example(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]], dy: Any, need_dx: bool
) -> tuple[Params, tuple[Any, ...]]:
    vjps, given, positions = residuals
    if not isinstance(dy, tuple | list) or len(dy) != len(vjps):
        raise ShapeError(
            f"parallel VJP: expected a tuple of {len(vjps)} cotangents, got {describe(dy)}"
        )
    grads, dxs = [], []
    for i, (vjp, dyi) in enumerate(zip(vjps, dy)):
        try:
            g, dx = _per_example_vjp(vjp, dyi, need_dx)
        except FnnError as error:
            raise with_context(error, f"parallel[{i}]") from None
        grads.append(g)
        dxs.append(dx)
    return {name: grads[i] for name, i in zip(given, positions)}, tuple(dxs)


# fnn.debug.check_finite's wrapper: the wrapped layer's rule, with the same checks
def _checked_per_example(residuals: tuple[VJP, str], dy: Any, need_dx: bool) -> tuple[Params, Any]:
    vjp, name = residuals
    debug._check(
        dy,
        f"{name} VJP: the incoming cotangent already contains NaN/Inf (from the loss or the caller)",
    )
    dparams, dx = _per_example_vjp(vjp, dy, need_dx)
    for path, leaf in zip(tree.paths(dparams), tree.leaves(dparams)):
        debug._check(leaf, f"{name} VJP: the per-example gradient of params{path} contains NaN/Inf")
    if dx is not None:
        debug._check(dx, f"{name} VJP: the input gradient contains NaN/Inf")
    return dparams, dx


register_per_example(dense_backward, dense_per_example)
for _backward_fn in (
    activations.identity_backward,
    activations.relu_backward,
    activations.leaky_relu_backward,
    activations.tanh_backward,
    activations.sigmoid_backward,
    activations.elu_backward,
    activations.gelu_backward,
    activations.softplus_backward,
    dropout.dropout_backward,
    reshape.reshape_backward,
    fan.fan_out_backward,
    fan.fan_in_sum_backward,
):
    register_per_example(_backward_fn)
register_per_example(
    activations.softmax_backward,
    functools.partial(_last_axis_per_example, "Softmax", activations.softmax_backward),
)
register_per_example(
    activations.log_softmax_backward,
    functools.partial(_last_axis_per_example, "LogSoftmax", activations.log_softmax_backward),
)
register_per_example(fan.fan_in_concat_backward, _concat_per_example)
register_per_example(serial_backward, _serial_per_example)
register_per_example(parallel_backward, _parallel_per_example)
register_per_example(debug.checked_backward, _checked_per_example)
_CHILD_VJPS[serial_backward] = _CHILD_VJPS[parallel_backward] = operator.itemgetter(
    0
)  # (vjps, given, positions)
_CHILD_VJPS[debug.checked_backward] = operator.itemgetter(slice(0, 1))  # (vjp, name)
del _backward_fn
