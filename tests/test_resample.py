"""Pad and Upsample: forward and VJP against torch.nn.functional.pad / torch.nn.Upsample and
torch.autograd in float64 and against central differences, for every mode, 1-D to 3-D,
negative (cropping) pads, batch 1, empty batches, unbatched and non-contiguous inputs;
per-example gradients; clear errors."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn

PADS = [
    ((1, 2), "constant", 0.0, (2, 3, 5)),
    ((1, 2, 0, 1), "constant", 1.5, (2, 2, 3, 4)),
    ((2, -1, 1, 1, 0, 2), "constant", -2.0, (1, 2, 3, 4, 3)),
    ((1, 1, 1, 1, 1, 1), "constant", 0.0, (2, 2, 2)),  # pads the batch axis too
    ((2, 1), "reflect", 0.0, (2, 3, 4)),
    ((1, 2, 2, 1), "reflect", 0.0, (1, 2, 4, 5)),
    ((1, 0, 2, 1, 1, 1), "reflect", 0.0, (2, 1, 3, 4, 3)),
    ((-1, 2, 1, 1), "reflect", 0.0, (2, 2, 3, 4)),
    ((3, 1), "replicate", 0.0, (2, 3, 4)),
    ((1, 2, 3, 0), "replicate", 0.0, (1, 2, 3, 4)),
    ((1, 1, 0, 2, 2, 1), "replicate", 0.0, (2, 1, 2, 3, 3)),
    ((4, 1), "circular", 0.0, (2, 3, 4)),
    ((1, 2, 2, 1), "circular", 0.0, (1, 2, 3, 4)),
    ((-1, 2, 2, -1), "circular", 0.0, (2, 2, 4, 5)),  # torch crops first, then wraps
    ((1, 0, 2, 1, 1, 1), "circular", 0.0, (2, 1, 2, 3, 3)),
]
PAD_PARAMS = [
    pytest.param(p, m, v, s, id=f"{m}-{p}-{'x'.join(map(str, s))}") for p, m, v, s in PADS
]


def _pad_reference(padding, mode, value):
    return lambda p, x: F.pad(x, padding, mode, value if mode == "constant" else None)


@pytest.mark.parametrize("padding, mode, value, shape", PAD_PARAMS)
def test_pad_matches_torch_and_finite_differences(padding, mode, value, shape):
    layer, x = L.Pad(padding, mode, value), randn(1, *shape)
    reference = _pad_reference(padding, mode, value)
    out_shape, params = layer.init(fnn.random.key(0), shape)
    y, vjp = layer.apply(params, x)
    assert params == {} and out_shape == tuple(y.shape)
    torch.testing.assert_close(y, reference({}, x), atol=0, rtol=0)
    dy = randn(2, *y.shape)
    _, expected_dx = autograd_vjp(reference, {}, x, dy)
    torch.testing.assert_close(vjp(dy)[1], expected_dx, atol=1e-12, rtol=1e-10)
    assert pickle.loads(pickle.dumps(vjp))(dy)[1].equal(vjp(dy)[1])
    fnn.testing.check_vjp(layer, {}, x[:1] if len(padding) // 2 < x.ndim else x)
    strided = randn(3, *shape[:-1], 2 * shape[-1])[..., ::2]
    y, vjp = layer.apply({}, strided)
    torch.testing.assert_close(y, reference({}, strided), atol=0, rtol=0)
    _, expected_dx = autograd_vjp(reference, {}, strided, dy)
    torch.testing.assert_close(vjp(dy)[1], expected_dx, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("padding, mode, value, shape", PAD_PARAMS[::2])
def test_pad_unbatched_and_empty_inputs(padding, mode, value, shape):
    layer = L.Pad(padding, mode, value)
    reference = _pad_reference(padding, mode, value)
    if len(padding) // 2 < len(shape) - 1:  # unbatched, where torch takes it
        x = randn(1, *shape[1:])
        y, vjp = layer.apply({}, x)
        torch.testing.assert_close(y, reference({}, x), atol=0, rtol=0)
        dy = randn(2, *y.shape)
        torch.testing.assert_close(vjp(dy)[1], autograd_vjp(reference, {}, x, dy)[1])
    if len(padding) // 2 < len(shape):
        empty = torch.zeros(0, *shape[1:], dtype=torch.float64)
        y, vjp = layer.apply({}, empty)
        assert y.shape == reference({}, empty).shape
        assert vjp(torch.zeros_like(y))[1].shape == empty.shape


UPSAMPLES = [
    ({"scale_factor": 2}, (2, 3, 4)),
    ({"scale_factor": 2}, (1, 2, 3, 4)),
    ({"size": (5, 7)}, (2, 2, 3, 4)),
    ({"scale_factor": (1.5, 2.3)}, (2, 1, 4, 3)),
    ({"scale_factor": 1.7, "recompute_scale_factor": True}, (1, 2, 3, 5)),
    ({"size": 5}, (1, 2, 2, 3, 4)),
    ({"scale_factor": 2, "mode": "nearest-exact"}, (2, 2, 3)),
    ({"size": (5, 3), "mode": "nearest-exact"}, (1, 2, 4, 4)),
    ({"scale_factor": 2.5, "mode": "linear"}, (2, 3, 4)),
    ({"size": 7, "mode": "linear", "align_corners": True}, (1, 2, 4)),
    ({"scale_factor": 2, "mode": "bilinear"}, (2, 2, 3, 4)),
    ({"scale_factor": (1.5, 2.5), "mode": "bilinear", "align_corners": True}, (1, 2, 3, 4)),
    ({"size": (6, 3), "mode": "bilinear"}, (2, 1, 4, 5)),  # shrinks one axis
    ({"scale_factor": 2, "mode": "bicubic"}, (1, 2, 3, 4)),
    ({"size": (5, 6), "mode": "bicubic", "align_corners": True}, (2, 1, 3, 4)),
    ({"scale_factor": 2, "mode": "trilinear"}, (1, 2, 2, 3, 2)),
    ({"scale_factor": (1.5, 2, 1), "mode": "trilinear", "align_corners": True}, (2, 1, 2, 2, 3)),
    ({"size": (3, 2, 4), "mode": "trilinear", "recompute_scale_factor": None}, (1, 1, 2, 3, 2)),
]
UPSAMPLE_PARAMS = [
    pytest.param(kw, s, id=f"{'-'.join(f'{a}{b}' for a, b in kw.items())}-{'x'.join(map(str, s))}")
    for kw, s in UPSAMPLES
]


@pytest.mark.parametrize("kwargs, shape", UPSAMPLE_PARAMS)
def test_upsample_matches_torch_module_and_finite_differences(kwargs, shape):
    layer, x = L.Upsample(**kwargs), randn(1, *shape)
    module = torch.nn.Upsample(**kwargs)
    out_shape, params = layer.init(fnn.random.key(0), (-1, *shape[1:]))
    y, vjp = layer.apply(params, x)
    assert params == {} and out_shape == (-1, *y.shape[1:])
    torch.testing.assert_close(y, module(x), atol=0, rtol=0)
    dy = randn(2, *y.shape)
    _, expected_dx = autograd_vjp(lambda p, x: module(x), {}, x, dy)
    torch.testing.assert_close(vjp(dy)[1], expected_dx, atol=1e-12, rtol=1e-10)
    fnn.testing.check_vjp(layer, {}, x[:1])
    strided = randn(3, *shape[:-1], 2 * shape[-1])[..., 1::2]
    y, vjp = layer.apply({}, strided)
    torch.testing.assert_close(y, module(strided), atol=0, rtol=0)
    empty = torch.zeros(0, *shape[1:], dtype=torch.float64)
    y, vjp = layer.apply({}, empty)
    assert y.shape == module(empty).shape
    assert vjp(torch.zeros_like(y))[1].shape == empty.shape


def test_pad_and_upsample_are_example_wise():
    model = fnn.serial(
        L.Pad((1, 1, 2, 0), mode="reflect"), L.Conv(2, 3), L.Upsample(scale_factor=2, mode="bilinear"),
        L.Pad((1, 0, 0, 1), mode="circular"), L.Flatten(), L.Dense(2),
    )  # fmt: skip
    _, params = model.init(fnn.random.key(0), (-1, 1, 4, 4), dtype=torch.float64)
    x, labels = randn(1, 3, 1, 4, 4), torch.tensor([0, 1, 1])
    losses, grads = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    for i in range(3):
        loss, expected = loss_and_grads(params, x[i : i + 1], labels[i : i + 1])
        torch.testing.assert_close(losses[i], loss)
        assert_trees_close(fnn.tree.map(lambda g, i=i: g[i], grads), expected)
    batch_pad = fnn.serial(L.Pad((0, 0, 1, -1)), L.Flatten(), L.Dense(2))  # shifts examples
    _, params = batch_pad.init(fnn.random.key(0), (3, 4), dtype=torch.float64)
    with pytest.raises(fnn.errors.FnnError, match="Pad: its padding reaches the batch axis"):
        fnn.per_example_grads(batch_pad.apply, fnn.losses.mse)(
            params, randn(1, 3, 4), torch.zeros(3, 2, dtype=torch.float64)
        )


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: L.Pad(1), fnn.errors.FnnTypeError, "Pad: padding must be a tuple of ints"),
        (lambda: L.Pad(()), fnn.errors.FnnTypeError, "Pad: padding must be a tuple of ints"),
        (lambda: L.Pad((1, 2.0)), fnn.errors.FnnTypeError, "Pad: padding must be a tuple of ints"),
        (lambda: L.Pad((1, 2, 3)), fnn.errors.FnnError, "Pad: padding must have an even length"),
        (lambda: L.Pad((1, 1), mode="zeros"), fnn.errors.FnnError, "Pad: mode must be one of 'constant', 'reflect', 'replicate', 'circular'"),
        (lambda: L.Pad((1, 1), mode="reflect", value=1.0), fnn.errors.FnnError, "Pad: mode 'reflect' takes no value"),
        (lambda: L.Pad((1, 1), value="x"), fnn.errors.FnnTypeError, "Pad: value must be a number"),
        (lambda: L.Pad((1,) * 8, mode="replicate"), fnn.errors.FnnError, "Pad: replicate padding pads at most 3 axes"),
        (lambda: L.Upsample(), fnn.errors.FnnError, "Upsample: give exactly one of size and scale_factor"),
        (lambda: L.Upsample(size=2, scale_factor=2), fnn.errors.FnnError, "Upsample: give exactly one of size and scale_factor"),
        (lambda: L.Upsample(size=0), fnn.errors.FnnError, "Upsample: size must be positive"),
        (lambda: L.Upsample(size=2.0), fnn.errors.FnnTypeError, "Upsample: size must be an int or a tuple of 1 to 3 ints"),
        (lambda: L.Upsample(size=(1, 2, 3, 4)), fnn.errors.FnnTypeError, "Upsample: size must be an int or a tuple of 1 to 3 ints"),
        (lambda: L.Upsample(scale_factor=0), fnn.errors.FnnError, "Upsample: scale_factor must be positive"),
        (lambda: L.Upsample(scale_factor="2"), fnn.errors.FnnTypeError, "Upsample: scale_factor must be a number or a tuple"),
        (lambda: L.Upsample(scale_factor=2, mode="area"), fnn.errors.FnnError, "Upsample: mode must be one of 'nearest'"),
        (lambda: L.Upsample(scale_factor=2, align_corners=True), fnn.errors.FnnError, "Upsample: align_corners can only be set with the interpolating modes"),
        (lambda: L.Upsample(size=2, recompute_scale_factor=True), fnn.errors.FnnError, "Upsample: recompute_scale_factor is meaningful only with scale_factor"),
        (lambda: L.Upsample(scale_factor=(2, 2), mode="linear"), fnn.errors.FnnError, "Upsample: mode 'linear' resizes 1 spatial axes, got 2"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_bad_inputs_raise_clear_errors():
    for layer, x, error, message in [
        (L.Pad((1, 1, 1, 1)), torch.ones(3), fnn.errors.ShapeError, "Pad: padding (1, 1, 1, 1) pads 2 dimensions but the input has only 1"),
        (L.Pad((1, 1), "reflect"), torch.ones(3), fnn.errors.ShapeError, "Pad: reflect padding of 1 dimension(s) needs an input of rank 2 (unbatched) or 3 (batched), got shape (3,)"),
        (L.Pad((3, 0), "reflect"), torch.ones(1, 2, 3), fnn.errors.ShapeError, "Pad: reflect padding (3, 0) of axis 2 must be smaller than its size 3"),
        (L.Pad((4, 0), "circular"), torch.ones(1, 2, 3), fnn.errors.ShapeError, "Pad: circular padding (4, 0) of axis 2 must be at most its size 3"),
        (L.Pad((-2, -2)), torch.ones(1, 2, 3), fnn.errors.ShapeError, "Pad: padding (-2, -2) crops axis 2 of size 3 below 0"),
        (L.Pad((1, 1)), torch.ones(2, 3, dtype=torch.int64), fnn.errors.FnnTypeError, "Pad: expected a floating-point input"),
        (L.Upsample(scale_factor=2, mode="bilinear"), torch.ones(1, 2, 3), fnn.errors.ShapeError, "Upsample: mode 'bilinear' with scale_factor 2.0 expects an input of rank 4 (N, C, *spatial), got shape (1, 2, 3)"),
        (L.Upsample(size=(2, 3)), torch.ones(1, 2, 3), fnn.errors.ShapeError, "Upsample: mode 'nearest' with size (2, 3) expects an input of rank 4"),
        (L.Upsample(scale_factor=0.2), torch.ones(1, 2, 3), fnn.errors.ShapeError, "Upsample: scale_factor 0.2 makes the input's spatial size (3,) into (0,)"),
        (L.Upsample(scale_factor=2), [1.0], fnn.errors.FnnTypeError, "Upsample: expected a tensor input"),
        (L.Upsample(size=(5,)), torch.ones(1, 2, 3, 3), fnn.errors.ShapeError, "Upsample: mode 'nearest' with size (5,) expects an input of rank 3 (N, C, *spatial), got shape (1, 2, 3, 3)"),
        (L.Upsample(scale_factor=(2.0, 1.0, 2.0), mode="trilinear"), torch.ones(1, 2, 3, 3), fnn.errors.ShapeError, "Upsample: mode 'trilinear' with scale_factor (2.0, 1.0, 2.0) expects an input of rank 5"),
    ]:  # fmt: skip
        with pytest.raises(error, match=re.escape(message)):
            layer.apply({}, x)
    with pytest.raises(fnn.errors.ShapeError, match=r"Pad: reflect padding \(3, 0\)"):
        L.Pad((3, 0), "reflect").init(fnn.random.key(0), (-1, 2, 3))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"Upsample: mode 'nearest' with scale_factor 2.0"
    ):
        L.Upsample(scale_factor=2).init(fnn.random.key(0), (-1, 2))
    with pytest.raises(fnn.errors.TreeError, match=r"Upsample: takes no parameters"):
        L.Upsample(scale_factor=2).apply({"w": torch.ones(1)}, torch.ones(1, 1, 2))
    _, vjp = L.Upsample(scale_factor=2).apply({}, torch.ones(1, 1, 2))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Upsample VJP: expected a cotangent of the output's shape \(1, 1, 4\)",
    ):
        vjp(torch.ones(1, 1, 2))
    _, vjp = L.Pad((1, 1)).apply({}, torch.ones(1, 1, 2))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Pad VJP: expected a cotangent of the output's shape \(1, 1, 4\)",
    ):
        vjp(torch.ones(1, 1, 2))
