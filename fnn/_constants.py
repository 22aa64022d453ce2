"""Cached constant tensors for hot kernels: 0-d scalars and vectors of ones.

On CPU, `x.mul(0.9)` wraps the Python number in a new tensor at every call, which
costs about as much as the multiplication itself on small tensors; `x.mul(t)` with a
0-d tensor `t` of `x`'s dtype skips that and rounds the same way for float32 and
float64. (For float16/bfloat16 a Python number is kept at float32 precision while a
0-d tensor of the input's dtype is not, so those get the Python number.)

The sum of a matrix's rows, `Σₙ m[n]`, is one BLAS matrix-vector product `mᵀ·1`
with a cached vector of ones: on small batches that is markedly cheaper than the
generic reduction `m.sum(0)` (a bias gradient at batch 10: about 4 µs against 5,
and less dispatch work), and it is what both Dense's VJP and the fast path use.
Nothing here is ever written to or handed out.
"""

from __future__ import annotations

import torch

__all__ = ["scalar", "ones_cache", "ones_for", "sum_rows"]

_SCALARS: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}
_ONES: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
_CACHE_SIZE = 256  # e.g. 2/n or ones(n) for many batch sizes: keep the caches small


def scalar(value: float, like: torch.Tensor) -> torch.Tensor | float:
    """`value` as a cached 0-d tensor with `like`'s dtype and device (never written to)."""
    dtype = like.dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        return value
    key = (value, dtype, like.device)
    found = _SCALARS.get(key)
    if found is None:
        if len(_SCALARS) > _CACHE_SIZE:
            _SCALARS.clear()
        found = _SCALARS[key] = torch.tensor(value, dtype=dtype, device=like.device)
    return found


def ones_cache() -> dict[tuple[int, torch.dtype, torch.device], torch.Tensor]:
    """The cache `ones_for` fills, keyed by `(rows, dtype, device)` (the fast path reads it)."""
    return _ONES


def ones_for(m: torch.Tensor) -> torch.Tensor | None:
    """A cached vector of `m.shape[0]` ones of `m`'s dtype and device; `None` for dtypes other
    than float32 and float64 (their matrix-vector products may accumulate differently)."""
    dtype = m.dtype
    if dtype is not torch.float32 and dtype is not torch.float64:
        return None
    key = (m.shape[0], dtype, m.device)
    found = _ONES.get(key)
    if found is None:
        if len(_ONES) > _CACHE_SIZE:
            _ONES.clear()
        found = _ONES[key] = torch.ones(key[0], dtype=dtype, device=m.device)
    return found


def sum_rows(m: torch.Tensor) -> torch.Tensor:
    """`Σₙ m[n]` for a 2-D `m`: `mᵀ·1` (float32/float64, eager), else `m.sum(0)`."""
    if torch.compiler.is_compiling():  # no cached tensors in traced graphs
        return m.sum(0)
    ones = _ONES.get((m.shape[0], m.dtype, m.device))
    if ones is None:
        ones = ones_for(m)
        if ones is None:
            return m.sum(0)
    return m.t().mv(ones)
