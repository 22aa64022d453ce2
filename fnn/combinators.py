"""Combinators: `serial` chains layers, `parallel` runs layers side by side.

Their params nest the children's under `"0"`, `"1"`, … (as `torch.nn.Sequential`'s
`state_dict()` does), and their VJPs mirror their forwards: `serial`'s residuals are
its children's VJPs, walked in reverse; `parallel`'s are mapped over the outputs.
A missing entry for a parameter-free child is accepted (as in a `state_dict`), and
the gradients then have no entry for it either: `dparams` mirrors the given params.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import torch

from . import debug, random
from ._compat import autocast_enabled
from ._devices import device_type
from .core import (
    VJP,
    Key,
    Layer,
    LayerInfo,
    Params,
    Shapes,
    backprop,
    backward,
    check_keywords,
    declare,
    layer_info,
    per_example_rule,
)
from .errors import (
    FnnError,
    FnnTypeError,
    KeyArrayError,
    ShapeError,
    TreeError,
    describe,
    with_context,
)

__all__ = [
    "serial",
    "parallel",
    "serial_backward",
    "parallel_backward",
    "autocast_backward",
]


class _Children:
    """What `serial` and `parallel` share: their layers and the `"0"`, `"1"`, … keys."""

    def __init__(self, kind: str, layers: Sequence[Layer]):
        if not layers:
            raise FnnError(f"{kind}: needs at least one layer")
        for i, layer in enumerate(layers):
            if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
                hint = " (did you forget the call, e.g. Relu()?)" if callable(layer) else ""
                raise FnnTypeError(
                    f"{kind}[{i}]: expected a Layer (init, apply) pair, got {describe(layer)}{hint}"
                )
        self.kind = kind
        self.inits = tuple(layer[0] for layer in layers)
        self.applies = tuple(layer[1] for layer in layers)
        self.names = tuple(str(i) for i in range(len(layers)))
        self.position = {name: i for i, name in enumerate(self.names)}
        self.all_positions = tuple(range(len(layers)))
        infos = [layer_info(layer) for layer in layers]
        keywords: frozenset[str] | None = frozenset({"state", "train"})  # any model takes a state
        for info in infos:
            keywords = (
                None if keywords is None or info.keywords is None else keywords | info.keywords
            )
        self.info = LayerInfo(kind, kind=kind, children=tuple(layers), keywords=keywords)

    def where(self, i: int) -> str:
        return f"{self.kind}[{i}]"

    def split_params(self, params: Params) -> tuple[list[Params], tuple[str, ...], tuple[int, ...]]:
        """Each child's params (`{}` where missing) and the given keys with their positions."""
        if type(params) is not dict and not isinstance(params, Mapping):
            raise TreeError(
                f"{self.kind}: expected params as a dict with keys {list(self.names)}, got {describe(params)}"
            )
        given = tuple(params)
        if given == self.names:
            return [params[k] for k in given], given, self.all_positions
        unknown = [k for k in given if k not in self.position]
        if unknown:
            raise TreeError(
                f"{self.kind}: unexpected params keys {unknown}; this {self.kind} has layers "
                f"{list(self.names)}"
            )
        return (
            [params.get(name, {}) for name in self.names],  # a fresh {} per missing entry
            given,
            tuple(self.position[k] for k in given),
        )

    def init_keys(self, key: Key) -> list[Key]:
        try:
            return list(random.split(key, len(self.names)).unbind(0))
        except KeyArrayError as error:
            raise KeyArrayError(f"{self.kind}: bad key: {error}") from None

    def split_state(self, state: Any) -> list[Any]:
        """Each child's state, `None` for children without one (they run without `state=`)."""
        if not isinstance(state, Mapping):
            raise TreeError(
                f"{self.kind}: expected state as a dict (from fnn.init_state), got {describe(state)}"
            )
        unknown = [k for k in state if k not in self.position]
        if unknown:
            raise TreeError(
                f"{self.kind}: unexpected state keys {unknown}; this {self.kind} has layers {list(self.names)}"
            )
        return [None if isinstance(s, Mapping) and not s else s for s in map(state.get, self.names)]


