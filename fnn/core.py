"""The two core types: a `Layer` is `(init, apply)`; a `VJP` is `(backward, residuals)`.

A layer's `apply(params, x)` returns `(y, vjp)`. The `vjp` is closure-free: a
module-level `backward` function and the tensors it needs (`residuals`), so it
pickles, replays, and keeps alive exactly what it names:

    y, vjp = apply(params, x)
    dparams, dx = vjp(dy)          # == vjp.backward(vjp.residuals, dy)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeAlias, overload

import torch
from typing_extensions import Protocol

from .errors import FnnError

__all__ = [
    "Layer",
    "VJP",
    "Params",
    "Shape",
    "Shapes",
    "Key",
    "PyTree",
    "InitFn",
    "ApplyFn",
    "BackwardFn",
    "LayerInfo",
    "declare",
    "layer_info",
    "Backward",
    "BackwardRules",
    "backward",
    "rules_of",
    "backprop",
    "layer_name",
    "check_keywords",
    "per_example_rule",
]

PyTree: TypeAlias = Any
"""Nested dicts, lists and tuples with tensors (or plain values) as leaves."""
Params: TypeAlias = dict[str, Any]
"""A layer's parameters: nested dicts with `str` keys and tensor leaves."""
Shape: TypeAlias = tuple[int, ...]
"""A tensor shape, batch first, with `-1` for "any batch size"."""
Shapes: TypeAlias = Shape | list["Shapes"]
"""One shape, or a list of them for layers with several inputs or outputs (nested for
`parallel` inside `parallel`)."""
Key: TypeAlias = torch.Tensor
"""An `fnn.random` key: a CPU int64 tensor of shape `(2,)`."""


class BackwardFn(Protocol):
    """`backward(residuals, dy) -> (dparams, dx)` for layers, `-> dpred` for losses."""

    def __call__(self, residuals: Any, dy: Any, /) -> Any: ...


class VJP(NamedTuple):
    """A closure-free vector-Jacobian product: `vjp(dy) == backward(residuals, dy)`.

    A layer's `apply` returns one beside its output; calling it with a cotangent `dy` of the
    output's shape gives `(dparams, dx)`, with `dparams` mirroring the params and `dx` of
    the input's shape (a loss's VJP gives `dpred`).

    Attributes:
        backward: `backward(residuals, dy)`, a module-level function, so the VJP pickles.
        residuals: what `backward` needs: a pytree of tensors and plain Python values.

    Example:
        >>> def double_backward(residuals, dy):
        ...     return {}, 2 * dy
        >>> VJP(double_backward, None)(torch.ones(3))
        ({}, tensor([2., 2., 2.]))
    """

    backward: BackwardFn
    residuals: Any

    def __call__(self, dy: Any) -> Any:
        return self.backward(self.residuals, dy)


class InitFn(Protocol):
    """`init(key, input_shape, *, dtype, device) -> (output_shape, params)`.

    `input_shape` is typed `Shapes` even for a one-input layer: `serial` hands each layer
    the previous one's output shape, so a layer checks what it gets (fnn's raise a
    `ShapeError` for a list where they expect one shape).
    """

    def __call__(
        self,
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = ...,
        device: torch.device | str = ...,
    ) -> tuple[Shapes, Params]: ...


class ApplyFn(Protocol):
    """`apply(params, x, **kwargs) -> (y, vjp)`; `x`/`y` are tensors or tuples of them.

    The first two parameters must be named `params` and `x` (callers may pass any
    keywords, so the names are part of the signature), and `**kwargs` must be accepted:
    combinators pass keywords such as `key=` to every layer.

    Given `state=` (a model with running statistics, see `fnn.state`), a model returns
    `(y, vjp, new_state)`; the type says "a tuple" there, so that both
    `y, vjp = apply(params, x)` and `y, vjp, state = apply(params, x, state=state)`
    type-check. A layer whose `apply` returns that third item declares `-> tuple[Any, ...]`.
    """

    # The state= form comes first: a state of unknown type (Any) picks it, so it unpacks too.
    @overload
    def __call__(
        self, params: Params, x: Any, *, state: Mapping[str, Any], **kwargs: Any
    ) -> tuple[Any, ...]: ...
    @overload
    def __call__(
        self, params: Params, x: Any, *, state: None = ..., **kwargs: Any
    ) -> tuple[Any, VJP]: ...


