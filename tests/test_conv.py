"""Conv and ConvTranspose, 1-D, 2-D and 3-D: forward and VJP against torch.nn's Conv{1,2,3}d /
ConvTranspose{1,2,3}d modules (loaded with fnn's params, so their state_dict layout is
checked too) and torch.autograd in float64, and against central differences, over
strides, paddings ("same", "valid", tuples, padding modes), dilations, groups, odd sizes,
batch 1, empty batches, unbatched and non-contiguous inputs; per-example gradients;
torch's init; clear errors."""

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

# (kind, out_channels, kernel_size, kwargs, input shape). 2-D C = 1 takes the im2col kernel
# on CPU (groups = dilation = 1), C > 1 oneDNN's: both are covered.
CASES = [
    ("Conv", 3, 3, {}, (2, 2, 5, 6)),
    ("Conv", 4, 3, {"stride": 2, "padding": 1}, (1, 3, 7, 5)),
    ("Conv", 2, (2, 3), {"stride": (2, 1), "padding": (1, 0)}, (2, 2, 6, 5)),
    ("Conv", 3, 3, {"dilation": 2, "padding": 2}, (2, 2, 7, 7)),
    ("Conv", 4, 3, {"groups": 2, "padding": 1}, (2, 4, 5, 5)),
    ("Conv", 6, 1, {"groups": 3, "bias": False}, (1, 3, 3, 4)),
    ("Conv", 3, (2, 4), {"padding": "same"}, (2, 2, 5, 6)),  # odd remainder at the end
    ("Conv", 2, 3, {"padding": "same", "dilation": (1, 2)}, (1, 2, 5, 7)),
    ("Conv", 2, 3, {"padding": "valid"}, (3, 2, 4, 4)),
    ("Conv", 3, 3, {"padding": 1}, (2, 1, 6, 6)),  # single input channel: im2col path
    ("Conv", 3, 2, {"stride": 2, "bias": False}, (1, 1, 5, 7)),
    ("Conv", 2, (2, 4), {"padding": "same"}, (2, 1, 4, 5)),
    ("Conv", 2, 3, {"dilation": 2}, (2, 1, 6, 6)),  # single channel but dilated: oneDNN path
    ("Conv", 3, 3, {"padding": 1, "padding_mode": "reflect"}, (2, 2, 5, 6)),
    ("Conv", 2, 3, {"padding": (2, 1), "padding_mode": "replicate", "stride": 2}, (1, 1, 5, 6)),
    ("Conv", 2, (2, 3), {"padding": "same", "padding_mode": "circular"}, (2, 2, 4, 5)),
    ("Conv", 3, (3,), {}, (2, 2, 7)),  # 1-D
    ("Conv", 4, (4,), {"stride": 2, "padding": 2, "dilation": 2, "groups": 2}, (1, 2, 9)),
    ("Conv", 2, (4,), {"padding": "same", "padding_mode": "reflect"}, (2, 3, 6)),
    ("Conv", 2, (3,), {"padding": 1, "padding_mode": "circular", "bias": False}, (2, 1, 5)),
    ("Conv", 2, (2, 2, 2), {}, (2, 2, 3, 4, 3)),  # 3-D
    ("Conv", 4, (3, 1, 2), {"stride": (2, 1, 1), "padding": (1, 0, 1), "groups": 2}, (1, 2, 5, 3, 3)),
    ("Conv", 2, (3, 3, 2), {"padding": "same", "padding_mode": "replicate"}, (1, 1, 3, 3, 3)),
    ("ConvTranspose", 3, 3, {}, (2, 2, 4, 5)),
    ("ConvTranspose", 4, 3, {"stride": 2, "padding": 1, "output_padding": 1}, (1, 3, 4, 3)),
    ("ConvTranspose", 4, (2, 3), {"stride": (2, 1), "groups": 2, "bias": False}, (2, 2, 3, 3)),
    ("ConvTranspose", 2, 3, {"dilation": 2, "stride": 3, "output_padding": (2, 1)}, (1, 1, 3, 2)),
    ("ConvTranspose", 2, (4,), {"stride": 2, "padding": 1}, (2, 3, 5)),  # 1-D
    ("ConvTranspose", 6, (3,), {"groups": 3, "dilation": 2, "output_padding": 1, "stride": 2}, (1, 3, 4)),
    ("ConvTranspose", 2, (2, 2, 2), {"stride": 2}, (1, 2, 2, 3, 2)),  # 3-D
    ("ConvTranspose", 2, (3, 2, 2), {"padding": (1, 0, 1), "output_padding": (0, 1, 0), "stride": 2}, (2, 1, 2, 2, 3)),
]  # fmt: skip
PARAMS = [
    pytest.param(
        kind,
        o,
        k,
        kw,
        shape,
        id=f"{kind}-o{o}-k{k}-{'-'.join(f'{a}{b}' for a, b in kw.items())}-{'x'.join(map(str, shape))}",
    )
    for kind, o, k, kw, shape in CASES
]


