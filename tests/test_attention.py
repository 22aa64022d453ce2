"""MultiHeadAttention: forward and VJP equal torch.nn.MultiheadAttention's (float64, autograd)
for self- and cross-attention, causal and key-padding masks, with and without biases, batch
1 and 0, T = 1, unbatched and non-contiguous inputs; central differences; dropout on the math
path against the same computation by autograd; the VJP keeps no T×T tensor on the flash path;
state_dicts load both ways; research hooks (with_vjp, remat per block, per_example_grads);
clear errors."""

from __future__ import annotations

import pickle
import weakref

import pytest
import torch

import fnn
from fnn import layers as L
from fnn.layers.attention import attention_backward

from .helpers import assert_trees_close, autograd_vjp, randn


def _module(embed, heads, bias, params):
    module = torch.nn.MultiheadAttention(embed, heads, bias=bias, batch_first=True).double()
    module.load_state_dict(fnn.tree.to_state_dict(params))
    return module


def _torch_attention(module, causal, cross, padding):
    """`f(params, x)` running `module` on the params by torch.func.functional_call."""

    def f(params, x):
        query, key, value = x if cross else (x, x, x)
        length, source = query.shape[-2], key.shape[-2]
        mask = torch.ones(length, source, dtype=torch.bool).triu(1) if causal else None
        if mask is not None and padding is not None and padding.is_floating_point():
            mask = torch.zeros(length, source, dtype=padding.dtype).masked_fill(mask, -torch.inf)
        kwargs = dict(key_padding_mask=padding, attn_mask=mask, need_weights=False)
        state = fnn.tree.to_state_dict(params)
        return torch.func.functional_call(module, state, (query, key, value), kwargs)[0]

    return f


CASES = [  # (N, L, S, cross)
    (3, 5, 5, False),
    (1, 4, 4, False),
    (2, 1, 1, False),
    (3, 4, 6, True),
    (1, 1, 3, True),
]