class Layer(NamedTuple):
    """A layer: a pair of pure functions, so `init, apply = Dense(25)` works.

    Attributes:
        init: `init(key, input_shape, *, dtype=torch.float32, device="cpu")` gives
            `(output_shape, params)`; shapes are tuples, batch first, `-1` for any batch size.
        apply: `apply(params, x, **kwargs)` gives `(y, vjp)`, and `vjp(dy)`, `dy` of `y`'s
            shape, gives `(dparams, dx)`, `dparams` mirroring `params` and `dx` of `x`'s shape.

    Example:
        A custom layer `y = s·x` with one scalar parameter `s`:

        >>> def scale_init(key, input_shape, *, dtype=torch.float32, device="cpu"):
        ...     return input_shape, {"s": torch.ones((), dtype=dtype, device=device)}
        >>> def scale_apply(params, x, **kwargs):
        ...     return params["s"] * x, fnn.VJP(scale_backward, (params["s"], x))
        >>> def scale_backward(residuals, dy):  # y = s x  ⇒  ds = Σ dy x,  dx = s dy
        ...     s, x = residuals
        ...     return {"s": (dy * x).sum()}, s * dy
        >>> init, apply = fnn.Layer(scale_init, scale_apply)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 2))
        >>> y, vjp = apply(params, torch.ones(4, 2))
        >>> dparams, dx = vjp(torch.ones(4, 2))
        >>> out_shape, dparams, dx.shape
        ((-1, 2), {'s': tensor(8.)}, torch.Size([4, 2]))
    """

    init: InitFn
    apply: ApplyFn


# ---------------------------------------------------------------------------------------
# What engines read: a layer's declaration (`LayerInfo`) and a backward's rules (`Backward`)


class LayerInfo(NamedTuple):
    """What fnn's engines read from a layer, declared once by its constructor (`declare`).

    `summary`, `init_state`, `check_finite`, `per_example_grads` and `train_step` read these
    fields through `layer_info`; none of them reads anything else from a layer. A user's own
    `Layer(init, apply)` has no declaration: `layer_info` then gives its function's name and
    `keywords=None` (any keyword accepted).

    Attributes:
        name: the constructor's name, used in messages and summaries (`"Dense"`).
        kind: `"layer"`, a combinator (`"serial"`, `"parallel"`: `children` are its layers,
            params nest under `"0"`, `"1"`, …) or `"wrapper"` (remat, with_vjp, bind:
            `children` holds the wrapped layer, which shares its params).
        children: the layers inside a combinator or wrapper; `()` otherwise.
        keywords: the keywords `apply` uses (`{"key"}` for Dropout); `None` if unknown.
            A model given a keyword none of its layers uses raises an `FnnError`.
        init_state: `init_state(input_shape, *, dtype, device) -> (output_shape, state)` for a
            layer with running statistics (BatchNorm); `None` otherwise (see `fnn.state`).
        step: how `fnn.train_step` may compute this layer inline (plain data, e.g.
            `("dense", out_features, bias)`), or `None`: the step then runs its VJP.
        backward: the backward function the layer's VJP names when `step` is set; the step
            computes the layer inline only while that function is still the one its module
            names, so a patched backward is always the one that runs.

    Example:
        >>> fnn.core.layer_info(L.Dropout(0.5)).keywords
        frozenset({'key'})
    """

    name: str
    kind: str = "layer"
    children: tuple[Layer, ...] = ()
    keywords: frozenset[str] | None = frozenset()
    init_state: Any = None
    step: Any = None
    backward: Any = None


class _DeclaredApply(functools.partial):  # type: ignore[type-arg]
    """A layer's `apply` with its `LayerInfo`: called exactly as the function it holds."""

    __slots__ = ("info",)
    info: LayerInfo

    def __repr__(self) -> str:
        return f"<apply of {self.info.name}>"


