"""Cheap input checks shared by layers: Python attribute reads only, no device sync."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .._devices import same_device
from ..core import Params, Shape
from ..errors import FnnError, FnnTypeError, ShapeError, TreeError, describe

__all__ = ["FnnError", "ShapeError", "describe"]


def float_input(name: str, x: object) -> torch.Tensor:
    """`x` if it is a floating-point tensor, else a clear error naming the layer."""
    if not isinstance(x, torch.Tensor):
        raise FnnTypeError(f"{name}: expected a tensor input, got {describe(x)}")
    if not x.is_floating_point():
        raise FnnTypeError(
            f"{name}: expected a floating-point input, got dtype {x.dtype} (convert with x.float())"
        )
    return x


def input_like(name: str, x: object, param: torch.Tensor) -> torch.Tensor:
    """`x` if it is a tensor with `param`'s dtype and device, else a clear error."""
    if not isinstance(x, torch.Tensor):
        raise FnnTypeError(f"{name}: expected a tensor input, got {describe(x)}")
    try:
        same_dtype = x.dtype is param.dtype
    except AttributeError:
        raise FnnTypeError(f"{name}: params must hold tensors, got {describe(param)}") from None
    if not same_dtype:
        if not x.is_floating_point():
            raise FnnTypeError(
                f"{name}: expected a floating-point input of dtype {param.dtype}, got dtype {x.dtype}"
            )
        raise FnnError(
            f"{name}: input dtype {x.dtype} does not match the parameters' dtype {param.dtype}"
        )
    if not same_device(x, param):
        raise FnnError(
            f"{name}: input is on device {x.device} but the parameters are on {param.device}"
        )
    return x


def no_params(name: str, params: object) -> None:
    """Parameter-free layers accept `{}` (or `None`) only."""
    if params:
        keys = list(params) if isinstance(params, Mapping) else describe(params)
        raise TreeError(f"{name}: takes no parameters, got {keys}")


