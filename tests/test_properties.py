"""Property-based tests: random stacks of layers, widths, batch sizes (0 and 1 included) and dtypes.

For every drawn model:
- the forward shape and dtype agree with what `init` promised;
- every VJP agrees with central differences (`fnn.testing.check_vjp`, float64);
- `value_and_grad` agrees with `torch.autograd` on the equivalent `torch.nn` model,
  loaded from the same params through `fnn.tree.to_state_dict`;
- empty batches work (or would raise a clear fnn error), never crash inside torch.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnn
from fnn import layers as L

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# name -> (fnn layer, torch.nn module given the input features); Dense takes a width.
ACTIVATIONS = {
    "Relu": (L.Relu, lambda f: torch.nn.ReLU()),
    "Tanh": (L.Tanh, lambda f: torch.nn.Tanh()),
    "Sigmoid": (L.Sigmoid, lambda f: torch.nn.Sigmoid()),
    "LeakyRelu": (lambda: L.LeakyRelu(0.2), lambda f: torch.nn.LeakyReLU(0.2)),
    "Elu": (L.Elu, lambda f: torch.nn.ELU()),
    "Gelu": (L.Gelu, lambda f: torch.nn.GELU()),
    "Softplus": (L.Softplus, lambda f: torch.nn.Softplus()),
    "Identity": (L.Identity, lambda f: torch.nn.Identity()),
    "Softmax": (L.Softmax, lambda f: torch.nn.Softmax(-1)),
    "LogSoftmax": (L.LogSoftmax, lambda f: torch.nn.LogSoftmax(-1)),
}
if hasattr(L, "LayerNorm"):
    ACTIVATIONS["LayerNorm"] = (L.LayerNorm, lambda f: torch.nn.LayerNorm(f))

specs = st.one_of(
    st.tuples(st.just("Dense"), st.integers(1, 5)),
    st.tuples(st.sampled_from(sorted(ACTIVATIONS)), st.just(0)),
)
stacks = st.lists(specs, min_size=1, max_size=4)
batches = st.sampled_from([0, 1, 2, 3, 5])
dtypes = st.sampled_from([torch.float32, torch.float64])


def build(stack):
    """The fnn model for `stack`."""
    layers = [L.Dense(w) if name == "Dense" else ACTIVATIONS[name][0]() for name, w in stack]
    return fnn.serial(*layers)


def build_torch(stack, features, params, dtype):
    """The equivalent `torch.nn.Sequential`, holding the same params."""
    modules = []
    for name, width in stack:
        if name == "Dense":
            modules.append(torch.nn.Linear(features, width))
            features = width
        else:
            modules.append(ACTIVATIONS[name][1](features))
    seq = torch.nn.Sequential(*modules).to(dtype)
    seq.load_state_dict(fnn.tree.to_state_dict(params))
    return seq


def draw_input(batch, middle, features, dtype, seed=1):
    shape = (batch, *middle, features)
    return fnn.random.normal(fnn.random.key(seed), shape, dtype=dtype)


@SETTINGS
@given(
    stack=stacks,
    features=st.integers(1, 5),
    batch=batches,
    middle=st.sampled_from([(), (2,)]),
    dtype=dtypes,
)
def test_forward_shapes_and_dtypes_agree_with_init(stack, features, batch, middle, dtype):
    model = build(stack)
    out_shape, params = model.init(fnn.random.key(0), (-1, *middle, features), dtype=dtype)
    concrete, _ = model.init(fnn.random.key(0), (batch, *middle, features), dtype=dtype)
    assert out_shape[0] == -1 and concrete == (batch, *out_shape[1:])
    assert all(p.dtype == dtype for p in fnn.tree.leaves(params))
    x = draw_input(batch, middle, features, dtype)
    y, vjp = model.apply(params, x)
    assert tuple(y.shape) == concrete and y.dtype == dtype
    dparams, dx = vjp(torch.ones_like(y))
    assert dx.shape == x.shape and dx.dtype == dtype
    fnn.tree.assert_same_structure(params, dparams, "dparams")
    assert all(g.dtype == dtype for g in fnn.tree.leaves(dparams))


@SETTINGS
@given(stack=stacks, features=st.integers(1, 4), batch=st.sampled_from([0, 1, 2, 3]), dtype=dtypes)
def test_vjps_agree_with_central_differences(stack, features, batch, dtype):
    model = build(stack)
    _, params = model.init(fnn.random.key(0), (-1, features), dtype=dtype)
    x = draw_input(batch, (), features, dtype)
    fnn.testing.check_vjp(model, params, x, atol=1e-6, rtol=1e-4)


@SETTINGS
@given(
    stack=stacks,
    features=st.integers(1, 5),
    batch=batches,
    middle=st.sampled_from([(), (2,)]),
    dtype=dtypes,
    loss_name=st.sampled_from(["mse", "cross_entropy"]),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_value_and_grad_agrees_with_torch_autograd(
    stack, features, batch, middle, dtype, loss_name, reduction
):
    model = build(stack)
    out_shape, params = model.init(fnn.random.key(0), (-1, *middle, features), dtype=dtype)
    x = draw_input(batch, middle, features, dtype)
    if loss_name == "cross_entropy" and not middle:
        target = fnn.random.randint(fnn.random.key(2), (batch,), 0, out_shape[-1])
        fnn_loss, torch_loss = fnn.losses.cross_entropy, torch.nn.functional.cross_entropy
    else:
        target = draw_input(batch, middle, out_shape[-1], dtype, seed=2)
        fnn_loss, torch_loss = fnn.losses.mse, torch.nn.functional.mse_loss

    def loss(pred, t):
        return fnn_loss(pred, t, reduction=reduction)

    value, grads = fnn.value_and_grad(model.apply, loss)(params, x, target)

    y, vjp = model.apply(params, x)
    _, dx = vjp(loss(y, target)[1](1.0))

    seq = build_torch(stack, features, params, dtype)
    x_ref = x.clone().requires_grad_(True)
    ref = torch_loss(seq(x_ref), target, reduction=reduction)
    ref.backward()
    ref_grads = fnn.tree.from_state_dict({k: p.grad for k, p in seq.named_parameters()})

    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
    torch.testing.assert_close(
        value, ref.detach(), equal_nan=True, **tol
    )  # NaN: the mean of an empty batch
    torch.testing.assert_close(dx, x_ref.grad, **tol)
    got = fnn.tree.to_state_dict(grads)
    assert list(got) == [k for k, _ in seq.named_parameters()]
    for name, g in got.items():
        torch.testing.assert_close(g, fnn.tree.to_state_dict(ref_grads)[name], msg=name, **tol)


@pytest.mark.parametrize("batch", [0, 1])
def test_empty_and_single_batches_run_end_to_end(batch):
    """A full train step on 0 or 1 examples: no torch crash, the shapes and dtypes hold."""
    model = fnn.serial(L.Dense(5), L.Relu(), L.Dropout(0.5), L.Dense(3), L.LogSoftmax())
    _, params = model.init(fnn.random.key(0), (-1, 4))
    x, labels = torch.ones(batch, 4), torch.zeros(batch, dtype=torch.long)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.cross_entropy, has_aux=True)
    (loss, y), grads = loss_and_grads(params, x, labels, key=fnn.random.key(1))
    assert y.shape == (batch, 3)
    assert torch.isnan(loss) if batch == 0 else torch.isfinite(loss)
    if batch == 0:  # like torch: the mean over no examples is NaN, the gradients are zeros
        assert all(not g.any() for g in fnn.tree.leaves(grads))
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    new, _ = opt.update(params, grads, opt.init(params))
    assert fnn.tree.structure(new) == fnn.tree.structure(params)


def test_empty_batches_through_every_layer_family():
    x = torch.ones(0, 3, 6, 6)
    layers = [L.Flatten(), L.Dense(4), L.Softmax()]
    if hasattr(L, "Conv"):
        layers = [L.Conv(2, 3, padding=1), L.MaxPool(2), L.AvgPool(1), *layers]
    model = fnn.serial(*layers)
    out_shape, params = model.init(fnn.random.key(0), (-1, 3, 6, 6))
    y, vjp = model.apply(params, x)
    assert tuple(y.shape) == (0, *out_shape[1:])
    dparams, dx = vjp(torch.ones_like(y))
    assert dx.shape == x.shape and all(not g.any() for g in fnn.tree.leaves(dparams))