def _apply_with_state(
    children: _Children, params: Params, x: Any, key: Key | None, kwargs: dict[str, Any]
) -> tuple[Any, VJP, dict[str, Any]]:
    """`serial`'s or `parallel`'s apply given `state=`: returns `(y, vjp, new_state)`.

    A child with an entry in the state gets `state=` and hands back its new state;
    the others run as in the stateless path. Other keywords (`train=`) go to all."""
    state = kwargs.pop("state")
    child_params, given, positions = children.split_params(params)
    child_states = children.split_state(state)
    is_serial = children.kind == "serial"
    if not is_serial and (not isinstance(x, (tuple, list)) or len(x) != len(child_states)):
        raise ShapeError(
            f"parallel: expected a tuple of {len(child_states)} inputs, got {describe(x)}"
        )
    keys = children.init_keys(key) if key is not None else None
    ys, vjps, new_state = [], [], {}
    for i, child_apply in enumerate(children.applies):
        child_kwargs = dict(kwargs, key=keys[i]) if keys is not None else kwargs
        try:
            if child_states[i] is None:
                y, vjp = child_apply(child_params[i], x if is_serial else x[i], **child_kwargs)
            else:
                y, vjp, new_state[children.names[i]] = child_apply(
                    child_params[i], x if is_serial else x[i], state=child_states[i], **child_kwargs
                )
        except FnnError as error:
            raise with_context(error, children.where(i)) from None
        if is_serial:
            x = y
        ys.append(y)
        vjps.append(vjp)
    residuals = (tuple(vjps), given, positions)
    if is_serial:
        return x, VJP(serial_backward, residuals), new_state
    return tuple(ys), VJP(parallel_backward, residuals), new_state


def _is_shape_list(shapes: object, count: int) -> TypeGuard[Sequence[Shapes]]:
    """Whether `shapes` is a list (or tuple) of `count` shapes, as `parallel`'s init takes."""
    return (
        isinstance(shapes, (list, tuple))
        and len(shapes) == count
        and all(isinstance(s, (list, tuple)) for s in shapes)
    )


