"""Normalisation layers: `LayerNorm` (last axis) and `BatchNorm` (axis 1, with running statistics).

Both run on aten's fused kernels, forward and backward (`native_layer_norm`,
`native_batch_norm` and their `_backward`s), and keep the input plus the
per-row or per-channel mean and 1/σ as residuals.

`BatchNorm`'s running mean and variance are an explicit *state*, never hidden
in the params and never given gradients: `apply(params, x, state=state,
train=True)` returns `(y, vjp, new_state)`. `fnn.init_state(model, shape)`
makes the initial state; `docs/state.md` explains how it travels through
`serial`, `parallel` and `value_and_grad`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core import VJP, Key, Layer, LayerInfo, Params, PyTree, Shape, Shapes, backward, declare
from ..errors import FnnError, ShapeError, TreeError, describe
from . import _checks

__all__ = ["LayerNorm", "BatchNorm"]

aten = torch.ops.aten


def _affine_params(
    name: str, features: int, dtype: torch.dtype, device: torch.device | str
) -> Params:
    """torch's initial affine params: `weight` ones, `bias` zeros, both `(features,)`."""
    _checks.init_dtype(name, dtype, device)
    return {
        "weight": torch.ones(features, dtype=dtype, device=device),
        "bias": torch.zeros(features, dtype=dtype, device=device),
    }


