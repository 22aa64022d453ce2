"""Weight tying: one params entry used in two places of a model (GPT's embedding and head).

`tie(model, {"3.weight": "0.weight"})` is `model` whose params hold `0.weight` once and no
`3.weight`: its `apply` hands the model the same tensor at both paths, and its VJP adds
the gradient of the second use to the first. Params stay a plain dict; nothing is shared
behind the user's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .core import VJP, Layer, LayerInfo, Params, Shapes, backprop, backward, declare, layer_info
from .core import per_example_rule as _per_example_rule
from .errors import FnnError, FnnTypeError, TreeError, describe

__all__ = [
    "tie",
    "tie_backward",
]


def tie(layer: Layer, ties: Mapping[str, str]) -> Layer:
    """`layer` with each `target` param read from its `source`: `{target: source}`, dotted names.

    Names are `state_dict` names (`"3.weight"` is `params["3"]["weight"]`). The tied model's
    params are the model's without the targets (a parent dict left empty is dropped, as in a
    `state_dict` without that key); its `apply` gives the model the source tensor at both
    paths, and its VJP returns the source's gradient as the sum of both uses,
    `dW = dW_source + dW_target`, so an optimizer updates one tensor. This is torch's
    `head.weight = embedding.weight`, with params that stay a plain tree. To load a tied torch
    model, drop the target key from its `state_dict` first.

    Args:
        layer: any `Layer`.
        ties: `{target: source}`: each target path is read from its source path; both must
            be leaves of the same shape in `layer`'s params (e.g. an `Embedding(V, E)`'s
            `weight` and a `Dense(V)`'s on width `E`, both `(V, E)`).

    Returns:
        A `Layer(init, apply)`: `init` gives `layer`'s output shape and its params without
            the targets; `apply(params, x, **kwargs)` gives `layer`'s `(y, vjp)` with `vjp(dy)`
            giving `(dparams, dx)`, `dparams` shaped as the tied params.

    Raises:
        FnnTypeError: `layer` is not a `Layer`, or `ties` is not a mapping of str to str.
        FnnError: a target that is also a source, or a target given twice; (from `init`) a
            path that is not a leaf of the params, or shapes that differ.
        TreeError: (from `apply`) params holding a target, or missing a source.

    Example:
        >>> model = fnn.serial(L.Embedding(10, 4), L.Dense(10))
        >>> tied = fnn.tie(model, {"1.weight": "0.weight"})
        >>> _, params = tied.init(fnn.random.key(0), (-1, 3))
        >>> fnn.tree.to_state_dict(params).keys()
        dict_keys(['0.weight', '1.bias'])
        >>> y, vjp = tied.apply(params, torch.tensor([[1, 2, 3]]))
        >>> dparams, dx = vjp(torch.ones(1, 3, 10))
        >>> dparams["0"]["weight"].shape
        torch.Size([10, 4])
    """
    if not (isinstance(layer, tuple) and len(layer) == 2 and all(map(callable, layer))):
        hint = " (did you forget the call, e.g. Relu()?)" if callable(layer) else ""
        raise FnnTypeError(f"tie: expected a Layer (init, apply) pair, got {describe(layer)}{hint}")
    if not isinstance(ties, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in ties.items()
    ):
        raise FnnTypeError(
            f"tie: expected ties as a dict {{target: source}} of dotted param names, got {ties!r}"
        )
    if not ties:
        raise FnnError("tie: needs at least one {target: source} pair")
    for target, source in ties.items():
        if target in ties.values() or target == source:
            raise FnnError(f"tie: {target!r} is both a target and a source")
    pairs = tuple((tuple(t.split(".")), tuple(s.split("."))) for t, s in ties.items())
    inner_init, inner_apply = layer

    def init(
        key: Any,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        out_shape, params = inner_init(key, input_shape, dtype=dtype, device=device)
        for target, source in pairs:
            t_leaf, s_leaf = _get(params, target, "init"), _get(params, source, "init")
            if t_leaf.shape != s_leaf.shape:
                raise FnnError(
                    f"tie: {'.'.join(target)} has shape {tuple(t_leaf.shape)} but its source "
                    f"{'.'.join(source)} has {tuple(s_leaf.shape)}"
                )
            params = _without(params, target)
        return out_shape, params

    def apply(params: Params, x: Any, **kwargs: Any) -> tuple[Any, ...]:
        full, pruned = _with_targets(params, pairs)
        out = inner_apply(full, x, **kwargs)
        vjp = VJP(tie_backward, (out[1], pairs, pruned))
        return (out[0], vjp, *out[2:])

    inner = layer_info(layer)
    info = LayerInfo(
        f"tie({inner.name})",
        kind="wrapper",
        children=(layer,),
        keywords=inner.keywords,
        init_state=inner.init_state,
    )
    return declare(init, apply, info)


Path = tuple[str, ...]


def _get(params: Any, path: Path, where: str) -> torch.Tensor:
    node = params
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            raise FnnError(f"tie ({where}): {'.'.join(path)!r} is not in the model's params")
        node = node[name]
    if not isinstance(node, torch.Tensor):
        raise FnnError(f"tie ({where}): {'.'.join(path)!r} is not a tensor leaf of the params")
    return node


def _without(params: Params, path: Path) -> Params:
    """A copy of `params` (dicts along `path` only) without the leaf at `path`, empty parents dropped."""
    head, rest = path[0], path[1:]
    out = dict(params)
    if rest:
        child = _without(out[head], rest)
        if child:
            out[head] = child
        else:
            del out[head]
    else:
        del out[head]
    return out


def _with(params: Params, path: Path, leaf: torch.Tensor) -> Params:
    """A copy of `params` (dicts along `path` only) holding `leaf` at `path`."""
    out = dict(params)
    head, rest = path[0], path[1:]
    if not rest:
        if head in out:
            raise TreeError(
                f"tie: the params hold the tied entry {head!r}, which is read from its source; "
                "drop it (a tied model's params hold each tied tensor once)"
            )
        out[head] = leaf
    else:
        child = out.get(head, {})
        if not isinstance(child, Mapping):
            raise TreeError(f"tie: expected a dict at {head!r}, got {describe(child)}")
        out[head] = _with(dict(child), rest, leaf)
    return out


def _with_targets(
    params: Params, pairs: tuple[tuple[Path, Path], ...]
) -> tuple[Params, tuple[bool, ...]]:
    if not isinstance(params, Mapping):
        raise TreeError(f"tie: expected params as a dict, got {describe(params)}")
    pruned = []
    for target, source in pairs:
        try:
            leaf = _get(params, source, "apply")
        except FnnError as error:
            raise TreeError(str(error)) from None
        pruned.append(not _has_parent(params, target))
        params = _with(params, target, leaf)
    return params, tuple(pruned)


def _has_parent(params: Params, path: Path) -> bool:
    node: Any = params
    for name in path[:-1]:
        if not isinstance(node, Mapping) or name not in node:
            return False
        node = node[name]
    return True


def _fold(
    dparams: Params, pairs: tuple[tuple[Path, Path], ...], pruned: tuple[bool, ...]
) -> Params:
    """Add each target's gradient to its source's and drop the target (mirroring the params)."""
    for (target, source), drop_parent in zip(pairs, pruned):
        extra = _get(dparams, target, "VJP")
        dparams = _without_keep(dparams, target, drop_parent)
        dparams = _replace(dparams, source, _get(dparams, source, "VJP") + extra)
    return dparams


def _without_keep(params: Params, path: Path, drop_parent: bool) -> Params:
    """`_without`, keeping an emptied parent dict unless the given params had none."""
    if drop_parent:
        return _without(params, path)
    out = dict(params)
    head, rest = path[0], path[1:]
    out[head] = _without_keep(out[head], rest, False) if rest else None
    if not rest:
        del out[head]
    return out


def _replace(params: Params, path: Path, leaf: torch.Tensor) -> Params:
    out = dict(params)
    head, rest = path[0], path[1:]
    out[head] = _replace(out[head], rest, leaf) if rest else leaf
    return out


@backward
def tie_backward(residuals: tuple[VJP, Any, tuple[bool, ...]], dy: Any) -> tuple[Params, Any]:
    """y = f(W at source and target)   ⇒   dW = ∂f/∂W_source + ∂f/∂W_target,  dx as f's"""
    vjp, pairs, pruned = residuals
    dparams, dx = vjp(dy)
    return _fold(dparams, pairs, pruned), dx


@tie_backward.consumer
def _tie_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`tie_backward` for `fnn.core.backprop`: the model's own VJP is consumed."""
    dy = box.pop()
    vjp, pairs, pruned = box.pop()
    inner = [vjp, dy]
    del vjp, dy  # `inner` holds the only references: the model frees its residuals as used
    dparams, dx = backprop(inner, need_dx)
    return _fold(dparams, pairs, pruned), dx


# per example: the same sum, on gradients with a leading batch axis
@tie_backward.per_example_rule
def _tie_per_example(
    residuals: tuple[VJP, Any, tuple[bool, ...]], dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    vjp, pairs, pruned = residuals
    dparams, dx = _per_example_rule(vjp)(vjp.residuals, dy, need_dx)
    return _fold(dparams, pairs, pruned), dx


def _tied_vjp(residuals: tuple[VJP, Any, tuple[bool, ...]]) -> tuple[VJP, ...]:
    return (residuals[0],)


tie_backward.holds_children(_tied_vjp)