def _gather(grads: list[Any], given: tuple[str, ...], positions: tuple[int, ...]) -> Params:
    return {name: grads[i] for name, i in zip(given, positions)}


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence: `serial(f, g)` computes `g(f(x))`.

    Args:
        *layers: one or more `Layer`s; each takes the previous one's output.

    Returns:
        `Layer(init, apply)`. `init(key, input_shape)` gives the last layer's output shape
            and params `{"0": params_f, "1": params_g, …}`, the same names as the matching
            `torch.nn.Sequential`'s `state_dict()` once flattened (an entry of a
            parameter-free layer may be missing). `apply(params, x, **kwargs)` gives
            `(y, vjp)`, `y` the last layer's output; a `key=` is split among the layers and
            other keywords go to every layer. `vjp(dy)`, `dy` of `y`'s shape, gives
            `(dparams, dx)`, `dparams` mirroring the given params and `dx` of `x`'s shape.

    Raises:
        FnnError: no layer.
        FnnTypeError: an argument that is not a `Layer` (e.g. `Relu` instead of `Relu()`).
        ShapeError: (from `init`, `apply` and the VJP) bad shapes, named by the layer's
            position: `serial[2] Dense: ...`.

    Example:
        >>> init, apply = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2))
        >>> out_shape, params = init(fnn.random.key(0), (-1, 3))
        >>> out_shape, list(params)
        ((-1, 2), ['0', '1', '2'])
        >>> y, vjp = apply(params, torch.ones(5, 3))
        >>> dparams, dx = vjp(torch.ones(5, 2))
    """
    children = _Children("serial", layers)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        params: Params = {}
        shape = input_shape
        for i, (child_init, child_key) in enumerate(zip(children.inits, children.init_keys(key))):
            try:
                shape, params[children.names[i]] = child_init(
                    child_key, shape, dtype=dtype, device=device
                )
            except FnnError as error:
                raise with_context(error, children.where(i)) from None
        return shape, params

    def apply(
        params: Params, x: Any, *, key: Key | None = None, **kwargs: Any
    ) -> tuple[Any, ...]:  # (y, vjp), or (y, vjp, new_state) given state= (see ApplyFn)
        if kwargs:
            check_keywords("serial", children.info, kwargs)
            if "state" in kwargs:  # a model with running statistics (BatchNorm): fnn/state.py
                return _apply_with_state(children, params, x, key, kwargs)
        child_params, given, positions = children.split_params(params)
        keys = children.init_keys(key) if key is not None else None
        autocasting = isinstance(x, torch.Tensor) and autocast_enabled(device_type(x))
        vjps = []
        applies = (
            debug.checked_applies(children.applies)
            if debug.is_checking_finite()
            else children.applies
        )
        for i, child_apply in enumerate(applies):
            try:
                if keys is not None:
                    x, vjp = child_apply(child_params[i], x, key=keys[i], **kwargs)
                elif kwargs:
                    x, vjp = child_apply(child_params[i], x, **kwargs)
                else:
                    x, vjp = child_apply(child_params[i], x)
            except FnnError as error:
                raise with_context(error, children.where(i)) from None
            if autocasting:
                vjp = _casting(vjp, x)
            vjps.append(vjp)
        return x, VJP(serial_backward, (tuple(vjps), given, positions))

    return declare(init, apply, children.info)


@backward
def serial_backward(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]], dy: Any
) -> tuple[Params, Any]:
    """y = fₙ(…f₁(x))   ⇒   walk the children's VJPs in reverse: dxᵢ₋₁ = vjpᵢ(dxᵢ)"""
    vjps, given, positions = residuals
    grads: list[Any] = [None] * len(vjps)
    for i in range(len(vjps) - 1, -1, -1):
        try:
            grads[i], dy = vjps[i](dy)
        except FnnError as error:
            raise with_context(error, f"serial[{i}]") from None
    return _gather(grads, given, positions), dy