def declare(init: InitFn, apply: Callable[..., Any], info: LayerInfo) -> Layer:
    """`Layer(init, apply)` whose `apply` carries `info`, the layer's declaration for engines.

    Args:
        init: the layer's `init(key, input_shape, *, dtype, device)`.
        apply: the layer's `apply(params, x, **kwargs) -> (y, vjp)`.
        info: what engines may read about the layer (see `LayerInfo`).

    Returns:
        A `Layer(init, apply)`; its `apply` calls the given one unchanged, and
            `layer_info(layer)` returns `info`.

    Example:
        >>> def init(key, shape, *, dtype=torch.float32, device="cpu"):
        ...     return shape, {}
        >>> def apply(params, x, **kwargs):
        ...     return 2 * x, fnn.VJP(double_backward, None)
        >>> def double_backward(residuals, dy):
        ...     return {}, 2 * dy
        >>> layer = fnn.core.declare(init, apply, fnn.core.LayerInfo("Double"))
        >>> fnn.core.layer_info(layer).name
        'Double'
    """
    declared = _DeclaredApply(apply)
    declared.info = info
    return Layer(init, declared)


def layer_info(layer: Layer | Callable[..., Any]) -> LayerInfo:
    """The declaration of a layer (or of its `apply`): see `LayerInfo`.

    Args:
        layer: a `Layer`, or its `apply`.

    Returns:
        The `LayerInfo` its constructor declared; for a layer fnn did not make, one with its
            function's name and `keywords=None`.

    Example:
        >>> fnn.core.layer_info(fnn.serial(L.Dense(2), L.Relu())).kind
        'serial'
    """
    apply = layer[1] if isinstance(layer, tuple) else layer
    if type(apply) is _DeclaredApply:
        return apply.info
    qualname = getattr(apply, "__qualname__", type(apply).__name__)
    return LayerInfo(qualname.split(".<locals>")[0].split(".")[0], keywords=None)


def layer_name(layer: Layer | Callable[..., Any]) -> str:
    """The constructor name of a layer made by fnn ("Dense"), else its apply's name.

    Args:
        layer: a `Layer`, or its `apply`.

    Returns:
        `layer_info(layer).name`.

    Example:
        >>> fnn.core.layer_name(L.Dense(3))
        'Dense'
    """
    return layer_info(layer).name


def check_keywords(where: str, info: LayerInfo, kwargs: Mapping[str, Any]) -> None:
    """Raise an `FnnError` if `kwargs` holds a keyword no layer of the model uses.

    Args:
        where: the caller, for the message (`"value_and_grad"`).
        info: the model's declaration; `keywords=None` accepts anything.
        kwargs: the keywords given.

    Raises:
        FnnError: a keyword outside `info.keywords`, naming the ones the model takes.

    Example:
        >>> info = fnn.core.layer_info(fnn.serial(L.Dense(2), L.Dropout(0.5)))
        >>> fnn.core.check_keywords("f", info, {"key": fnn.random.key(0)})
    """
    if not kwargs or info.keywords is None:
        return
    unknown = sorted(k for k in kwargs if k not in info.keywords)
    if unknown:
        takes = ", ".join(f"{k}=" for k in sorted(info.keywords)) or "no keywords"
        raise FnnError(
            f"{where}: unexpected keyword {', '.join(f'{k}=' for k in unknown)}; "
            f"this model ({info.name}) takes {takes}"
        )