def _layer(kind, out, kernel, kwargs):
    return getattr(L, kind)(out, kernel, **kwargs)


def _setup(kind, out, kernel, kwargs, shape, dtype=torch.float64, seed=1):
    layer = _layer(kind, out, kernel, kwargs)
    _, params = layer.init(fnn.random.key(seed), (-1, *shape[1:]), dtype=dtype)
    return layer, params, randn(seed + 1, *shape, dtype=dtype)


def torch_module(kind, in_channels, out, kernel, kwargs):
    """The torch.nn twin: Conv{n}d or ConvTranspose{n}d with the same arguments."""
    n = len(kernel) if isinstance(kernel, tuple) else 2
    return getattr(torch.nn, f"{kind}{n}d")(in_channels, out, kernel, **kwargs)


def _reference(kind, out, kernel, kwargs, in_channels, dtype=torch.float64):
    module = torch_module(kind, in_channels, out, kernel, kwargs).to(dtype)

    def conv(p, x):
        return torch.func.functional_call(module, p, (x,), strict=True)

    return module, conv


@pytest.mark.parametrize("kind, out, kernel, kwargs, shape", PARAMS)
def test_vjp_matches_finite_differences(kind, out, kernel, kwargs, shape):
    layer, params, x = _setup(kind, out, kernel, kwargs, shape)
    fnn.testing.check_vjp(layer, params, x[:1])


@pytest.mark.parametrize("kind, out, kernel, kwargs, shape", PARAMS)
def test_forward_and_vjp_match_torch_module_and_autograd(kind, out, kernel, kwargs, shape):
    layer, params, x = _setup(kind, out, kernel, kwargs, shape)
    module, reference = _reference(kind, out, kernel, kwargs, shape[1])
    module.load_state_dict(params)  # strict: torch.nn's names and layouts
    out_shape, _ = layer.init(fnn.random.key(0), (-1, *shape[1:]))
    y, vjp = layer.apply(params, x)
    assert out_shape == (-1, *y.shape[1:])
    torch.testing.assert_close(y, module(x).detach(), atol=1e-12, rtol=1e-10)
    dy = randn(3, *y.shape)
    dparams, dx = vjp(dy)
    expected_dparams, expected_dx = autograd_vjp(reference, params, x, dy)
    assert_trees_close(dparams, expected_dparams)
    torch.testing.assert_close(dx, expected_dx, atol=1e-10, rtol=1e-8)
    # unbatched: (C, *spatial) in, (out, *spatial') out, as torch
    y1, vjp1 = layer.apply(params, x[0])
    torch.testing.assert_close(y1, y[0], atol=1e-12, rtol=1e-10)
    dparams1, dx1 = vjp1(dy[0])
    expected_dparams1, expected_dx1 = autograd_vjp(reference, params, x[0], dy[0])
    assert_trees_close(dparams1, expected_dparams1)
    torch.testing.assert_close(dx1, expected_dx1, atol=1e-10, rtol=1e-8)
    assert layer.init(fnn.random.key(0), shape[1:])[0] == tuple(y1.shape)


@pytest.mark.parametrize("kind, out, kernel, kwargs, shape", PARAMS[::3])
def test_float32_matches_torch_module(kind, out, kernel, kwargs, shape):
    layer, params, x = _setup(kind, out, kernel, kwargs, shape, dtype=torch.float32)
    module = torch_module(kind, shape[1], out, kernel, kwargs)
    module.load_state_dict(params)
    y, vjp = layer.apply(params, x)
    assert y.dtype == torch.float32
    with torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        module(xr).backward(torch.ones_like(y))
    dparams, dx = vjp(torch.ones_like(y))
    torch.testing.assert_close(y, module(x).detach())
    torch.testing.assert_close(dx, xr.grad, atol=1e-5, rtol=1e-5)
    for name, p in module.named_parameters():
        torch.testing.assert_close(dparams[name], p.grad, atol=1e-4, rtol=1e-5)
    # and the other way: a torch module's own weights load into the fnn layer as they are
    fresh = torch_module(kind, shape[1], out, kernel, kwargs)
    y_fresh, _ = layer.apply(fnn.tree.from_state_dict(fresh.state_dict()), x)
    torch.testing.assert_close(y_fresh, fresh(x).detach())


