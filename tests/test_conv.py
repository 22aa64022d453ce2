"""Conv: VJP against central differences (float64) and torch.autograd on F.conv2d, over
strides, paddings ("same", "valid", pairs), dilations, groups, odd sizes and batch 1;
torch.nn.Conv2d's layout and init; clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

import fnn
from fnn import layers as L

from .helpers import assert_trees_close, autograd_vjp, randn

pytestmark = pytest.mark.filterwarnings(
    "ignore:Using padding='same' with even kernel"
)  # torch's, not ours

# Conv(out_channels, kernel, **kwargs) on an input of shape (N, C, H, W). C = 1 takes the
# im2col kernel on CPU (when groups = dilation = 1), C > 1 oneDNN's: both are covered.
CASES = [
    (3, 3, {}, (2, 2, 5, 6)),
    (4, 3, {"stride": 2, "padding": 1}, (1, 3, 7, 5)),
    (2, (2, 3), {"stride": (2, 1), "padding": (1, 0)}, (2, 2, 6, 5)),
    (3, 3, {"dilation": 2, "padding": 2}, (2, 2, 7, 7)),
    (4, 3, {"groups": 2, "padding": 1}, (2, 4, 5, 5)),
    (6, 1, {"groups": 3, "bias": False}, (1, 3, 3, 4)),
    (
        3,
        (2, 4),
        {"padding": "same"},
        (2, 2, 5, 6),
    ),  # even kernel: the odd extra row/column at the end
    (2, 3, {"padding": "same", "dilation": (1, 2)}, (1, 2, 5, 7)),
    (2, 3, {"padding": "valid"}, (3, 2, 4, 4)),
    (3, 3, {"padding": 1}, (2, 1, 6, 6)),  # single input channel: im2col path
    (3, 2, {"stride": 2, "bias": False}, (1, 1, 5, 7)),
    (2, (2, 4), {"padding": "same"}, (2, 1, 4, 5)),
    (2, 3, {"dilation": 2}, (2, 1, 6, 6)),  # single channel but dilated: oneDNN path
]
PARAMS = [
    pytest.param(
        o,
        k,
        kw,
        shape,
        id=f"o{o}-k{k}-{'-'.join(f'{a}{b}' for a, b in kw.items())}-{'x'.join(map(str, shape))}",
    )
    for o, k, kw, shape in CASES
]


def _setup(out, kernel, kwargs, shape, dtype=torch.float64, seed=1):
    layer = L.Conv(out, kernel, **kwargs)
    _, params = layer.init(fnn.random.key(seed), (-1, *shape[1:]), dtype=dtype)
    return layer, params, randn(seed + 1, *shape, dtype=dtype)


def _reference(kwargs):
    torch_kwargs = {k: v for k, v in kwargs.items() if k != "bias"}

    def conv2d(p, x):
        return F.conv2d(x, p["weight"], p.get("bias"), **torch_kwargs)

    return conv2d


@pytest.mark.parametrize("out, kernel, kwargs, shape", PARAMS)
def test_vjp_matches_finite_differences(out, kernel, kwargs, shape):
    layer, params, x = _setup(out, kernel, kwargs, shape)
    fnn.testing.check_vjp(layer, params, x)


@pytest.mark.parametrize("out, kernel, kwargs, shape", PARAMS)
def test_forward_and_vjp_match_torch_autograd(out, kernel, kwargs, shape):
    layer, params, x = _setup(out, kernel, kwargs, shape)
    y, vjp = layer.apply(params, x)
    torch.testing.assert_close(y, _reference(kwargs)(params, x), atol=1e-12, rtol=1e-10)
    dy = randn(3, *y.shape)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(_reference(kwargs), params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    torch.testing.assert_close(dx, expected_dx, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("out, kernel, kwargs, shape", PARAMS)
def test_float32_matches_torch_conv2d_module(out, kernel, kwargs, shape):
    layer, params, x = _setup(out, kernel, kwargs, shape, dtype=torch.float32)
    out_shape, _ = layer.init(fnn.random.key(0), (-1, *shape[1:]))
    module = torch.nn.Conv2d(shape[1], out, kernel, **kwargs)
    module.load_state_dict(params)  # strict: same names and layouts as torch.nn.Conv2d
    y, vjp = layer.apply(params, x)
    assert y.dtype == torch.float32 and out_shape == (-1, *y.shape[1:])
    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        module(xr).backward(torch.ones_like(y))
    dparams, dx = vjp(torch.ones_like(y))
    torch.testing.assert_close(y, module(x).detach())
    torch.testing.assert_close(dx, xr.grad, atol=1e-5, rtol=1e-5)
    for name, p in module.named_parameters():
        torch.testing.assert_close(dparams[name], p.grad, atol=1e-4, rtol=1e-5)


def test_vjp_pickles_replays_and_leaves_inputs_alone():
    layer, params, x = _setup(4, 3, {"padding": "same"}, (2, 2, 5, 6))
    before = (x.clone(), fnn.tree.map(torch.clone, params))
    y, vjp = layer.apply(params, x)
    dy = randn(4, *y.shape)
    first = vjp(dy)
    assert_trees_close(pickle.loads(pickle.dumps(vjp))(dy), first, atol=0, rtol=0)
    assert torch.equal(x, before[0])
    assert_trees_close(params, before[1], atol=0, rtol=0)
    assert not y.requires_grad and not first[1].requires_grad


@pytest.mark.parametrize("channels", [1, 3])
def test_first_layer_gradients_through_value_and_grad_match_autograd(channels):
    # value_and_grad asks the first layer for no dx: the params' gradients must not change.
    model = fnn.serial(L.Conv(4, 3, stride=2, padding=1), L.Relu(), L.Flatten(), L.Dense(3))
    _, params = model.init(fnn.random.key(0), (-1, channels, 7, 7), dtype=torch.float64)
    x, labels = randn(1, 5, channels, 7, 7), torch.tensor([0, 2, 1, 1, 0])
    _, grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    seq = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 3),
    ).double()
    seq.load_state_dict(fnn.tree.to_state_dict(params))
    with torch.enable_grad():
        F.cross_entropy(seq(x), labels).backward()
    for name, p in seq.named_parameters():
        torch.testing.assert_close(
            fnn.tree.to_state_dict(grads)[name], p.grad, atol=1e-12, rtol=1e-10
        )


def test_default_init_is_torch_conv2d_uniform_in_one_over_sqrt_fan_in():
    _, params = L.Conv(64, (3, 5), groups=2).init(fnn.random.key(0), (-1, 8, 9, 9))
    fan_in = 4 * 3 * 5  # in_channels / groups · kh · kw
    bound = fan_in**-0.5
    assert params["weight"].shape == (64, 4, 3, 5) and params["bias"].shape == (64,)
    for leaf in params.values():
        assert leaf.abs().max() <= bound
        assert leaf.abs().max() > 0.9 * bound  # spread over the whole interval, not a narrower one
    again = L.Conv(64, (3, 5), groups=2).init(fnn.random.key(0), (-1, 8, 9, 9))[1]
    assert torch.equal(again["weight"], params["weight"])


def test_output_shapes_follow_torch_formula():
    for kwargs, expected in [
        ({}, (-1, 2, 6, 4)),
        ({"stride": 2}, (-1, 2, 3, 2)),
        ({"padding": 1, "stride": (2, 3)}, (-1, 2, 4, 2)),
        ({"padding": "same"}, (-1, 2, 8, 6)),
        ({"dilation": 2, "padding": 1}, (-1, 2, 6, 4)),
    ]:
        assert L.Conv(2, 3, **kwargs).init(fnn.random.key(0), (-1, 1, 8, 6))[0] == expected


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: L.Conv(0, 3), "Conv: out_channels must be a positive int"),
        (lambda: L.Conv(4, 0), "Conv: kernel_size must be positive"),
        (lambda: L.Conv(4, (3, -1)), "Conv: kernel_size must be positive"),
        (lambda: L.Conv(4, 3, stride=0), "Conv: stride must be positive"),
        (lambda: L.Conv(4, 3, dilation=0), "Conv: dilation must be positive"),
        (lambda: L.Conv(4, 3, padding=-1), "Conv: padding must be ≥ 0"),
        (
            lambda: L.Conv(4, 3, padding="full"),
            "Conv: padding must be an int, a pair, 'same' or 'valid'",
        ),
        (lambda: L.Conv(4, 3, padding="same", stride=2), "Conv: padding='same' needs stride 1"),
        (lambda: L.Conv(4, 3, groups=3), "Conv: out_channels (4) must be divisible by groups (3)"),
        (lambda: L.Conv(4, (1, 2, 3)), "Conv: kernel_size must be an int or a pair of ints"),
        (lambda: L.Conv(4, 2.5), "Conv: kernel_size must be an int or a pair of ints"),
    ],
)
def test_bad_constructor_arguments_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_bad_input_shapes_raise_errors_naming_conv():
    init, apply = L.Conv(4, 3, groups=2)
    with pytest.raises(fnn.errors.ShapeError, match=r"Conv: expected an NCHW input shape"):
        init(fnn.random.key(0), (-1, 4, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: input channels \(3\) must be a positive multiple of groups",
    ):
        init(fnn.random.key(0), (-1, 3, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: input of spatial size \(2, 8\) is smaller than the kernel",
    ):
        init(fnn.random.key(0), (-1, 4, 2, 8))
    _, params = init(fnn.random.key(0), (-1, 4, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: expected an input with 4 channels \(axis 1\), got shape \(2, 6, 8, 8\)",
    ):
        apply(params, torch.ones(2, 6, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: expected an NCHW input \(N, C, H, W\), got shape \(4, 8, 8\)",
    ):
        apply(params, torch.ones(4, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: input of spatial size \(2, 2\) is smaller than the kernel",
    ):
        apply(params, torch.ones(1, 4, 2, 2))
    with pytest.raises(fnn.errors.FnnTypeError, match="Conv: expected a floating-point input"):
        apply(params, torch.ones(2, 4, 8, 8, dtype=torch.int64))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"Conv: params\['weight'\] has shape \(4, 2, 5, 5\)"
    ):
        apply({**params, "weight": torch.ones(4, 2, 5, 5)}, torch.ones(2, 4, 8, 8))
    with pytest.raises(fnn.errors.TreeError, match=r"Conv: params missing \['bias'\]"):
        apply({"weight": params["weight"]}, torch.ones(2, 4, 8, 8))
    _y, vjp = apply(params, torch.ones(2, 4, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv VJP: expected a cotangent of the output's shape \(2, 4, 6, 6\)",
    ):
        vjp(torch.ones(2, 4, 8, 8))


def test_errors_inside_serial_name_the_position():
    init, apply = fnn.serial(L.Conv(4, 3), L.Relu(), L.Conv(8, 3))
    _, params = init(fnn.random.key(0), (-1, 1, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"^serial\[0\] Conv: expected an input with 1 channels"
    ):
        apply(params, torch.ones(2, 3, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError, match=r"^serial\[2\] Conv: input of spatial size \(2, 2\)"
    ):
        apply(params, torch.ones(2, 1, 4, 4))