def _affine_leaves(
    name: str, params: Params, x: object, axis: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(weight, bias)` from `params`, with `x` a float tensor whose `axis` matches their length."""
    try:
        weight, bias = params["weight"], params["bias"]
        if len(params) != 2:
            raise KeyError
    except (KeyError, TypeError):
        _checks.param_leaves(name, params, ["weight", "bias"])
        raise
    _checks.input_like(name, x, weight)
    assert isinstance(x, torch.Tensor)
    features = weight.shape[0] if weight.ndim == 1 else -1
    if x.ndim < (1 if axis == -1 else 2) or x.shape[axis] != features or bias.shape != weight.shape:
        if weight.ndim != 1 or bias.shape != weight.shape:
            raise ShapeError(
                f"{name}: params['weight'] and params['bias'] must both have shape (features,), "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        where = "(..., {0})" if axis == -1 else "(N, {0}, ...)"
        raise ShapeError(
            f"{name}: expected an input of shape {where.format(features)}, got {tuple(x.shape)}"
        )
    return weight, bias


def LayerNorm(eps: float = 1e-5) -> Layer:
    """Normalise over the last axis, then scale and shift, as `torch.nn.LayerNorm(features)`.

    `y = (x − μ) / √(σ² + eps) · weight + bias`, with μ and σ² (biased) each row's mean and
    variance over the last axis.

    Args:
        eps: added to the variance, for numerical stability.

    Returns:
        `Layer(init, apply)`. `init(key, (..., features))` gives the same shape and params
            `{"weight": (features,), "bias": (features,)}`, ones and zeros; `apply(params, x)`,
            `x` of shape `(..., features)`, gives `(y, vjp)` with `y` of `x`'s shape;
            `vjp(dy)`, `dy` of `y`'s shape, gives `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnTypeError: `eps` is not a number.
        ShapeError: (from `init` and `apply`) an input whose last axis does not match the
            params.

    Example:
        >>> init, apply = LayerNorm()
        >>> out_shape, params = init(fnn.random.key(0), (-1, 4))
        >>> y, vjp = apply(params, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        >>> y
        tensor([[-1.3416, -0.4472,  0.4472,  1.3416]])
        >>> dparams, dx = vjp(torch.ones_like(y))
    """
    _checks.number("LayerNorm", "eps", eps)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape = _checks.input_shape("LayerNorm", input_shape)
        if shape[-1] < 1:
            raise ShapeError(f"LayerNorm: the last axis must have ≥ 1 features, got {shape}")
        return shape, _affine_params("LayerNorm", shape[-1], dtype, device)

    def apply(params: Params, x: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, VJP]:
        del kwargs
        weight, bias = _affine_leaves("LayerNorm", params, x, -1)
        normalized = [x.shape[-1]]
        y, mean, rstd = aten.native_layer_norm(x, normalized, weight, bias, eps)
        return y, VJP(layer_norm_backward, (x, weight, bias, mean, rstd, normalized))

    return declare(init, apply, LayerInfo("LayerNorm"))


# y = γ x̂ + β, x̂ = (x − μ)/σ per row   ⇒   dγ = Σ dy x̂,  dβ = Σ dy,  dx = (g − mean(g) − x̂ mean(g x̂)) / σ  with g = γ dy
@backward
def layer_norm_backward(
    residuals: tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[int]
    ],
    dy: torch.Tensor,
) -> tuple[Params, torch.Tensor]:
    x, weight, bias, mean, rstd, normalized = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("LayerNorm", dy, x.shape, x)
    dx, dweight, dbias = aten.native_layer_norm_backward(
        dy, x, normalized, mean, rstd, weight, bias, [True, True, True]
    )
    return {"weight": dweight, "bias": dbias}, dx


STATE_LEAVES = ("running_mean", "running_var", "num_batches_tracked")


def BatchNorm(momentum: float | None = 0.1, eps: float = 1e-5) -> Layer:
    """Normalise each channel (axis 1) over the batch and spatial axes, as `torch.nn.BatchNorm2d`.

    `y = (x − μ) / √(σ² + eps) · weight + bias`. The state (from `fnn.init_state`, never
    differentiated) is `{"running_mean": (C,) zeros, "running_var": (C,) ones,
    "num_batches_tracked": 0-d int64}`, torch's buffer names. `train=True` normalises with
    the batch's μ and (biased) σ² and moves the running statistics toward them:
    `running ← (1 − momentum)·running + momentum·batch`, with the unbiased variance, and
    `num_batches_tracked + 1`. `train=False` normalises with the running statistics and
    returns the state unchanged.

    Args:
        momentum: weight of the batch statistics in the running ones; `None` for a
            cumulative average, as in torch.
        eps: added to the variance, for numerical stability.

    Returns:
        `Layer(init, apply)`. `init(key, (N, C, *spatial))` gives the same shape and params
            `{"weight": (C,), "bias": (C,)}`, ones and zeros (`(N, C)` inputs too);
            `apply(params, x, state=state, train=...)`, both keywords required, gives
            `(y, vjp, new_state)` with `y` of `x`'s shape; `vjp(dy)`, `dy` of `y`'s shape,
            gives `(dparams, dx)` shaped as `(params, x)`.

    Raises:
        FnnTypeError: `momentum` or `eps` is not a number.
        ShapeError: (from `init` and `apply`) an input that is not `(N, C, *spatial)` with
            `C` the params' length.

    Example:
        >>> bn = BatchNorm()
        >>> _, params = bn.init(fnn.random.key(0), (-1, 3))
        >>> state = fnn.init_state(bn, (-1, 3))
        >>> x = torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 6.0]])
        >>> y, vjp, state = bn.apply(params, x, state=state, train=True)
        >>> y
        tensor([[-1.0000, -1.0000, -1.0000],
                [ 1.0000,  1.0000,  1.0000]])
        >>> state["running_mean"], int(state["num_batches_tracked"])
        (tensor([0.1000, 0.2000, 0.4000]), 1)
    """
    if momentum is not None:
        _checks.number("BatchNorm", "momentum", momentum)
    _checks.number("BatchNorm", "eps", eps)

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        del key
        shape = _channels_shape(input_shape)
        return shape, _affine_params("BatchNorm", shape[1], dtype, device)

    def init_state(
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, PyTree]:
        """`(output_shape, state)`: the running statistics of a fresh `torch.nn.BatchNorm2d`."""
        shape = _channels_shape(input_shape)
        _checks.init_dtype("BatchNorm", dtype, device)
        channels = shape[1]
        return shape, {
            "running_mean": torch.zeros(channels, dtype=dtype, device=device),
            "running_var": torch.ones(channels, dtype=dtype, device=device),
            "num_batches_tracked": torch.tensor(0, dtype=torch.int64, device=device),
        }

    def apply(
        params: Params,
        x: torch.Tensor,
        *,
        state: PyTree = None,
        train: bool | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:  # (y, vjp, new_state): the Layer contract's form for state= (ApplyFn)
        del kwargs
        if state is None or train is None:
            _missing(state, train)
        weight, bias = _affine_leaves("BatchNorm", params, x, 1)
        try:
            running_mean, running_var, count = (state[k] for k in STATE_LEAVES)
            if (
                len(state) != 3
                or running_mean.shape != weight.shape
                or running_var.shape != weight.shape
                or running_mean.dtype is not weight.dtype
                or running_var.dtype is not weight.dtype
            ):
                raise KeyError
        except (KeyError, TypeError, AttributeError):
            _check_state(state, weight)
            raise
        if not train:
            y = aten._native_batch_norm_legit_no_training(
                x, weight, bias, running_mean, running_var, 0.0, eps
            )[0]
            return (
                y,
                VJP(batch_norm_backward, (x, weight, running_mean, running_var, False, eps)),
                state,
            )
        if x.numel() == x.shape[1]:
            raise ShapeError(
                f"BatchNorm: training needs more than one value per channel, got input of shape {tuple(x.shape)}"
            )
        factor = momentum if momentum is not None else 1.0 / (int(count) + 1)
        y, mean, invstd, new_mean, new_var = aten._native_batch_norm_legit_functional(
            x, weight, bias, running_mean, running_var, True, factor, eps
        )
        new_state = {
            "running_mean": new_mean,
            "running_var": new_var,
            "num_batches_tracked": count + 1,
        }
        return y, VJP(batch_norm_backward, (x, weight, mean, invstd, True, eps)), new_state

    info = LayerInfo("BatchNorm", keywords=frozenset({"state", "train"}), init_state=init_state)
    return declare(init, apply, info)


# train: y = γ x̂ + β, x̂ = (x − μ_B)/σ_B  ⇒  dγ = Σ dy x̂,  dβ = Σ dy,  dx = γ/σ_B (dy − mean(dy) − x̂ mean(dy x̂));  eval: dx = γ dy / σ_run
@backward
def batch_norm_backward(
    residuals: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool, float],
    dy: torch.Tensor,
) -> tuple[Params, torch.Tensor]:
    x, weight, mean, spread, train, eps = residuals
    if not isinstance(dy, torch.Tensor) or dy.shape != x.shape or dy.dtype is not x.dtype:
        _checks.cotangent_like("BatchNorm", dy, x.shape, x)
    # train: (mean, spread) are the batch's μ and 1/σ; eval: the running mean and variance
    saved, running = ((mean, spread), (None, None)) if train else ((None, None), (mean, spread))
    dx, dweight, dbias = aten.native_batch_norm_backward(
        dy, x, weight, *running, *saved, train, eps, [True, True, True]
    )
    return {"weight": dweight, "bias": dbias}, dx


def _channels_shape(input_shape: Any) -> Shape:
    shape = _checks.input_shape("BatchNorm", input_shape, min_rank=2)
    if shape[1] < 1:
        raise ShapeError(
            f"BatchNorm: expected channels on axis 1, (N, C) or (N, C, ...), got {shape}"
        )
    return shape


def _missing(state: object, train: object) -> None:
    if state is None:
        raise FnnError(
            "BatchNorm: needs its running statistics: call apply(params, x, state=state, train=True/False) "
            "with state = fnn.init_state(model, input_shape) (see docs/state.md)"
        )
    raise FnnError(
        "BatchNorm: say train=True (batch statistics; the running ones are updated) or "
        "train=False (the running statistics are used)"
    )


def _check_state(state: object, weight: torch.Tensor) -> None:
    """Slow path: a clear error for a state that is not BatchNorm's."""
    if not isinstance(state, Mapping):
        raise TreeError(
            f"BatchNorm: expected state as a dict with {list(STATE_LEAVES)}, got {describe(state)}"
        )
    missing = [k for k in STATE_LEAVES if k not in state]
    extra = [k for k in state if k not in STATE_LEAVES]
    if missing or extra:
        raise TreeError(f"BatchNorm: state keys must be {list(STATE_LEAVES)}, got {list(state)}")
    for k in STATE_LEAVES[:2]:
        if not isinstance(state[k], torch.Tensor) or state[k].shape != weight.shape:
            raise ShapeError(
                f"BatchNorm: state[{k!r}] must be a tensor of shape {tuple(weight.shape)}, got {describe(state[k])}"
            )
        if state[k].dtype is not weight.dtype:
            raise FnnError(
                f"BatchNorm: state[{k!r}] has dtype {state[k].dtype} but the params have {weight.dtype} "
                "(make the state with fnn.init_state(model, shape, dtype=...))"
            )