class BackwardRules:
    """The variants engines may run in place of one backward function: its declaration.

    `@fnn.core.backward` makes one for a module-level backward function and attaches it
    (the function stays a plain function: it pickles by name, and `torch.compile` traces it
    on every torch fnn supports). The variants are declared right below the function, each
    with the same math:

    - `consume(box, need_dx) -> (dparams, dx or None)`, with `box = [residuals, dy]` that it
      empties: lets backpropagation free residuals and cotangents as soon as they are used
      and skip `dx` when nobody needs it (the first layer of a model);
    - `per_example(residuals, dy, need_dx) -> (dparams, dx)`: the VJP with the batch axis
      kept on every `dparams` leaf (`fnn.per_example_grads`); `example_wise()` declares a
      parameter-free backward whose output row n depends on input row n only;
    - `children(residuals) -> tuple[VJP, ...]`: the VJPs held inside (combinators), so an
      engine uses a variant only if every child VJP has one.

    A backward replaced by another function (patched, or swapped with `fnn.with_vjp`) has no
    variants: engines then call it as it is. Engines read the rules with `rules_of`.

    Args:
        function: the backward, `function(residuals, dy) -> (dparams, dx)`, module-level.

    Example:
        >>> @fnn.core.backward
        ... def double_backward(residuals, dy):      # y = 2x  ⇒  dx = 2 dy
        ...     return {}, 2 * dy
        >>> double_backward.example_wise()
        >>> fnn.core.rules_of(double_backward).per_example is not None
        True
    """

    def __init__(self, function: Callable[[Any, Any], Any]):
        self.function = function
        self.consume: ConsumerFn | None = None
        self.per_example: Callable[[Any, Any, bool], tuple[Params, Any]] | None = None
        self.children: Callable[[Any], tuple[VJP, ...]] | None = None

    def consumer(self, consume: ConsumerFn) -> ConsumerFn:
        """Declare `consume(box, need_dx)` as this backward's memory-freeing variant."""
        self.consume = consume
        return consume

    def per_example_rule(
        self, rule: Callable[[Any, Any, bool], tuple[Params, Any]]
    ) -> Callable[[Any, Any, bool], tuple[Params, Any]]:
        """Declare `rule(residuals, dy, need_dx)` as this backward's per-example variant."""
        self.per_example = rule
        return rule

    def example_wise(self) -> None:
        """Declare this (parameter-free) backward example-wise: its VJP is its own rule."""
        self.per_example = functools.partial(_example_wise, self.function)

    def holds_children(self, children: Callable[[Any], tuple[VJP, ...]]) -> None:
        """Declare `children(residuals)`, the child VJPs a combinator's residuals hold."""
        self.children = children


class Backward(Protocol):
    """A backward function declared with `@fnn.core.backward`: called as itself,
    `backward(residuals, dy)`, with its `BackwardRules`' declaring methods at hand
    (`@dense_backward.consumer`, `.per_example_rule`, `.example_wise()`, `.holds_children`).
    """

    __name__: str
    function: Callable[[Any, Any], Any]

    def __call__(self, residuals: Any, dy: Any, /) -> Any: ...
    def consumer(self, consume: ConsumerFn) -> ConsumerFn: ...
    def per_example_rule(
        self, rule: Callable[[Any, Any, bool], tuple[Params, Any]]
    ) -> Callable[[Any, Any, bool], tuple[Params, Any]]: ...
    def example_wise(self) -> None: ...
    def holds_children(self, children: Callable[[Any], tuple[VJP, ...]]) -> None: ...


def backward(function: Callable[[Any, Any], Any]) -> Backward:
    """Decorator: declare a module-level backward function's variants (see `BackwardRules`).

    The function itself is returned, unchanged as a function, with its rules attached: the
    declaring methods (`.consumer`, `.per_example_rule`, `.example_wise`,
    `.holds_children`) and `.function` (itself) for the variants written below it.

    Args:
        function: `backward(residuals, dy) -> (dparams, dx)`, defined at module level.

    Returns:
        `function`, with its `BackwardRules` attached (read them with `rules_of`).

    Example:
        >>> @fnn.core.backward
        ... def negate_backward(residuals, dy):      # y = −x  ⇒  dx = −dy
        ...     return {}, -dy
        >>> negate_backward(None, torch.ones(1))
        ({}, tensor([-1.]))
    """
    rules = BackwardRules(function)
    function.__dict__.update(
        __fnn_backward__=rules,
        function=function,
        consumer=rules.consumer,
        per_example_rule=rules.per_example_rule,
        example_wise=rules.example_wise,
        holds_children=rules.holds_children,
    )
    return function  # type: ignore[return-value]