@serial_backward.consumer
def _serial_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`serial_backward` for `fnn.core.backprop`: frees each child's residuals and each
    cotangent once used, and asks the first child for no `dx` when the caller needs none."""
    dy = box.pop()
    children, given, positions = box.pop()
    pending = list(children)
    del children  # from here on, `pending` holds the only reference to each child VJP
    grads: list[Any] = [None] * len(pending)
    for i in range(len(pending) - 1, -1, -1):
        child_box = [pending.pop(), dy]
        del dy
        try:
            grads[i], dy = backprop(child_box, need_dx or i > 0)
        except FnnError as error:
            raise with_context(error, f"serial[{i}]") from None
    return _gather(grads, given, positions), dy


# per example: the children's rules, walked in reverse
@serial_backward.per_example_rule
def _serial_per_example(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]], dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    vjps, given, positions = residuals
    grads: list[Any] = [None] * len(vjps)
    for i in range(len(vjps) - 1, -1, -1):
        rule = per_example_rule(vjps[i])
        try:
            grads[i], dy = rule(vjps[i].residuals, dy, need_dx or i > 0)
        except FnnError as error:
            raise with_context(error, f"serial[{i}]") from None
    return _gather(grads, given, positions), dy


def parallel(*layers: Layer) -> Layer:
    """Apply layer i to input i: `parallel(f, g)` maps `(x0, x1)` to `(f(x0), g(x1))`.

    Combine with `FanOut` and `FanInSum` for residual blocks.

    Args:
        *layers: one or more `Layer`s; layer i takes input i.

    Returns:
        `Layer(init, apply)`. `init(key, [shape_0, shape_1, …])` gives the list of the
            layers' output shapes and params `{"0": params_f, "1": params_g, …}`;
            `apply(params, (x0, x1, …), **kwargs)` gives `((y0, y1, …), vjp)`, a `key=` split
            among the layers; `vjp((dy0, dy1, …))` gives `(dparams, (dx0, dx1, …))`,
            `dparams` mirroring the given params and each `dxi` of `xi`'s shape.

    Raises:
        FnnError: no layer.
        FnnTypeError: an argument that is not a `Layer`.
        ShapeError: (from `init`, `apply` and the VJP) not one shape, input or cotangent per
            layer, or bad shapes, named by the layer's position: `parallel[1] Dense: ...`.

    Example:
        >>> init, apply = fnn.parallel(L.Dense(2), L.Identity())
        >>> shapes, params = init(fnn.random.key(0), [(-1, 3), (-1, 2)])
        >>> shapes
        [(-1, 2), (-1, 2)]
    """
    children = _Children("parallel", layers)
    count = len(layers)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        if not _is_shape_list(input_shape, count):
            raise ShapeError(
                f"parallel: expected a list of {count} input shapes, got {input_shape!r}"
            )
        shapes, params = [], {}
        for i, (child_init, child_key) in enumerate(zip(children.inits, children.init_keys(key))):
            try:
                shape, params[children.names[i]] = child_init(
                    child_key, input_shape[i], dtype=dtype, device=device
                )
            except FnnError as error:
                raise with_context(error, children.where(i)) from None
            shapes.append(shape)
        return shapes, params

    def apply(
        params: Params, x: Sequence[torch.Tensor], *, key: Key | None = None, **kwargs: Any
    ) -> tuple[Any, ...]:  # (ys, vjp), or (ys, vjp, new_state) given state= (see ApplyFn)
        if kwargs:
            check_keywords("parallel", children.info, kwargs)
            if "state" in kwargs:  # a model with running statistics (BatchNorm): fnn/state.py
                return _apply_with_state(children, params, x, key, kwargs)
        child_params, given, positions = children.split_params(params)
        if not isinstance(x, (tuple, list)) or len(x) != count:
            raise ShapeError(f"parallel: expected a tuple of {count} inputs, got {describe(x)}")
        keys = children.init_keys(key) if key is not None else None
        ys, vjps = [], []
        applies = (
            debug.checked_applies(children.applies)
            if debug.is_checking_finite()
            else children.applies
        )
        for i, child_apply in enumerate(applies):
            child_kwargs = dict(kwargs, key=keys[i]) if keys is not None else kwargs
            try:
                y, vjp = child_apply(child_params[i], x[i], **child_kwargs)
            except FnnError as error:
                raise with_context(error, children.where(i)) from None
            ys.append(y)
            vjps.append(vjp)
        return tuple(ys), VJP(parallel_backward, (tuple(vjps), given, positions))

    return declare(init, apply, children.info)


@backward
def parallel_backward(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]], dy: Sequence[Any]
) -> tuple[Params, tuple[Any, ...]]:
    """(y₀, y₁, …) = (f₀(x₀), f₁(x₁), …)   ⇒   dxᵢ = vjpᵢ(dyᵢ)"""
    vjps, given, positions = residuals
    if not isinstance(dy, (tuple, list)) or len(dy) != len(vjps):
        raise ShapeError(
            f"parallel VJP: expected a tuple of {len(vjps)} cotangents, got {describe(dy)}"
        )
    grads, dxs = [], []
    for i, (vjp, dyi) in enumerate(zip(vjps, dy)):
        try:
            g, dx = vjp(dyi)
        except FnnError as error:
            raise with_context(error, f"parallel[{i}]") from None
        grads.append(g)
        dxs.append(dx)
    return _gather(grads, given, positions), tuple(dxs)


@parallel_backward.consumer
def _parallel_consume(box: list[Any], need_dx: bool) -> tuple[Params, tuple[Any, ...]]:
    """`parallel_backward` for `fnn.core.backprop`: each child is consumed (its residuals and
    cotangent freed as used), so a residual block's branch keeps no more than a serial does."""
    dy = box.pop()
    vjps, given, positions = box.pop()
    if not isinstance(dy, tuple | list) or len(dy) != len(vjps):
        raise ShapeError(
            f"parallel VJP: expected a tuple of {len(vjps)} cotangents, got {describe(dy)}"
        )
    pending: list[Any] = list(vjps)
    cotangents: list[Any] = list(dy)
    del vjps, dy  # from here on, the lists hold the only references
    grads: list[Any] = [None] * len(pending)
    dxs: list[Any] = [None] * len(pending)
    for i in range(len(pending)):
        child_box = [pending[i], cotangents[i]]
        pending[i] = cotangents[i] = None
        try:
            grads[i], dxs[i] = backprop(child_box, need_dx)
        except FnnError as error:
            raise with_context(error, f"parallel[{i}]") from None
    return _gather(grads, given, positions), tuple(dxs)


