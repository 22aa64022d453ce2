"""Explicit state: running statistics (BatchNorm's) that travel beside the params, never inside.

A model's *state* is a pytree nested like its params — `"0"`, `"1"`, … under
`serial` and `parallel` — with an entry only for the layers that have one, so
`to_state_dict(params) | to_state_dict(state)` has exactly the names of the
matching torch model's `state_dict()`. It receives no gradients.

- `init_state(model, input_shape)` makes the initial state (`{}` for a stateless model).
- `apply(params, x, state=state, train=True)` returns `(y, vjp, new_state)`:
  given a state, a model hands back the next one as a third output. Without
  `state=`, stateless models keep the plain `(y, vjp)` contract.
- `value_and_grad(apply, loss)(params, x, target, state=state, train=True)`
  returns `(value, grads, new_state)` likewise.
- `split(tree, like=state)` separates a tree of params and state (a loaded
  torch `state_dict`) into `(params, state)`; `bind(layer, state, train=...)`
  fixes the state and gives a stateless layer (for `check_vjp` or inference).

A layer with state declares `init_state(input_shape, *, dtype, device) ->
(output_shape, state)` in its `fnn.core.LayerInfo` and accepts `state=` and `train=`.

    >>> model = fnn.serial(L.Conv(4, 3), L.BatchNorm(), L.Relu())
    >>> state = init_state(model, (-1, 1, 8, 8))
    >>> list(fnn.tree.to_state_dict(state))
    ['1.running_mean', '1.running_var', '1.num_batches_tracked']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from typing_extensions import Protocol

from . import random
from .core import VJP, Layer, Params, PyTree, Shapes, declare, layer_info
from .errors import FnnError, FnnTypeError, TreeError, describe, with_context

__all__ = ["init_state", "split", "bind", "InitStateFn"]


class InitStateFn(Protocol):
    """`init_state(input_shape, *, dtype, device) -> (output_shape, state)`.

    What a layer with state (BatchNorm) declares in its `LayerInfo`; the state is a pytree."""

    def __call__(
        self,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = ...,
        device: torch.device | str = ...,
    ) -> tuple[Shapes, PyTree]: ...


def init_state(
    layer: Layer,
    input_shape: Shapes,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> PyTree:
    """The initial state of `layer` for inputs of `input_shape`: a dict nested like its params.

    Args:
        layer: any `Layer`, e.g. a `serial` model.
        input_shape: the model's input shape, e.g. `(-1, channels, height, width)`, or a list
            of shapes for several inputs.
        dtype: floating dtype of the state's statistics.
        device: device of the state's tensors.

    Returns:
        The state: only layers with state (BatchNorm) have an entry, nested under the same
            `"0"`, `"1"`, … keys as the params (BatchNorm's: `running_mean` and `running_var`
            of shape `(features,)`, `num_batches_tracked` 0-d int64); `{}` for a stateless model.

    Raises:
        FnnTypeError: `layer` is not a `Layer`.
        FnnError: an input shape a layer does not accept (named by its path in the model).

    Example:
        >>> model = fnn.serial(L.Dense(3), L.BatchNorm())
        >>> state = fnn.init_state(model, (-1, 2))
        >>> state["1"]["running_var"]
        tensor([1., 1., 1.])
        >>> fnn.init_state(fnn.serial(L.Dense(3)), (-1, 2))
        {}
    """
    if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
        raise FnnTypeError(
            f"init_state: expected a Layer (init, apply) pair, got {describe(layer)}"
        )
    return _init_state(layer, input_shape, dtype, device)[1]


def _init_state(
    layer: Layer, shape: Any, dtype: torch.dtype, device: torch.device | str
) -> tuple[Any, PyTree]:
    init, _ = layer
    info = layer_info(layer)
    if info.init_state is not None:
        own: InitStateFn = info.init_state
        return own(shape, dtype=dtype, device=device)
    children, kind = info.children, info.kind
    if kind not in ("serial", "parallel"):
        return init(random.key(0), shape, dtype=dtype, device=device)[0], {}
    if kind == "parallel" and (not isinstance(shape, list | tuple) or len(shape) != len(children)):
        raise FnnError(f"parallel: expected a list of {len(children)} input shapes, got {shape!r}")
    state, shapes = {}, []
    for i, child in enumerate(children):
        try:
            out, child_state = _init_state(
                child, shape if kind == "serial" else shape[i], dtype, device
            )
        except FnnError as error:
            raise with_context(error, f"{kind}[{i}]") from None
        if child_state:
            state[str(i)] = child_state
        shape = out if kind == "serial" else shape
        shapes.append(out)
    return (shape if kind == "serial" else shapes), state


def split(tree: Mapping[str, Any], like: PyTree) -> tuple[Params, PyTree]:
    """Separate a tree holding params and state (a torch `state_dict` with buffers) in two.

    Args:
        tree: nested dicts holding both, e.g. `fnn.tree.from_state_dict(model.state_dict())`.
        like: a state tree whose keys name the state leaves, e.g. `init_state(...)`.

    Returns:
        `(params, state)`: the leaves of `tree` that are not in `like`, and those that are,
            each nested as in `tree` (tensors unchanged).

    Raises:
        TreeError: `tree` or `like` is not a dict, or `tree` lacks a key of `like`.

    Example:
        >>> torch_model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
        >>> model = fnn.serial(L.Dense(3), L.BatchNorm())
        >>> both = fnn.tree.from_state_dict(torch_model.state_dict())
        >>> params, state = fnn.state.split(both, like=fnn.init_state(model, (-1, 2)))
        >>> sorted(params["1"]), sorted(state["1"])
        (['bias', 'weight'], ['num_batches_tracked', 'running_mean', 'running_var'])
    """
    if not isinstance(tree, Mapping) or not isinstance(like, Mapping):
        raise TreeError(f"split: expected two dicts, got {describe(tree)} and {describe(like)}")
    missing = [k for k in like if k not in tree]
    if missing:
        raise TreeError(f"split: the tree has no entries {missing} for the state's keys")
    params: Params = {}
    state: dict[str, Any] = {}
    for k, v in tree.items():
        if k not in like:
            params[k] = v
        elif isinstance(like[k], Mapping):
            params_k, state[k] = split(v, like[k])
            if params_k:
                params[k] = params_k
        else:
            state[k] = v
    return params, state


def bind(layer: Layer, state: Mapping[str, Any], **kwargs: Any) -> Layer:
    """`layer` with its state (and keywords such as `train=`) fixed: a stateless layer.

    For inference (`train=False`) and for `fnn.testing.check_vjp`.

    Args:
        layer: a `Layer` with state (or a model holding one), e.g. `BatchNorm()`.
        state: its state, as `init_state` gives it.
        **kwargs: keywords given to every `apply` call, e.g. `train=False`.

    Returns:
        A `Layer(init, apply)` with `layer`'s `init`; `apply(params, x)` returns `(y, vjp)`
            as `layer` does with `state=state` (shapes unchanged), and drops the new state.

    Example:
        >>> bn = L.BatchNorm()
        >>> _, params = bn.init(fnn.random.key(0), (-1, 3))
        >>> state = fnn.init_state(bn, (-1, 3), dtype=torch.float64)
        >>> frozen = fnn.state.bind(bn, state, train=True)
        >>> fnn.testing.check_vjp(frozen, params, torch.randn(4, 3))
    """
    init, apply = layer

    def bound_apply(params: Params, x: Any, **more: Any) -> tuple[Any, VJP]:
        y, vjp, _ = apply(params, x, state=state, **kwargs, **more)
        return y, vjp

    inner = layer_info(layer)
    info = inner._replace(
        kind="wrapper",
        children=(layer,),
        init_state=None,
        keywords=None if inner.keywords is None else inner.keywords - {"state"} - set(kwargs),
        step=None,
    )
    return declare(init, bound_apply, info)
