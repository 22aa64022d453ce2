"""Errors fnn raises: each names where it happened and what was expected.

Layers raise with their own name ("Dense: ..."); combinators prefix their
position on the way out ("serial[2] Dense: ..."), so a message reads as a path
into the model. The path costs nothing unless an error is actually raised.
"""

from __future__ import annotations

import torch

__all__ = [
    "FnnError",
    "FnnTypeError",
    "ShapeError",
    "TreeError",
    "KeyArrayError",
    "with_context",
    "describe",
]


class FnnError(ValueError):
    """Base class of fnn's errors for bad values (shapes, dtypes, trees, ...)."""


class FnnTypeError(FnnError, TypeError):
    """A value of the wrong type (a list where a tensor was expected, an int tensor
    where floats are needed). Both a `ValueError` and a `TypeError`."""


class ShapeError(FnnError):
    """A tensor or shape that does not fit the layer."""


class TreeError(FnnError):
    """Two pytrees that should have the same structure do not."""


class KeyArrayError(FnnTypeError):
    """Something that is not an `fnn.random` key was given as a key."""


def with_context(error: FnnError, where: str) -> FnnError:
    """Prefix `where` to an error's message, as combinators do on the way out.

    Args:
        error: the error to update (its `args` are changed in place).
        where: the location to prefix, e.g. `"serial[2]"`.

    Returns:
        The same `error`, for `raise with_context(error, where) from None`.

    Example:
        >>> with_context(ShapeError("Dense: expected (..., 3)"), "serial[2]")
        ShapeError('serial[2] Dense: expected (..., 3)')
    """
    message = error.args[0] if error.args else ""
    error.args = (f"{where} {message}",) + tuple(error.args[1:])
    return error


def describe(x: object) -> str:
    """A short description of a value for error messages.

    Args:
        x: any value.

    Returns:
        Its shape, dtype and device for a tensor, its type and length for a list or tuple,
            else its type's name.

    Example:
        >>> describe(torch.ones(2, 3))
        'tensor of shape (2, 3), dtype torch.float32, device cpu'
    """
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"
    if isinstance(x, tuple | list):
        return f"{type(x).__name__} of {len(x)} items"
    return type(x).__name__