def rules_of(backward_fn: Any) -> BackwardRules | None:
    """The `BackwardRules` declared for a backward function, or `None` (a plain function).

    Args:
        backward_fn: a VJP's `backward`.

    Returns:
        Its rules, or `None` if it was not declared with `@fnn.core.backward`.

    Example:
        >>> fnn.core.rules_of(fnn.layers.dense.dense_backward).consume is not None
        True
    """
    rules = getattr(backward_fn, "__fnn_backward__", None)
    return rules if type(rules) is BackwardRules else None


def _example_wise(
    function: Callable[[Any, Any], Any], residuals: Any, dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    del need_dx
    grads: tuple[Params, Any] = function(residuals, dy)
    return grads


# Backpropagation inside fnn (value_and_grad, train_step) may *consume* a VJP instead of
# calling it. The VJP and its cotangent travel in a list, `box = [vjp, dy]`, that the callee
# empties: then no caller's frame keeps them alive, each residual and each cotangent is freed
# as soon as the backward pass is done with it (the peak memory of a large-batch step), and a
# layer may skip `dx` when nobody needs it. Calling `vjp(dy)` directly is unaffected.
ConsumerFn: TypeAlias = Callable[[list[Any], bool], tuple[Params, Any]]
"""`consumer(box, need_dx) -> (dparams, dx or None)`, with `box = [residuals, dy]`."""


def backprop(box: list[Any], need_dx: bool = True) -> tuple[Params, Any]:
    """`(dparams, dx)` for `box = [vjp, dy]`, emptying `box` so memory is freed as used.

    Runs the VJP's `consume` variant when its backward declares one (see `Backward`), else
    the backward itself. The caller must keep no other reference to the VJP or to `dy` for
    the memory to be released early.

    Args:
        box: `[vjp, dy]`, emptied by the call.
        need_dx: whether the caller needs `dx` (`False` lets the first layer skip it).

    Returns:
        `(dparams, dx)` as `vjp(dy)` gives them; `dx` may be `None` when not needed.

    Example:
        >>> _, vjp = L.Dense(2).apply({"weight": torch.ones(2, 3), "bias": torch.zeros(2)},
        ...                           torch.ones(4, 3))
        >>> dparams, dx = fnn.core.backprop([vjp, torch.ones(4, 2)], need_dx=False)
        >>> dx is None, dparams["weight"].shape
        (True, torch.Size([2, 3]))
    """
    dy = box.pop()
    backward_fn, residuals = box.pop()
    rules = getattr(backward_fn, "__fnn_backward__", None)
    consume = rules.consume if type(rules) is BackwardRules else None
    if consume is None:
        grads: tuple[Params, Any] = backward_fn(residuals, dy)
        return grads
    box += (residuals, dy)
    del residuals, dy
    return consume(box, need_dx)


def per_example_rule(vjp: VJP) -> Callable[[Any, Any, bool], tuple[Params, Any]]:
    """The per-example rule a VJP's backward declares (see `Backward`).

    Args:
        vjp: a layer's VJP.

    Returns:
        `rule(residuals, dy, need_dx) -> (dparams, dx)`, `dparams` with a batch axis.

    Raises:
        FnnError: the backward declares no rule (a plain function).

    Example:
        >>> _, vjp = L.Dense(2).apply({"weight": torch.ones(2, 3), "bias": torch.zeros(2)},
        ...                           torch.ones(4, 3))
        >>> dparams, _ = fnn.core.per_example_rule(vjp)(vjp.residuals, torch.ones(4, 2), False)
        >>> dparams["weight"].shape
        torch.Size([4, 2, 3])
    """
    backward_fn = vjp.backward
    rules = rules_of(backward_fn)
    rule = rules.per_example if rules is not None else None
    if rule is None:
        raise FnnError(
            f"per_example_grads: the backward {getattr(backward_fn, '__name__', backward_fn)!r} "
            "declares no per-example rule"
        )
    return rule
