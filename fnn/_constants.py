"""Cached constant tensors for hot kernels: 0-d scalars.

On CPU, `x.mul(0.9)` wraps the Python number in a new tensor at every call, which
costs about as much as the multiplication itself on small tensors; `x.mul(t)` with a
0-d tensor `t` of `x`'s dtype skips that and rounds the same way for float32 and
float64. (For float16/bfloat16 a Python number is kept at float32 precision while a
0-d tensor of the input's dtype is not, so those get the Python number.)
Nothing here is ever written to or handed out.
"""

from __future__ import annotations

import torch

from ._devices import device_key

__all__ = ["scalar"]

# Cannot change a result: a bounded cache of 0-d constants, never written to or handed out
# (see the module docstring); a value is the same tensor whether cached or made afresh.
_SCALARS: dict[tuple[float, torch.dtype, torch.device | str], torch.Tensor] = {}
_CACHE_SIZE = 256  # e.g. 2/n for many batch sizes: keep the cache small


def scalar(value: float, like: torch.Tensor) -> torch.Tensor | float:
    """`value` as a cached 0-d tensor with `like`'s dtype and device (never written to)."""
    dtype = like.dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        return value
    key = (value, dtype, device_key(like))
    found = _SCALARS.get(key)
    if found is None:
        if len(_SCALARS) > _CACHE_SIZE:
            _SCALARS.clear()
        found = _SCALARS[key] = torch.tensor(value, dtype=dtype, device=like.device)
    return found
