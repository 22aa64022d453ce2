"""What differs between the torch releases fnn supports, in one place."""

from __future__ import annotations

import importlib

import torch

__all__ = ["is_compiling"]


def is_compiling() -> bool:
    """Whether torch.compile is tracing the caller (`torch.compiler.is_compiling`, 2.3+)."""
    compiler = getattr(torch, "compiler", None)
    check = getattr(compiler, "is_compiling", None)
    if check is None:  # torch < 2.3
        dynamo = importlib.import_module("torch._dynamo")
        return bool(dynamo.is_compiling())
    return bool(check())
