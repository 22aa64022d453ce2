"""Cheap device questions for hot paths: `same_device(a, b)`, `device_key(t)`, `device_type(t)`.

The checks on a layer's or a loss's hot path ask them at every call. `t.device` builds a
`torch.device` object (about 0.3 µs each); `is_cpu` reads a flag, and the CPU is one
device, so the common case costs a tenth as much.
"""

from __future__ import annotations

import torch

__all__ = ["same_device", "device_key", "device_type"]


def same_device(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether `a` and `b` are on the same device."""
    return (a.is_cpu and b.is_cpu) or a.device == b.device


def device_key(t: torch.Tensor) -> torch.device | str:
    """`t`'s device as a dict key of a cache: `"cpu"`, else the `torch.device`."""
    return "cpu" if t.is_cpu else t.device


def device_type(t: torch.Tensor) -> str:
    """`t.device.type` ("cpu", "cuda", ...)."""
    return "cpu" if t.is_cpu else t.device.type