@pytest.mark.parametrize("kind, out, kernel, kwargs, shape", PARAMS[::2])
def test_empty_batch_gives_empty_output_and_zero_parameter_gradients(
    kind, out, kernel, kwargs, shape
):
    layer, params, _ = _setup(kind, out, kernel, kwargs, shape)
    x = torch.zeros(0, *shape[1:], dtype=torch.float64)
    y, vjp = layer.apply(params, x)
    _, reference = _reference(kind, out, kernel, kwargs, shape[1])
    assert y.shape == reference(params, x).shape and y.shape[0] == 0
    dparams, dx = vjp(torch.zeros_like(y))
    assert dx.shape == x.shape
    for leaf, p in zip(fnn.tree.leaves(dparams), fnn.tree.leaves(params)):
        assert leaf.shape == p.shape and not leaf.any()


@pytest.mark.parametrize("kind, out, kernel, kwargs, shape", PARAMS[1::4])
def test_non_contiguous_input_matches_its_contiguous_copy(kind, out, kernel, kwargs, shape):
    layer, params, _ = _setup(kind, out, kernel, kwargs, shape)
    wide = randn(5, *shape[:-1], 2 * shape[-1])
    strided = wide[..., ::2]  # every other column: a view with a stride of 2
    assert not strided.is_contiguous()
    y, vjp = layer.apply(params, strided)
    y_copy, vjp_copy = layer.apply(params, strided.contiguous())
    torch.testing.assert_close(y, y_copy, atol=0, rtol=0)
    dy = randn(3, *y.shape).transpose(0, 1).contiguous().transpose(0, 1)  # same values
    assert_trees_close(vjp(dy), vjp_copy(dy.contiguous()), atol=1e-12, rtol=1e-10)


def test_vjp_pickles_replays_and_leaves_inputs_alone():
    layer, params, x = _setup("Conv", 4, 3, {"padding": "same"}, (2, 2, 5, 6))
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


@pytest.mark.parametrize(
    "n, layers",
    [
        (2, [L.Conv(3, 3, padding=1), L.Relu(), L.Conv(2, 2, stride=2, groups=1)]),
        (1, [L.Conv(4, (3,), padding="same", padding_mode="reflect", groups=2)]),
        (3, [L.ConvTranspose(4, (2, 2, 2), stride=2, groups=2), L.Tanh()]),
    ],
    ids=["2d", "1d-reflect", "3d-transposed"],
)
def test_per_example_grads_equal_each_examples_own_gradient(n, layers):
    shape = (-1, 2, *(4,) * n)
    model = fnn.serial(*layers, L.Flatten(), L.Dense(3))
    _, params = model.init(fnn.random.key(0), shape, dtype=torch.float64)
    x, labels = randn(1, 4, *shape[1:]), torch.tensor([0, 2, 1, 1])
    losses, grads = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    for i in range(4):
        loss, expected = loss_and_grads(params, x[i : i + 1], labels[i : i + 1])
        torch.testing.assert_close(losses[i], loss)
        assert_trees_close(fnn.tree.map(lambda g, i=i: g[i], grads), expected)
    empty_losses, empty = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(
        params, x[:0], labels[:0]
    )
    assert empty_losses.shape == (0,)
    assert all(g.shape[0] == 0 for g in fnn.tree.leaves(empty))