def param_leaves(
    name: str, params: object, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """Check that `params` is a dict holding exactly the expected tensor leaves."""
    if not isinstance(params, Mapping):
        raise TreeError(
            f"{name}: expected params as a dict with {list(required)}, got {describe(params)}"
        )
    missing = [k for k in required if k not in params]
    extra = [k for k in params if k not in required and k not in optional]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + (
            [f"unexpected {extra}"] if extra else []
        )
        raise TreeError(f"{name}: params {' and '.join(parts)} (got keys {list(params)})")
    for k in params:
        if not isinstance(params[k], torch.Tensor):
            raise FnnTypeError(f"{name}: params[{k!r}] must be a tensor, got {describe(params[k])}")


def cotangent(name: str, dy: object, shape: torch.Size | Shape) -> torch.Tensor:
    """`dy` if it is a tensor of the given output shape, else a clear error."""
    if not isinstance(dy, torch.Tensor):
        raise FnnTypeError(
            f"{name} VJP: expected a cotangent tensor of shape {tuple(shape)}, got {describe(dy)}"
        )
    if dy.shape != shape:
        raise ShapeError(
            f"{name} VJP: expected a cotangent of the output's shape {tuple(shape)}, got {tuple(dy.shape)}"
        )
    return dy


def input_shape(name: str, shape: Any, min_rank: int = 1) -> Shape:
    """An `init` input shape as a tuple of ints (`-1` allowed for the batch)."""
    if not isinstance(shape, Sequence) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise ShapeError(f"{name}: expected an input shape as a tuple of ints, got {shape!r}")
    if len(shape) < min_rank:
        raise ShapeError(
            f"{name}: expected an input shape of rank ≥ {min_rank}, got {tuple(shape)}"
        )
    if any(d < -1 for d in shape) or any(d == -1 for d in shape[1:]):
        raise ShapeError(
            f"{name}: input shape {tuple(shape)} may use -1 only for the batch (first) dimension"
        )
    return tuple(shape)


def positive_int(name: str, what: str, value: object) -> int:
    """`value` if it is an int ≥ 1, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FnnError(f"{name}: {what} must be a positive int, got {value!r}")
    return value


def param_like(name: str, leaf: str, value: object, shape: Shape, like: torch.Tensor) -> None:
    """Raise a clear error unless `value` is a tensor of `shape` with `like`'s dtype and device.

    For the slow path only: call it once a cheap check (or torch) has found something wrong."""
    if not isinstance(value, torch.Tensor):
        raise FnnTypeError(f"{name}: params[{leaf!r}] must be a tensor, got {describe(value)}")
    if tuple(value.shape) != tuple(shape):
        raise ShapeError(
            f"{name}: params[{leaf!r}] has shape {tuple(value.shape)}, expected {tuple(shape)}"
        )
    if not value.is_floating_point():
        raise FnnTypeError(
            f"{name}: params[{leaf!r}] must be floating-point, got dtype {value.dtype}"
        )
    if value.dtype != like.dtype:
        raise FnnError(
            f"{name}: params[{leaf!r}] has dtype {value.dtype} but the input has {like.dtype}"
        )
    if not same_device(value, like):
        raise FnnError(
            f"{name}: params[{leaf!r}] is on device {value.device} but the input is on {like.device}"
        )


def cotangent_like(
    name: str, dy: object, out: torch.Tensor | torch.Size | Shape, like: torch.Tensor
) -> None:
    """Raise a clear error unless `dy` has the output's shape and `like`'s dtype and device (slow path)."""
    cotangent(name, dy, out.shape if isinstance(out, torch.Tensor) else out)
    assert isinstance(dy, torch.Tensor)
    if dy.dtype != like.dtype:
        kind = FnnTypeError if not dy.is_floating_point() else FnnError
        raise kind(f"{name} VJP: expected a cotangent of dtype {like.dtype}, got {dy.dtype}")
    if not same_device(dy, like):
        raise FnnError(f"{name} VJP: expected a cotangent on device {like.device}, got {dy.device}")


def number(name: str, what: str, value: object) -> float:
    """`value` if it is a real number (not a bool), else a clear error (constructor arguments)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FnnTypeError(f"{name}: {what} must be a number, got {value!r}")
    return value


def init_dtype(name: str, dtype: torch.dtype, device: torch.device | str) -> None:
    """`init`'s dtype must be a floating-point `torch.dtype` and device a valid device."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise FnnTypeError(
            f"{name}: init dtype must be a floating-point torch.dtype, got {dtype!r}"
        )
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise FnnError(
            f"{name}: init device must be a torch.device or a name like 'cpu', got {device!r}"
        ) from None


def weight_and_bias(
    name: str, params: Params, bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(params["weight"], params["bias"] or None)` for Dense and Conv, or a clear error
    naming missing or unexpected leaves."""
    try:
        weight = params["weight"]
        b = params["bias"] if bias else None
        if len(params) != (2 if bias else 1):
            raise KeyError
    except (KeyError, TypeError):
        param_leaves(name, params, ["weight"] + (["bias"] if bias else []))
        raise
    return weight, b


def axis_arg(name: str, what: str, value: object) -> int:
    """`value` if it is an int (an axis argument, negative from the end), else a clear error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FnnTypeError(f"{name}: {what} must be an int (an axis), got {value!r}")
    return value


def axis(name: str, what: str, value: int, ndim: int) -> int:
    """The axis `value` of a rank-`ndim` tensor counted from 0 (a 0-d tensor takes 0 or -1, as
    in torch), else a `ShapeError` naming the layer."""
    if not -max(ndim, 1) <= value < max(ndim, 1):
        raise ShapeError(
            f"{name}: {what}={value} is out of range for an input of rank {ndim} "
            f"(expected {what} in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])"
        )
    return value % max(ndim, 1)
