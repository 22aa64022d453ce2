"""`check_vjp`: test a layer's hand-written VJP against central finite differences.

Modelled on cs231n's `eval_numerical_gradient_array`: for a fixed random
cotangent `dy`, the VJP must equal the gradient of `⟨dy, apply(params, x)⟩`
with respect to every parameter and input element, computed numerically in
float64.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

from . import random, tree
from .core import VJP, ApplyFn, Layer, Params
from .errors import FnnError

__all__ = ["check_vjp"]


def _to64(t: Any) -> Any:
    return (
        t.detach().to(torch.float64) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
    )


def _outputs(y: Any) -> list[torch.Tensor]:
    return [t for t in tree.leaves(y) if isinstance(t, torch.Tensor)]


def _inner(ys: list[torch.Tensor], dys: list[torch.Tensor]) -> float:
    return sum(float((y * dy).sum()) for y, dy in zip(ys, dys))


def check_vjp(
    layer: Layer | ApplyFn,
    params: Params,
    x: Any,
    *,
    eps: float = 1e-6,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    seed: int = 0,
    **apply_kwargs: Any,
) -> None:
    """Check `layer`'s VJP against central finite differences in float64.

    For a random cotangent `dy` of `y`'s shape, `vjp(dy)` must equal the numerical gradient
    of `⟨dy, apply(params, x)⟩` with respect to every element of `params` and `x`. The VJP
    must also pickle, give `dparams` with the tree structure of `params` and `dx` with the
    shape of `x`. It costs two forward passes per element: keep shapes small.

    Args:
        layer: a `Layer` (or just its `apply`).
        params: its params (converted to float64 here).
        x: the input, e.g. of shape `(batch, in_features)`: a tensor or a tuple of tensors
            (converted to float64).
        eps: finite-difference step.
        atol: absolute tolerance on each gradient element.
        rtol: relative tolerance on each gradient element.
        seed: seed of the random cotangent `dy`.
        **apply_kwargs: passed to `apply` (e.g. `key=` for Dropout).

    Raises:
        AssertionError: a gradient is off (naming the leaf, `params["2"]["weight"]`, `x` or
            `x[1]`, and the max error), or the VJP does not pickle or has the wrong structure.

    Example:
        >>> layer = fnn.layers.Dense(3)
        >>> _, params = layer.init(fnn.random.key(0), (-1, 2))
        >>> fnn.testing.check_vjp(layer, params, torch.randn(4, 2))
    """
    apply = layer.apply if isinstance(layer, Layer) else layer
    params = tree.map(_to64, params)
    x = tree.map(_to64, x)

    y, vjp = apply(params, x, **apply_kwargs)
    if not isinstance(vjp, VJP):
        raise AssertionError(
            f"apply must return (y, fnn.VJP(backward, residuals)), got {type(vjp).__name__}"
        )
    try:
        pickle.dumps(vjp)
    except FnnError:
        pass  # a VJP that refuses pickling with a clear fnn error (remat's) is documented
    except (
        Exception
    ) as error:  # whatever pickle raised, reported (not hidden) as the check's failure
        raise AssertionError(
            f"the VJP does not pickle (is backward a module-level function?): {error}"
        ) from None

    outputs = _outputs(y)
    keys = random.split(random.key(seed), len(outputs))
    dys = [  # integer outputs (MaxPool's indices) have no gradient: a zero cotangent
        random.normal(k, o.shape, dtype=o.dtype, device=o.device)
        if o.is_floating_point()
        else torch.zeros_like(o)
        for k, o in zip(keys, outputs)
    ]
    dy_tree = tree.unflatten(tree.structure(y), dys)
    dparams, dx = vjp(dy_tree)

    tree.assert_same_structure(params, dparams, "check_vjp: dparams")
    if isinstance(x, torch.Tensor):
        if not isinstance(dx, torch.Tensor) or dx.shape != x.shape:
            raise AssertionError(f"dx must have x's shape {tuple(x.shape)}, got {_shape_of(dx)}")
    else:
        tree.assert_same_structure(x, dx, "check_vjp: dx")

    def objective(p: Params, inp: Any) -> float:
        out, _ = apply(p, inp, **apply_kwargs)
        return _inner(_outputs(out), dys)

    param_leaves, param_def = tree.flatten(params)
    for path, leaf, grad in zip(tree.paths(params), param_leaves, tree.leaves(dparams)):

        def with_leaf(value: torch.Tensor, leaf: torch.Tensor = leaf) -> float:
            swapped = [value if q is leaf else q for q in param_leaves]
            return objective(tree.unflatten(param_def, swapped), x)

        _compare(f"params{path}", leaf, grad, with_leaf, eps, atol, rtol)

    x_leaves, x_def = tree.flatten(x)
    x_paths = ["x"] if isinstance(x, torch.Tensor) else [f"x{p}" for p in tree.paths(x)]
    for path, leaf, grad in zip(x_paths, x_leaves, tree.leaves(dx)):
        if not (isinstance(leaf, torch.Tensor) and leaf.is_floating_point()):
            continue

        def with_input(value: torch.Tensor, leaf: torch.Tensor = leaf) -> float:
            swapped = [value if q is leaf else q for q in x_leaves]
            return objective(params, tree.unflatten(x_def, swapped))

        _compare(path, leaf, grad, with_input, eps, atol, rtol)


def _shape_of(t: Any) -> Any:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _compare(
    name: str, value: torch.Tensor, analytic: Any, f: Any, eps: float, atol: float, rtol: float
) -> None:
    if not isinstance(analytic, torch.Tensor) or analytic.shape != value.shape:
        raise AssertionError(
            f"{name}: gradient must have shape {tuple(value.shape)}, got {_shape_of(analytic)}"
        )
    numeric = torch.zeros(value.shape, dtype=torch.float64, device=value.device)
    flat = numeric.view(-1)
    for i in range(value.numel()):
        # perturb in place of a copy with the input's own layout (non-contiguous stays so)
        where = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), value.shape))
        plus = value.clone()
        plus[where] += eps
        minus = value.clone()
        minus[where] -= eps
        flat[i] = (f(plus) - f(minus)) / (2 * eps)
    analytic = analytic.detach().to(torch.float64)
    error = (analytic - numeric).abs()
    bad = error > atol + rtol * numeric.abs()
    if bad.any():
        worst = int(torch.argmax(torch.where(bad, error, torch.zeros_like(error))))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), value.shape))
        raise AssertionError(
            f"{name}: VJP differs from central differences: max abs error "
            f"{float(error.max()):.3e} at index {index} (VJP {float(analytic.reshape(-1)[worst]):.6g}, "
            f"numeric {float(numeric.reshape(-1)[worst]):.6g}); {int(bad.sum())} of {value.numel()} "
            "elements out of tolerance"
        )