@pytest.mark.parametrize("padding", [None, "bool", "float"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, length, source, cross", CASES, ids=str)
def test_attention_matches_torch_and_autograd(n, length, source, cross, causal, bias, padding):
    embed, heads = 8, 2
    layer = L.MultiHeadAttention(heads, causal=causal, bias=bias)
    shape = [(-1, length, embed), (-1, source, embed), (-1, source, embed)] if cross else (-1, length, embed)  # fmt: skip
    out_shape, params = layer.init(fnn.random.key(0), shape, dtype=torch.float64)
    assert out_shape == (-1, length, embed)
    params = fnn.tree.map(lambda p: randn(p.numel(), *p.shape) / 2, params)  # biases nonzero
    query = randn(1, n, length, embed)
    x = (query, randn(2, n, source, embed), randn(3, n, source, embed)) if cross else query
    mask = None
    if padding is not None:
        mask = torch.zeros(n, source, dtype=torch.bool)
        mask[:, -1] = True  # every query still sees a key (causal: key 0)
        if source == 1:
            mask[:] = False
        if padding == "float":
            mask = torch.zeros(n, source, dtype=torch.float64).masked_fill(mask, -2.5)
    kwargs = {} if mask is None else {"key_padding_mask": mask}
    reference = _torch_attention(_module(embed, heads, bias, params), causal, cross, mask)

    y, vjp = layer.apply(params, x, **kwargs)
    torch.testing.assert_close(y, reference(params, x), atol=1e-12, rtol=1e-10)
    dy = randn(4, *y.shape)
    dparams, dx = vjp(dy)
    expected = autograd_vjp(reference, params, x, dy)
    assert_trees_close(dparams, expected[0], atol=1e-10, rtol=1e-8)
    assert_trees_close(dx, expected[1], atol=1e-10, rtol=1e-8)
    assert pickle.loads(pickle.dumps(vjp))(dy)[0]["in_proj_weight"].equal(dparams["in_proj_weight"])
    if n == 1 and causal and padding != "float":
        fnn.testing.check_vjp(layer, params, x, **kwargs)


def test_attention_empty_batch_unbatched_and_non_contiguous_inputs():
    layer = L.MultiHeadAttention(2, causal=True)
    _, params = layer.init(fnn.random.key(0), (-1, 4, 6), dtype=torch.float64)
    x = randn(0, 3, 4, 6)
    # empty batch: correctly shaped zeros
    y, vjp = layer.apply(params, x[:0])
    dparams, dx = vjp(torch.zeros(0, 4, 6, dtype=torch.float64))
    assert y.shape == (0, 4, 6) and dx.shape == (0, 4, 6)
    assert all(not g.any() for g in fnn.tree.leaves(dparams))
    # unbatched (T, E) equals a batch of one
    y1, vjp1 = layer.apply(params, x[1])
    yb, vjpb = layer.apply(params, x[1:2])
    torch.testing.assert_close(y1, yb[0], atol=0, rtol=0)
    dy = randn(1, 4, 6)
    assert_trees_close(vjp1(dy), vjpb(dy[None]) [0:1] + (vjpb(dy[None])[1][0],), atol=0, rtol=0)  # fmt: skip
    # non-contiguous input and cotangent
    strided = randn(2, 6, 4, 3).permute(2, 1, 0)
    assert not strided.is_contiguous()
    y, vjp = layer.apply(params, strided)
    yc, vjpc = layer.apply(params, strided.contiguous())
    torch.testing.assert_close(y, yc, atol=1e-14, rtol=0)
    dy = randn(3, 6, 4, 3).permute(2, 1, 0)
    assert_trees_close(vjp(dy), vjpc(dy.contiguous()), atol=1e-13, rtol=0)


def test_attention_dropout_math_path_against_autograd():
    heads, rate = 2, 0.3
    layer = L.MultiHeadAttention(heads, causal=True, dropout=rate)
    _, params = layer.init(fnn.random.key(0), (-1, 5, 8), dtype=torch.float64)
    x, key = randn(1, 3, 5, 8), fnn.random.key(3)
    y, vjp = layer.apply(params, x, key=key)
    kind, _, keep, _ = vjp.residuals.core
    assert kind == "math" and keep.shape == (3, heads, 5, 5) and 0 < keep.float().mean() < 1

    def reference(p, x):
        qkv = torch.nn.functional.linear(x, p["in_proj_weight"], p["in_proj_bias"])
        q, k, v = (t.transpose(1, 2) for t in qkv.view(3, 5, 3, heads, 4).unbind(2))
        scores = (q @ k.transpose(-1, -2) / 2.0).masked_fill(
            torch.ones(5, 5).triu(1).bool(), -torch.inf
        )
        o = (torch.softmax(scores, -1) * keep / (1 - rate)) @ v
        out = p["out_proj"]
        return torch.nn.functional.linear(
            o.transpose(1, 2).reshape(3, 5, 8), out["weight"], out["bias"]
        )

    torch.testing.assert_close(y, reference(params, x), atol=1e-12, rtol=1e-10)
    dy = randn(2, 3, 5, 8)
    assert_trees_close(vjp(dy), autograd_vjp(reference, params, x, dy), atol=1e-10, rtol=1e-8)
    fnn.testing.check_vjp(layer, params, x, key=key)
    # the same key drops the same weights; no key: no dropout (the flash path)
    assert layer.apply(params, x, key=key)[0].equal(y)
    plain = L.MultiHeadAttention(heads, causal=True).apply(params, x)[0]
    assert layer.apply(params, x)[0].equal(plain) and not y.equal(plain)


def test_flash_path_keeps_no_attention_matrix_and_summary_reads_it():
    n, length, embed, heads = 2, 64, 16, 4
    layer = L.MultiHeadAttention(heads, causal=True)
    _, params = layer.init(fnn.random.key(0), (-1, length, embed))
    _, vjp = layer.apply(params, torch.randn(n, length, embed))
    assert vjp.residuals.core[0] == "flash"
    sizes = [t.numel() for t in fnn.tree.leaves(vjp.residuals) if isinstance(t, torch.Tensor)]
    assert max(sizes) < n * heads * length * length  # the largest is the (N, T, 3E) projection
    table = fnn.summary(fnn.serial(layer), (-1, length, embed))
    row = next(line for line in table.splitlines() if "MultiHeadAttention" in line)
    per_example = int(row.split()[-1])
    # x (E), the q/k/v projection (3E), the attended output (E) and the log-sum-exp (H), float32
    assert per_example == 4 * length * (5 * embed + heads)


def test_attention_state_dict_loads_both_ways_and_init_is_torchs():
    layer = L.MultiHeadAttention(4)
    _, params = layer.init(fnn.random.key(0), (-1, 3, 16))
    module = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    assert list(fnn.tree.to_state_dict(params)) == list(module.state_dict())
    assert not params["in_proj_bias"].any() and not params["out_proj"]["bias"].any()
    bound = (6 / (16 + 48)) ** 0.5  # Xavier-uniform on (3E, E)
    assert (
        params["in_proj_weight"].abs().max() <= bound < 1.05 * params["in_proj_weight"].abs().max()
    )
    assert params["out_proj"]["weight"].abs().max() <= 16**-0.5
    module.load_state_dict(fnn.tree.to_state_dict(params))
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(
        layer.apply(params, x)[0], module(x, x, x, need_weights=False)[0].detach()
    )
    loaded = fnn.tree.from_state_dict(
        torch.nn.MultiheadAttention(16, 4, batch_first=True).state_dict()
    )
    assert layer.apply(loaded, x)[0].shape == (2, 3, 16)


def _block(embed, heads):
    """A pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def residual(*layers):
        return fnn.serial(
            L.FanOut(2), fnn.parallel(fnn.serial(*layers), L.Identity()), L.FanInSum()
        )

    return fnn.serial(
        residual(L.LayerNorm(), L.MultiHeadAttention(heads, causal=True)),
        residual(L.LayerNorm(), L.Dense(2 * embed), L.Gelu(), L.Dense(embed)),
    )


def _half_backward(residuals, dy):
    """A swapped attention backward: the flash gradients of half the cotangent."""
    return attention_backward(residuals, dy / 2)


def test_research_hooks_with_vjp_remat_and_per_example_grads():
    embed, heads = 8, 2
    block = _block(embed, heads)
    model = fnn.serial(L.Embedding(11, embed), block, L.Dense(11))
    _, params = model.init(fnn.random.key(0), (-1, 5), dtype=torch.float64)
    x = torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [0, 0, 10, 10, 7]])
    target = randn(1, 3, 5, 11)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)
    value, grads = loss_and_grads(params, x, target)

    # remat per block: the same gradients, bit for bit
    rematted = fnn.serial(L.Embedding(11, embed), fnn.remat(block), L.Dense(11))
    value_r, grads_r = fnn.value_and_grad(rematted.apply, fnn.losses.mse)(params, x, target)
    assert value_r.equal(value)
    assert_trees_close(grads_r, grads, atol=0, rtol=0)

    # per-example gradients: example n's is the gradient of example n alone
    _, per_example = fnn.per_example_grads(model.apply, fnn.losses.mse)(params, x, target)
    for n in range(3):
        _, one = loss_and_grads(params, x[n : n + 1], target[n : n + 1])
        assert_trees_close(fnn.tree.map(lambda g, n=n: g[n], per_example), one, atol=1e-12)

    # with_vjp: a swapped attention backward is the one value_and_grad runs
    attention = L.MultiHeadAttention(heads, causal=True)
    swapped = fnn.with_vjp(attention, _half_backward)
    p = params["1"]["0"]["1"]["0"]["1"]
    h = randn(2, 3, 5, embed)
    dy = randn(3, 3, 5, embed)
    half, _ = swapped.apply(p, h)[1](dy)
    full, _ = attention.apply(p, h)[1](dy)
    assert_trees_close(half, fnn.tree.map(lambda g: g / 2, full), atol=1e-14)
    fnn.testing.check_vjp(attention, p, h[:1])


def test_attention_errors_name_the_layer():
    layer = L.MultiHeadAttention(3)
    with pytest.raises(fnn.FnnError, match="MultiHeadAttention: the embedding size 8 must be a positive multiple of num_heads=3"):  # fmt: skip
        layer.init(fnn.random.key(0), (-1, 4, 8))
    layer = L.MultiHeadAttention(2)
    _, params = layer.init(fnn.random.key(0), (-1, 4, 8))
    with pytest.raises(fnn.errors.ShapeError, match=r"MultiHeadAttention: key_padding_mask must have shape \(N, S\) = \(2, 4\)"):  # fmt: skip
        layer.apply(
            params, torch.ones(2, 4, 8), key_padding_mask=torch.zeros(2, 5, dtype=torch.bool)
        )
    with pytest.raises(fnn.errors.FnnTypeError, match="MultiHeadAttention: key_padding_mask must be a bool or float"):  # fmt: skip
        layer.apply(
            params, torch.ones(2, 4, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.int64)
        )
    with pytest.raises(fnn.errors.ShapeError, match=r"MultiHeadAttention: expected inputs of shape \(N, T, E\)"):  # fmt: skip
        layer.apply(params, torch.ones(8))
    with pytest.raises(
        fnn.errors.ShapeError, match="cross-attention takes a tuple \\(query, key, value\\)"
    ):
        layer.apply(params, (torch.ones(2, 4, 8), torch.ones(2, 4, 8)))
    with pytest.raises(fnn.errors.TreeError, match="MultiHeadAttention: expected params with keys"):
        layer.apply({"in_proj_weight": params["in_proj_weight"]}, torch.ones(2, 4, 8))
    with pytest.raises(
        fnn.errors.FnnTypeError, match="MultiHeadAttention: expected a floating-point input"
    ):
        layer.apply(params, torch.ones(2, 4, 8, dtype=torch.int64))
    with pytest.raises(
        fnn.FnnError, match="MultiHeadAttention: dropout must be a number in \\[0, 1\\)"
    ):
        L.MultiHeadAttention(2, dropout=1.0)
    with pytest.raises(fnn.errors.KeyArrayError, match="MultiHeadAttention: bad key"):
        L.MultiHeadAttention(2, dropout=0.5).apply(params, torch.ones(2, 4, 8), key=torch.ones(3))
    _, vjp = layer.apply(params, torch.ones(2, 4, 8))
    with pytest.raises(fnn.errors.ShapeError, match="MultiHeadAttention VJP: expected a cotangent"):
        vjp(torch.ones(2, 4, 7))


def test_key_padding_mask_reaches_attention_inside_a_model():
    model = fnn.serial(L.Embedding(9, 8, padding_idx=0), L.MultiHeadAttention(2), L.Dense(3))
    _, params = model.init(fnn.random.key(0), (-1, 5), dtype=torch.float64)
    x = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 3, 4, 8]])
    mask = x == 0
    target = randn(1, 2, 5, 3)
    loss_and_grads = fnn.value_and_grad(model.apply, fnn.losses.mse)
    value, grads = loss_and_grads(params, x, target, key_padding_mask=mask)
    y, vjp = model.apply(params, x, key_padding_mask=mask)
    assert not torch.equal(y, model.apply(params, x)[0])  # the mask changed the output
    assert torch.equal(value, fnn.losses.mse(y, target)[0])
    expected, _ = vjp(fnn.losses.mse(y, target)[1](torch.ones(())))
    assert_trees_close(grads, expected, atol=1e-14)
    # the padded keys change nothing: the first example equals its unpadded prefix
    short, _ = model.apply(params, x[:1, :3])
    torch.testing.assert_close(y[:1, :3], short, atol=1e-12, rtol=0)
    _, per_example = fnn.per_example_grads(model.apply, fnn.losses.mse)(
        params, x, target, key_padding_mask=mask
    )
    _, one = loss_and_grads(params, x[1:], target[1:], key_padding_mask=mask[1:])
    assert_trees_close(fnn.tree.map(lambda g: g[1], per_example), one, atol=1e-12)


def _probe_backward(residuals, dy):
    """Records, when the backward pass reaches it, whether the watched residual is alive."""
    residuals["alive"] = residuals["watched"]() is not None
    return {}, dy


def test_attention_residuals_are_freed_as_the_backward_pass_goes_through_tie_and_parallel():
    attention = L.MultiHeadAttention(2, causal=True)
    record = {}

    def watched_apply(params, x, **kwargs):
        y, vjp = attention.apply(params, x, **kwargs)
        record["watched"] = weakref.ref(vjp.residuals.attended)
        return y, vjp

    def probe_init(key, shape, *, dtype=torch.float32, device="cpu"):
        return shape, {}

    def probe_apply(params, x, **kwargs):
        return x, fnn.VJP(_probe_backward, record)

    block = fnn.serial(
        L.FanOut(2),
        fnn.parallel(
            fnn.serial(L.LayerNorm(), fnn.Layer(attention.init, watched_apply)), L.Identity()
        ),
        L.FanInSum(),
    )
    model = fnn.serial(
        L.Embedding(11, 8), fnn.Layer(probe_init, probe_apply), block, L.Dense(11, bias=False)
    )
    tied = fnn.tie(model, {"3.weight": "0.weight"})
    _, params = tied.init(fnn.random.key(0), (-1, 5))
    x = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    fnn.value_and_grad(tied.apply, fnn.losses.mse)(params, x, torch.zeros(2, 5, 11))
    assert record["alive"] is False  # the block's residuals died before the probe's backward