# per example: each child's rule on its own cotangent
@parallel_backward.per_example_rule
def _parallel_per_example(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]], dy: Any, need_dx: bool
) -> tuple[Params, tuple[Any, ...]]:
    vjps, given, positions = residuals
    if not isinstance(dy, (tuple, list)) or len(dy) != len(vjps):
        raise ShapeError(
            f"parallel VJP: expected a tuple of {len(vjps)} cotangents, got {describe(dy)}"
        )
    grads, dxs = [], []
    for i, (vjp, dyi) in enumerate(zip(vjps, dy)):
        try:
            g, dx = per_example_rule(vjp)(vjp.residuals, dyi, need_dx)
        except FnnError as error:
            raise with_context(error, f"parallel[{i}]") from None
        grads.append(g)
        dxs.append(dx)
    return _gather(grads, given, positions), tuple(dxs)


def _child_vjps(
    residuals: tuple[tuple[VJP, ...], tuple[str, ...], tuple[int, ...]],
) -> tuple[VJP, ...]:
    return residuals[0]


serial_backward.holds_children(_child_vjps)
parallel_backward.holds_children(_child_vjps)


# Under torch.autocast, a layer's output and the cotangent that reaches it may differ in
# dtype (the next layer ran in bfloat16, or in float32): as autograd does, the cotangent is
# cast to the output's dtype before the layer's own VJP sees it. `serial` adds this wrapper
# only while autocast is on.
def _casting(vjp: VJP, y: Any) -> VJP:
    if not isinstance(y, torch.Tensor) or not y.is_floating_point():
        return vjp
    return VJP(autocast_backward, (vjp, y.dtype))


def _cast(dy: Any, dtype: torch.dtype) -> Any:
    if isinstance(dy, torch.Tensor) and dy.is_floating_point() and dy.dtype != dtype:
        return dy.to(dtype)
    return dy


@backward
def autocast_backward(residuals: tuple[VJP, torch.dtype], dy: Any) -> tuple[Params, Any]:
    """y = f(x) under autocast   ⇒   (dparams, dx) = vjp_f(dy cast to y's dtype)"""
    vjp, dtype = residuals
    grads: tuple[Params, Any] = vjp(_cast(dy, dtype))
    return grads


@autocast_backward.consumer
def _autocast_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    dy = box.pop()
    vjp, dtype = box.pop()
    return backprop([vjp, _cast(dy, dtype)], need_dx)


@autocast_backward.per_example_rule
def _autocast_per_example(
    residuals: tuple[VJP, torch.dtype], dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    vjp, dtype = residuals
    return per_example_rule(vjp)(vjp.residuals, _cast(dy, dtype), need_dx)


def _casting_child(residuals: tuple[VJP, torch.dtype]) -> tuple[VJP, ...]:
    return residuals[:1]


autocast_backward.holds_children(_casting_child)