@pytest.mark.parametrize(
    "kind, in_channels, kernel, groups, fan_in",
    [
        ("Conv", 8, (3, 5), 2, 4 * 3 * 5),  # in / groups · Π k
        ("Conv", 6, (4,), 3, 2 * 4),
        ("ConvTranspose", 8, (3, 5), 2, 24 * 3 * 5),  # out / groups · Π k, as torch
        ("ConvTranspose", 4, (2, 2, 3), 1, 48 * 12),
    ],
)
def test_default_init_is_torchs_uniform_in_one_over_sqrt_fan_in(
    kind, in_channels, kernel, groups, fan_in
):
    layer = getattr(L, kind)(48, kernel, groups=groups)
    shape = (-1, in_channels, *(9,) * len(kernel))
    _, params = layer.init(fnn.random.key(0), shape)
    module = torch_module(kind, in_channels, 48, kernel, {"groups": groups})
    assert {k: v.shape for k, v in params.items()} == {
        k: v.shape for k, v in module.state_dict().items()
    }
    bound = fan_in**-0.5
    for leaf in params.values():
        assert leaf.abs().max() <= bound
        assert leaf.abs().max() > 0.9 * bound  # spread over the whole interval, not a narrower one
    again = layer.init(fnn.random.key(0), shape)[1]
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
    assert L.ConvTranspose(2, 3, stride=2, padding=1, output_padding=1).init(
        fnn.random.key(0), (-1, 1, 8, 6)
    )[0] == (-1, 2, 16, 12)
    assert L.Conv(2, (3,)).init(fnn.random.key(0), (4, 9))[0] == (2, 7)  # unbatched 1-D


def _escape(message):
    return message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: L.Conv(0, 3), fnn.errors.FnnError, "Conv: out_channels must be a positive int"),
        (lambda: L.Conv(4, 0), fnn.errors.FnnError, "Conv: kernel_size must be positive"),
        (lambda: L.Conv(4, (3, -1)), fnn.errors.FnnError, "Conv: kernel_size must be positive"),
        (lambda: L.Conv(4, 3, stride=0), fnn.errors.FnnError, "Conv: stride must be positive"),
        (lambda: L.Conv(4, 3, dilation=0), fnn.errors.FnnError, "Conv: dilation must be positive"),
        (lambda: L.Conv(4, 3, padding=-1), fnn.errors.FnnError, "Conv: padding must be ≥ 0"),
        (lambda: L.Conv(4, 3, padding="full"), fnn.errors.FnnError, "Conv: padding must be an int, a tuple of 2 ints, 'same' or 'valid'"),
        (lambda: L.Conv(4, 3, padding="same", stride=2), fnn.errors.FnnError, "Conv: padding='same' needs stride 1"),
        (lambda: L.Conv(4, 3, groups=3), fnn.errors.FnnError, "Conv: out_channels (4) must be divisible by groups (3)"),
        (lambda: L.Conv(4, 3, groups=0), fnn.errors.FnnError, "Conv: groups must be a positive int"),
        (lambda: L.Conv(4, (1, 2, 3, 4)), fnn.errors.FnnTypeError, "Conv: kernel_size must be an int (2-D) or a tuple of 1, 2 or 3 ints"),
        (lambda: L.Conv(4, ()), fnn.errors.FnnTypeError, "Conv: kernel_size must be an int (2-D) or a tuple"),
        (lambda: L.Conv(4, 2.5), fnn.errors.FnnTypeError, "Conv: kernel_size must be an int (2-D) or a tuple"),
        (lambda: L.Conv(4, (3,), stride=(1, 2)), fnn.errors.FnnTypeError, "Conv: stride must be an int or a tuple of 1 int(s)"),
        (lambda: L.Conv(4, (3, 3, 3), padding=(1, 1)), fnn.errors.FnnTypeError, "Conv: padding must be an int or a tuple of 3 int(s)"),
        (lambda: L.Conv(4, 3, padding_mode="mirror"), fnn.errors.FnnError, "Conv: padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular'"),
        (lambda: L.ConvTranspose(4, 3, padding="same"), fnn.errors.FnnTypeError, "ConvTranspose: padding must be an int or a tuple of 2 int(s)"),
        (lambda: L.ConvTranspose(4, 3, output_padding=1), fnn.errors.FnnError, "ConvTranspose: output_padding 1 must be smaller than the stride 1 or the dilation 1"),
        (lambda: L.ConvTranspose(4, 3, stride=2, output_padding=-1), fnn.errors.FnnError, "ConvTranspose: output_padding must be ≥ 0"),
        (lambda: L.ConvTranspose(3, (3,), groups=2), fnn.errors.FnnError, "ConvTranspose: out_channels (3) must be divisible by groups (2)"),
    ],
)  # fmt: skip
def test_bad_constructor_arguments_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=_escape(message)):
        make()


