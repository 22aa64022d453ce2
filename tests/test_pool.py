"""MaxPool, AvgPool and AdaptiveAvgPool, 1-D, 2-D and 3-D: forward and VJP against torch.nn's
pooling modules and torch.autograd in float64 and against central differences, over kernels,
strides, paddings, dilations, ceil_mode, count_include_pad, divisor_override, odd sizes,
batch 1, empty batches, unbatched and non-contiguous inputs; ties in max-pooling go where
torch sends them; return_indices; example-wise per-example gradients and vmap; small
residuals; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn

# (layer name, args, kwargs, input shape); the torch twin is torch.nn.<name><n>d(*args, **kwargs)
CASES = [
    ("MaxPool", (2,), {}, (2, 3, 6, 6)),
    ("MaxPool", (2,), {}, (1, 2, 7, 5)),  # odd sizes: the last row/column is dropped
    ("MaxPool", (3, 2, 1), {}, (2, 2, 7, 7)),
    ("MaxPool", (3, 1), {}, (1, 1, 5, 6)),  # overlapping windows
    ("MaxPool", ((2, 3), (1, 2), (1, 1)), {}, (2, 2, 5, 7)),
    ("MaxPool", (1, 1), {}, (3, 2, 2, 2)),
    ("MaxPool", (3, 2), {"ceil_mode": True}, (2, 2, 6, 8)),
    ("MaxPool", (3, 2, 1), {"dilation": 2}, (1, 2, 8, 7)),
    ("MaxPool", ((3, 2), (2, 1), (1, 0)), {"dilation": (1, 2), "ceil_mode": True}, (2, 1, 6, 7)),
    ("MaxPool", ((3,),), {}, (2, 3, 8)),  # 1-D
    ("MaxPool", ((4,), (3,), (2,)), {"dilation": 2, "ceil_mode": True}, (1, 2, 11)),
    ("MaxPool", ((2, 2, 2),), {}, (2, 2, 4, 4, 5)),  # 3-D
    ("MaxPool", ((3, 2, 3), 2, (1, 0, 1)), {"ceil_mode": True, "dilation": (1, 1, 2)}, (1, 2, 5, 4, 7)),
    ("AvgPool", (2,), {}, (2, 3, 6, 6)),
    ("AvgPool", (2,), {}, (1, 2, 7, 5)),
    ("AvgPool", (3, 2, 1), {}, (2, 2, 7, 7)),
    ("AvgPool", (3, 2, 1), {"count_include_pad": False}, (2, 2, 7, 7)),
    ("AvgPool", (3, 2, 1), {"ceil_mode": True, "count_include_pad": False}, (1, 2, 6, 8)),
    ("AvgPool", ((2, 3), (1, 2), (1, 1)), {"divisor_override": 4}, (2, 2, 5, 7)),
    ("AvgPool", (3, 2), {"ceil_mode": True}, (2, 1, 8, 6)),
    ("AvgPool", ((3,), 2, 1), {}, (2, 3, 8)),  # 1-D
    ("AvgPool", ((4,), 3, 2), {"ceil_mode": True, "count_include_pad": False}, (1, 2, 11)),
    ("AvgPool", ((2, 2, 2),), {}, (2, 2, 4, 4, 5)),  # 3-D
    ("AvgPool", ((3, 2, 3), 2, 1), {"ceil_mode": True, "count_include_pad": False, "divisor_override": 5}, (1, 2, 5, 4, 7)),
    ("AdaptiveAvgPool", (1,), {}, (2, 3, 5, 6)),  # global average pooling
    ("AdaptiveAvgPool", (3,), {}, (2, 2, 7, 5)),
    ("AdaptiveAvgPool", ((None, 2),), {}, (1, 2, 5, 7)),
    ("AdaptiveAvgPool", ((4,),), {}, (2, 3, 9)),  # 1-D
    ("AdaptiveAvgPool", ((2, None, 3),), {}, (1, 2, 5, 3, 7)),  # 3-D
    ("AdaptiveAvgPool", ((6, 5, 4),), {}, (1, 1, 4, 5, 3)),  # larger than the input
]  # fmt: skip
PARAMS = [
    pytest.param(name, args, kw, shape, id=f"{name}-{args}-{kw}-{'x'.join(map(str, shape))}")
    for name, args, kw, shape in CASES
]


def torch_twin(name, args, kwargs, dims):
    return getattr(torch.nn, f"{name}{dims}d")(*args, **kwargs)


def _reference(name, args, kwargs, dims):
    module = torch_twin(name, args, kwargs, dims)
    return lambda p, x: module(x)


@pytest.mark.parametrize("name, args, kwargs, shape", PARAMS)
def test_vjp_matches_finite_differences(name, args, kwargs, shape):
    fnn.testing.check_vjp(getattr(L, name)(*args, **kwargs), {}, randn(1, *shape)[:1])


@pytest.mark.parametrize("name, args, kwargs, shape", PARAMS)
def test_forward_and_vjp_match_torch_module_and_autograd(name, args, kwargs, shape):
    layer, x = getattr(L, name)(*args, **kwargs), randn(2, *shape)
    reference = _reference(name, args, kwargs, len(shape) - 2)
    out_shape, params = layer.init(fnn.random.key(0), (-1, *shape[1:]))
    y, vjp = layer.apply(params, x)
    assert params == {} and out_shape == (-1, *y.shape[1:])
    torch.testing.assert_close(y, reference(params, x), atol=0, rtol=0)
    dy = randn(3, *y.shape)
    _, expected_dx = autograd_vjp(reference, {}, x, dy)
    dparams, dx = vjp(dy)
    assert dparams == {}
    torch.testing.assert_close(dx, expected_dx, atol=1e-12, rtol=1e-10)
    assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(dx)
    # unbatched: (C, *spatial)
    y1, vjp1 = layer.apply({}, x[0])
    torch.testing.assert_close(y1, reference({}, x[0]), atol=0, rtol=0)
    _, expected_dx1 = autograd_vjp(reference, {}, x[0], dy[0])
    torch.testing.assert_close(vjp1(dy[0])[1], expected_dx1, atol=1e-12, rtol=1e-10)
    assert layer.init(fnn.random.key(0), shape[1:])[0] == tuple(y1.shape)


@pytest.mark.parametrize("name, args, kwargs, shape", PARAMS[::3])
def test_empty_batch_and_non_contiguous_inputs(name, args, kwargs, shape):
    layer = getattr(L, name)(*args, **kwargs)
    reference = _reference(name, args, kwargs, len(shape) - 2)
    empty = torch.zeros(0, *shape[1:], dtype=torch.float64)
    y, vjp = layer.apply({}, empty)
    assert y.shape == reference({}, empty).shape
    dparams, dx = vjp(torch.zeros_like(y))
    assert dparams == {} and dx.shape == empty.shape
    strided = randn(4, *shape[:-1], 2 * shape[-1])[..., 1::2]
    assert not strided.is_contiguous()
    y, vjp = layer.apply({}, strided)
    torch.testing.assert_close(y, reference({}, strided), atol=0, rtol=0)
    dy = randn(5, *y.shape)
    _, expected_dx = autograd_vjp(reference, {}, strided, dy)
    torch.testing.assert_close(vjp(dy)[1], expected_dx, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize(
    "args, kwargs",
    [((2,), {}), ((3, 1), {}), ((3, 2, 1), {}), ((3, 2, 1), {"dilation": 2, "ceil_mode": True})],
)
def test_max_pool_ties_go_where_torch_sends_them(args, kwargs):
    # Whole planes of equal values, and a few equal maxima scattered in windows.
    x = torch.zeros(2, 2, 6, 6)
    x[1] = torch.tensor([1.0, 2.0]).repeat_interleave(36).reshape(2, 6, 6)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 0, 2, 1] = 3.0
    y, vjp = L.MaxPool(*args, **kwargs).apply({}, x)
    dy = torch.arange(float(y.numel())).reshape(y.shape) + 1
    _, expected_dx = autograd_vjp(_reference("MaxPool", args, kwargs, 2), {}, x, dy)
    assert torch.equal(vjp(dy)[1], expected_dx)


@pytest.mark.parametrize(
    "args, shape",
    [((2,), (2, 3, 6, 5)), (((3,), 2, 1), (2, 2, 7)), (((2, 1, 2),), (1, 2, 4, 3, 4))],
)
def test_max_pool_return_indices_gives_torchs_indices_and_takes_a_pair_cotangent(args, shape):
    x = randn(1, *shape)
    layer = L.MaxPool(*args, return_indices=True)
    out_shapes, _ = layer.init(fnn.random.key(0), (-1, *shape[1:]))
    (y, indices), vjp = layer.apply({}, x)
    module = torch_twin("MaxPool", args, {"return_indices": True}, len(shape) - 2)
    expected_y, expected_indices = module(x)
    assert out_shapes == [(-1, *y.shape[1:])] * 2
    assert torch.equal(y, expected_y) and torch.equal(indices, expected_indices)
    assert indices.dtype == torch.int64
    dy = randn(2, *y.shape)
    _, expected_dx = autograd_vjp(lambda p, x: module(x)[0], {}, x, dy)
    for dindices in (None, torch.zeros_like(indices)):
        torch.testing.assert_close(vjp((dy, dindices))[1], expected_dx, atol=0, rtol=0)
    (_, indices1), vjp1 = layer.apply({}, x[0])  # unbatched
    assert torch.equal(indices1, module(x[0])[1])
    assert vjp1((dy[0], None))[1].shape == x[0].shape
    with pytest.raises(fnn.errors.FnnTypeError, match=r"MaxPool VJP: with return_indices=True"):
        vjp(dy)
    fnn.testing.check_vjp(layer, {}, x[:1])  # the indices get a zero cotangent


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_avg_pool_3d_in_half_precision_on_cpu(dtype):
    # torch has no CPU kernel for these; fnn runs them in float32 and rounds once
    x = randn(1, 2, 3, 4, 5, 6).to(dtype)
    layer = L.AvgPool((2, 2, 2), ceil_mode=True)
    y, vjp = layer.apply({}, x)
    expected_y, expected_vjp = layer.apply({}, x.float())
    assert y.dtype == dtype
    torch.testing.assert_close(y, expected_y.to(dtype), atol=0, rtol=0)
    dy = randn(2, *y.shape)
    dx = vjp(dy.to(dtype))[1]
    assert dx.dtype == dtype and dx.shape == x.shape
    torch.testing.assert_close(dx, expected_vjp(dy.to(dtype).float())[1].to(dtype), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["MaxPool", "AvgPool"])
def test_channels_last_and_float32_inputs_match_torch(name):
    x = torch.randn(3, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    y, vjp = getattr(L, name)(2).apply({}, x)
    reference = _reference(name, (2,), {}, 2)
    dy = torch.randn(y.shape)
    _, expected_dx = autograd_vjp(reference, {}, x, dy)
    torch.testing.assert_close(y, reference({}, x))
    torch.testing.assert_close(vjp(dy)[1], expected_dx)
    assert y.dtype == torch.float32


def test_pools_are_example_wise_and_run_under_vmap():
    model = fnn.serial(
        L.Conv(3, 3, padding=1), L.MaxPool(2, return_indices=False), L.AvgPool(2, ceil_mode=True),
        L.AdaptiveAvgPool(2), L.Flatten(), L.Dense(2),
    )  # fmt: skip
    _, params = model.init(fnn.random.key(0), (-1, 1, 9, 9), dtype=torch.float64)
    x, labels = randn(1, 3, 1, 9, 9), torch.tensor([0, 1, 1])
    losses, grads = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    for i in range(3):
        loss, expected = loss_and_grads(params, x[i : i + 1], labels[i : i + 1])
        torch.testing.assert_close(losses[i], loss)
        assert_trees_close(fnn.tree.map(lambda g, i=i: g[i], grads), expected)
    # torch.func.vmap over apply and VJP (the per-example fallback for wrapped layers); the old
    # MaxPool raised "querying is_contiguous inside of vmap" here
    for layer, shape in [
        (L.MaxPool(2), (4, 2, 6, 6)),
        (L.AvgPool(3, 2, 1), (4, 2, 6, 6)),
        (L.AdaptiveAvgPool(1), (4, 2, 6, 6)),
        (L.MaxPool((2,)), (4, 2, 6)),
    ]:
        xs = randn(2, *shape)

        def one(x, layer=layer):
            y, vjp = layer.apply({}, x[None])
            return y[0], vjp(torch.ones_like(y))[1][0]

        ys, dxs = torch.func.vmap(one)(xs)
        y, vjp = layer.apply({}, xs)
        torch.testing.assert_close(ys, y)
        torch.testing.assert_close(dxs, vjp(torch.ones_like(y))[1])


def test_max_pool_keeps_indices_not_the_input():
    x = torch.randn(8, 16, 12, 12, dtype=torch.float64)

    def kept(vjp):
        return sum(
            t.untyped_storage().nbytes()
            for t in fnn.tree.leaves(vjp.residuals)
            if isinstance(t, torch.Tensor)
        )

    y, vjp = L.MaxPool(2).apply({}, x)
    assert kept(vjp) <= y.numel() * 8 + 64  # the int64 argmax per output, and no copy of x
    assert kept(L.AvgPool(2).apply({}, x)[1]) <= 64
    assert kept(L.AdaptiveAvgPool(3).apply({}, x)[1]) <= 64


def test_stride_defaults_to_the_kernel_size():
    assert L.MaxPool(3).init(fnn.random.key(0), (-1, 2, 9, 7))[0] == (-1, 2, 3, 2)
    assert L.AvgPool((2, 3), stride=1).init(fnn.random.key(0), (-1, 2, 9, 7))[0] == (-1, 2, 8, 5)
    assert L.MaxPool((3,)).init(fnn.random.key(0), (4, 10))[0] == (4, 3)


@pytest.mark.parametrize("name", ["MaxPool", "AvgPool"])
def test_bad_arguments_and_inputs_raise_clear_errors(name):
    make = getattr(L, name)
    for bad, error, message in [
        (lambda: make(0), fnn.errors.FnnError, f"{name}: kernel_size must be positive"),
        (lambda: make(2, stride=0), fnn.errors.FnnError, f"{name}: stride must be positive"),
        (lambda: make(3, padding=2), fnn.errors.FnnError, f"{name}: padding 2 must be at most half the kernel size"),
        (lambda: make((2, 2, 2, 2)), fnn.errors.FnnTypeError, f"{name}: kernel_size must be an int (2-D) or a tuple of 1, 2 or 3 ints"),
        (lambda: make((2,), stride=(1, 1)), fnn.errors.FnnTypeError, f"{name}: stride must be an int or a tuple of 1 int(s)"),
        (lambda: make(2, ceil_mode=1), fnn.errors.FnnTypeError, f"{name}: ceil_mode must be True or False"),
    ]:  # fmt: skip
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            bad()
    init, apply = make(3)
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name}: expected an NCHW input \(N, C, H, W\) or unbatched \(C, H, W\) for 2-D pooling",
    ):
        init(fnn.random.key(0), (-1, 9))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name}: input of spatial size \(2, 9\) is smaller than the window",
    ):
        init(fnn.random.key(0), (-1, 1, 2, 9))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name}: expected an NCHW input \(N, C, H, W\) or unbatched \(C, H, W\) for 2-D pooling, got shape \(9, 9\)",
    ):
        apply({}, torch.ones(9, 9))
    with pytest.raises(
        fnn.errors.ShapeError, match=rf"{name}: input of spatial size \(2, 2\) is smaller"
    ):
        apply({}, torch.ones(1, 1, 2, 2))
    with pytest.raises(fnn.errors.FnnTypeError, match=f"{name}: expected a floating-point input"):
        apply({}, torch.ones(1, 1, 6, 6, dtype=torch.int64))
    with pytest.raises(fnn.errors.FnnTypeError, match=f"{name}: expected a tensor input"):
        apply({}, [1.0])
    with pytest.raises(fnn.errors.TreeError, match=f"{name}: takes no parameters"):
        apply({"weight": torch.ones(1)}, torch.ones(1, 1, 6, 6))
    _y, vjp = apply({}, torch.ones(1, 1, 6, 6))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name} VJP: expected a cotangent of the output's shape \(1, 1, 2, 2\)",
    ):
        vjp(torch.ones(1, 1, 6, 6))
    _y, vjp = apply({}, torch.ones(1, 6, 6))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=rf"{name} VJP: expected a cotangent of the output's shape \(1, 2, 2\)",
    ):
        vjp(torch.ones(1, 1, 2, 2))
    with pytest.raises(
        fnn.errors.ShapeError, match=rf"^serial\[1\] {name}: expected an NCHW input \(N, C, H, W\)"
    ):
        fnn.serial(L.Flatten(), make(2)).apply({}, torch.ones(2, 1, 4, 4))


def test_bad_pooling_options_raise_clear_errors():
    for bad, error, message in [
        (lambda: L.MaxPool(2, dilation=0), fnn.errors.FnnError, "MaxPool: dilation must be positive"),
        (lambda: L.MaxPool(2, return_indices="yes"), fnn.errors.FnnTypeError, "MaxPool: return_indices must be True or False"),
        (lambda: L.AvgPool(2, count_include_pad=None), fnn.errors.FnnTypeError, "AvgPool: count_include_pad must be True or False"),
        (lambda: L.AvgPool(2, divisor_override=0), fnn.errors.FnnError, "AvgPool: divisor_override must be a positive int"),
        (lambda: L.AvgPool((2,), divisor_override=2), fnn.errors.FnnError, "AvgPool: divisor_override is for 2-D and 3-D pooling"),
        (lambda: L.AdaptiveAvgPool(0), fnn.errors.FnnError, "AdaptiveAvgPool: output_size must be positive"),
        (lambda: L.AdaptiveAvgPool((1, 2, 3, 4)), fnn.errors.FnnTypeError, "AdaptiveAvgPool: output_size must be an int (2-D) or a tuple of 1, 2 or 3"),
        (lambda: L.AdaptiveAvgPool(2.0), fnn.errors.FnnTypeError, "AdaptiveAvgPool: output_size must be an int"),
        (lambda: L.AdaptiveAvgPool(None), fnn.errors.FnnTypeError, "AdaptiveAvgPool: output_size must be an int"),
    ]:  # fmt: skip
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            bad()
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"AdaptiveAvgPool: expected an NCDHW input \(N, C, D, H, W\) or unbatched \(C, D, H, W\) for 3-D",
    ):
        L.AdaptiveAvgPool((1, 1, 1)).apply({}, torch.ones(2, 3, 4))
