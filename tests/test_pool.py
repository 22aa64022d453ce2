"""MaxPool and AvgPool: VJPs against central differences (float64) and torch.autograd on
F.max_pool2d / F.avg_pool2d over kernels, strides, paddings, odd sizes and batch 1; ties
in max-pooling go where torch sends them; small residuals; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import autograd_vjp, randn

POOLS = {"MaxPool": (L.MaxPool, F.max_pool2d), "AvgPool": (L.AvgPool, F.avg_pool2d)}
# (kernel_size, stride, padding), input shape
WINDOWS = [
    ((2, None, 0), (2, 3, 6, 6)),
    ((2, None, 0), (1, 2, 7, 5)),  # odd sizes: the last row/column is dropped, as in torch
    ((3, 2, 1), (2, 2, 7, 7)),
    ((3, 1, 0), (1, 1, 5, 6)),  # overlapping windows
    (((2, 3), (1, 2), (1, 1)), (2, 2, 5, 7)),
    ((1, 1, 0), (3, 2, 2, 2)),
]
PARAMS = [
    pytest.param(name, window, shape, id=f"{name}-{window}-{'x'.join(map(str, shape))}")
    for name in POOLS
    for window, shape in WINDOWS
]


def _layer(name, window):
    kernel, stride, padding = window
    return POOLS[name][0](kernel, stride, padding)


def _reference(name, window):
    kernel, stride, padding = window

    def pool(p, x):
        return POOLS[name][1](x, kernel, stride, padding)

    return pool


@pytest.mark.parametrize("name, window, shape", PARAMS)
def test_vjp_matches_finite_differences(name, window, shape):
    fnn.testing.check_vjp(_layer(name, window), {}, randn(1, *shape))


@pytest.mark.parametrize("name, window, shape", PARAMS)
def test_forward_and_vjp_match_torch_autograd(name, window, shape):
    layer, x = _layer(name, window), randn(2, *shape)
    out_shape, params = layer.init(fnn.random.key(0), (-1, *shape[1:]))
    y, vjp = layer.apply(params, x)
    assert params == {} and out_shape == (-1, *y.shape[1:])
    torch.testing.assert_close(y, _reference(name, window)(params, x), atol=0, rtol=0)
    dy = randn(3, *y.shape)
    _, expected_dx = autograd_vjp(_reference(name, window), {}, x, dy)
    dparams, dx = vjp(dy)
    assert dparams == {}
    torch.testing.assert_close(dx, expected_dx, atol=1e-12, rtol=1e-10)
    assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(dx)


@pytest.mark.parametrize("window", [(2, None, 0), (3, 1, 0), (3, 2, 1)])
def test_max_pool_ties_go_where_torch_sends_them(window):
    # Whole planes of equal values, and a few equal maxima scattered in windows.
    x = torch.zeros(2, 2, 6, 6)
    x[1] = torch.tensor([1.0, 2.0]).repeat_interleave(36).reshape(2, 6, 6)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 0, 2, 1] = 3.0
    y, vjp = _layer("MaxPool", window).apply({}, x)
    dy = torch.arange(float(y.numel())).reshape(y.shape) + 1
    _, expected_dx = autograd_vjp(_reference("MaxPool", window), {}, x, dy)
    assert torch.equal(vjp(dy)[1], expected_dx)


@pytest.mark.parametrize("name", POOLS)
def test_channels_last_and_float32_inputs_match_torch(name):
    x = torch.randn(3, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    y, vjp = _layer(name, (2, None, 0)).apply({}, x)
    dy = torch.randn(y.shape)
    _, expected_dx = autograd_vjp(_reference(name, (2, None, 0)), {}, x, dy)
    torch.testing.assert_close(y, POOLS[name][1](x, 2))
    torch.testing.assert_close(vjp(dy)[1], expected_dx)
    assert y.dtype == torch.float32


def test_max_pool_keeps_indices_not_the_input():
    x = torch.randn(8, 16, 12, 12, dtype=torch.float64)
    y, vjp = L.MaxPool(2).apply({}, x)
    kept = sum(
        t.untyped_storage().nbytes()
        for t in fnn.tree.leaves(vjp.residuals)
        if isinstance(t, torch.Tensor)
    )
    assert kept <= y.numel() * 8 + 64  # the int64 argmax per output, and no copy of x
    _, vjp = L.AvgPool(2).apply({}, x)
    assert (
        sum(
            t.untyped_storage().nbytes()
            for t in fnn.tree.leaves(vjp.residuals)
            if isinstance(t, torch.Tensor)
        )
        <= 64
    )


def test_stride_defaults_to_the_kernel_size():
    assert L.MaxPool(3).init(fnn.random.key(0), (-1, 2, 9, 7))[0] == (-1, 2, 3, 2)
    assert L.AvgPool((2, 3), stride=1).init(fnn.random.key(0), (-1, 2, 9, 7))[0] == (-1, 2, 8, 5)


@pytest.mark.parametrize("name", POOLS)
def test_bad_arguments_and_inputs_raise_clear_errors(name):
    make = POOLS[name][0]
    with pytest.raises(ValueError, match=f"{name}: kernel_size must be positive"):
        make(0)
    with pytest.raises(ValueError, match=f"{name}: stride must be positive"):
        make(2, stride=0)
    with pytest.raises(ValueError, match=f"{name}: padding 2 must be at most half the kernel size"):
        make(3, padding=2)
    with pytest.raises(ValueError, match=f"{name}: kernel_size must be an int or a pair of ints"):
        make((2, 2, 2))
    init, apply = make(3)
    with pytest.raises(fnn.errors.ShapeError, match=rf"{name}: expected an NCHW input shape"):
        init(fnn.random.key(0), (-1, 9, 9))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name}: input of spatial size \(2, 9\) is smaller than the window",
    ):
        init(fnn.random.key(0), (-1, 1, 2, 9))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name}: expected an NCHW input \(N, C, H, W\), got shape \(9, 9\)",
    ):
        apply({}, torch.ones(9, 9))
    with pytest.raises(
        fnn.errors.ShapeError, match=rf"{name}: input of spatial size \(2, 2\) is smaller"
    ):
        apply({}, torch.ones(1, 1, 2, 2))
    with pytest.raises(fnn.errors.FnnTypeError, match=f"{name}: expected a floating-point input"):
        apply({}, torch.ones(1, 1, 6, 6, dtype=torch.int64))
    with pytest.raises(fnn.errors.TreeError, match=f"{name}: takes no parameters"):
        apply({"weight": torch.ones(1)}, torch.ones(1, 1, 6, 6))
    _y, vjp = apply({}, torch.ones(1, 1, 6, 6))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name} VJP: expected a cotangent of the output's shape \(1, 1, 2, 2\)",
    ):
        vjp(torch.ones(1, 1, 6, 6))
    with pytest.raises(
        fnn.errors.ShapeError, match=rf"^serial\[1\] {name}: expected an NCHW input"
    ):
        fnn.serial(L.Flatten(), make(2)).apply({}, torch.ones(2, 1, 4, 4))