def test_bad_input_shapes_raise_errors_naming_conv():
    init, apply = L.Conv(4, 3, groups=2)
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: expected an NCHW input shape \(N, C, H, W\) or unbatched \(C, H, W\)",
    ):
        init(fnn.random.key(0), (-1, 4))
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
        match=r"Conv: expected an input with 4 channels \(axis 1 of an NCHW input \(N, C, H, W\)\), got shape \(2, 6, 8, 8\)",
    ):
        apply(params, torch.ones(2, 6, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: expected an input with 4 channels \(axis 0 of an unbatched NCHW input \(C, H, W\)\), got shape \(6, 8, 8\)",
    ):
        apply(params, torch.ones(6, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: expected an NCHW input \(N, C, H, W\) or unbatched \(C, H, W\) for a 2-D kernel, got shape \(8, 8\)",
    ):
        apply(params, torch.ones(8, 8))
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
    with pytest.raises(fnn.errors.ShapeError, match=r"Conv: params\['bias'\] has shape \(3,\)"):
        apply({**params, "bias": torch.ones(3)}, torch.ones(2, 4, 8, 8))
    _y, vjp = apply(params, torch.ones(2, 4, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv VJP: expected a cotangent of the output's shape \(2, 4, 6, 6\)",
    ):
        vjp(torch.ones(2, 4, 8, 8))
    _y, vjp = apply(params, torch.ones(4, 8, 8))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv VJP: expected a cotangent of the output's shape \(4, 6, 6\)",
    ):
        vjp(torch.ones(1, 4, 6, 6))
    reflect = L.Conv(2, (3,), padding=3, padding_mode="reflect")
    _, p1 = reflect.init(fnn.random.key(0), (-1, 1, 5))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"Conv: reflect padding \(3, 3\) of axis 2 must be smaller than its size 3",
    ):
        reflect.apply(p1, torch.ones(2, 1, 3))
    init_t, apply_t = L.ConvTranspose(4, (3,), padding=3)
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"ConvTranspose: input of spatial size \(2,\) gives an empty output",
    ):
        init_t(fnn.random.key(0), (-1, 2, 2))
    _, pt = init_t(fnn.random.key(0), (-1, 2, 9))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"ConvTranspose: params\['weight'\] has shape \(2, 3, 3\), expected \('in_channels', 4, 3\)",
    ):
        apply_t({**pt, "weight": torch.ones(2, 3, 3)}, torch.ones(1, 2, 9))
    with pytest.raises(
        fnn.errors.ShapeError,
        match=r"ConvTranspose: expected an input with 2 channels \(axis 1 of an NCL input",
    ):
        apply_t(pt, torch.ones(1, 3, 9))
    with pytest.raises(
        fnn.errors.FnnError, match=r"Conv: per-example gradients need a batched input"
    ):
        fnn.per_example_grads(L.Conv(2, (3,)).apply, fnn.losses.mse)(
            L.Conv(2, (3,)).init(fnn.random.key(0), (2, 5))[1], torch.ones(2, 5), torch.ones(2, 3)
        )


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


def _plain_conv_backward(residuals, dy):
    return fnn.layers.conv.conv_backward(residuals, dy)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (L.Conv(3, 3, padding=1), (3, 1, 6, 6)),  # im2col kernel
        (L.Conv(3, (2, 4), padding="same"), (3, 2, 5, 6)),  # pre-padded
        (L.Conv(2, (3,), padding=1, padding_mode="reflect"), (3, 2, 7)),
        (L.ConvTranspose(2, (2, 2, 2), stride=2), (3, 2, 2, 2, 2)),
    ],
    ids=["im2col", "same", "reflect-1d", "transposed-3d"],
)
def test_vmap_fallback_works_when_the_backward_is_swapped(layer, shape):
    # A plain-function backward has no per-example rule: per_example_grads vmaps apply and VJP
    model = fnn.serial(fnn.with_vjp(layer, _plain_conv_backward), L.Flatten(), L.Dense(2))
    _, params = model.init(fnn.random.key(0), (-1, *shape[1:]), dtype=torch.float64)
    x, labels = randn(1, *shape), torch.tensor([0, 1, 1])
    _, grads = fnn.per_example_grads(model.apply, fnn.losses.cross_entropy)(params, x, labels)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy)
    for i in range(3):
        _, expected = loss_and_grads(params, x[i : i + 1], labels[i : i + 1])
        assert_trees_close(fnn.tree.map(lambda g, i=i: g[i], grads), expected)
