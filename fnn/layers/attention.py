"""Multi-head attention, as `torch.nn.MultiheadAttention(E, heads, batch_first=True)`.

The attention itself runs on aten's fused CPU flash-attention kernel and its backward, so
the VJP keeps what flash attention keeps (q, k, v, the output and the row-wise log-sum-exp)
and never the T×T attention matrix; dropout on the attention weights (given `key=`) and
tensors off the CPU take the plain math path, which keeps the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .. import random
from ..core import VJP, Key, Layer, LayerInfo, Params, Shape, Shapes, backward, declare
from ..errors import FnnError, FnnTypeError, KeyArrayError, ShapeError, TreeError, describe
from ..initializers import torch_default, xavier_uniform
from . import _checks

__all__ = ["MultiHeadAttention", "AttentionResiduals", "attention_backward"]

aten = torch.ops.aten

_NAME = "MultiHeadAttention"


def MultiHeadAttention(
    num_heads: int, causal: bool = False, dropout: float = 0.0, bias: bool = True
) -> Layer:
    """Scaled dot-product attention over `num_heads` heads, with input and output projections.

    As `torch.nn.MultiheadAttention(E, num_heads, dropout, bias, batch_first=True)` called
    with `need_weights=False`: `q, k, v = query Wqᵀ + bq, key Wkᵀ + bk, value Wvᵀ + bv`
    (`W_in = [Wq; Wk; Wv]`), split into heads of size `D = E / num_heads`;
    `o = softmax(q kᵀ / √D + mask) v` per head; `y = o Woᵀ + bo` with the heads concatenated.

    On the CPU the attention runs on aten's fused flash-attention kernel
    (`_scaled_dot_product_flash_attention_for_cpu` and its `_backward`) for every dtype and
    mask, so the VJP keeps the projections' inputs, q, k, v, the attention output and its
    log-sum-exp per row (`fnn.summary` shows it), never the (T × T) weights. With dropout
    (`dropout > 0` and `key=` given) or on another device it takes the math path, which keeps
    the attention weights (and the dropout mask).

    Masks: `causal=True` lets query `i` see keys `j ≤ i` (torch's `is_causal`, aligned to the
    top left when the query and key lengths differ). `apply`'s keyword `key_padding_mask=`,
    as torch's: a bool `(N, S)` tensor, `True` where a key is padding and must be ignored,
    or a float `(N, S)` tensor added to the scores. A query that sees no key at all gets NaN,
    as in torch.

    Args:
        num_heads: number of heads, ≥ 1; must divide the embedding size `E`.
        causal: mask future positions (decoder self-attention).
        dropout: probability of zeroing an attention weight, in `[0, 1)`; only applied when
            `apply` is given `key=`, as `Dropout`.
        bias: whether the input and output projections have biases.

    Returns:
        `Layer(init, apply)`. `init(key, (-1, T, E))` (self-attention) or
            `init(key, [(-1, L, E), (-1, S, E), (-1, S, E)])` (cross-attention: query, key,
            value) gives the query's shape and params
            `{"in_proj_weight": (3E, E), "in_proj_bias": (3E,),
            "out_proj": {"weight": (E, E), "bias": (E,)}}` (no biases with `bias=False`),
            initialised as torch (Xavier-uniform in-projection, zero biases).
            `apply(params, x, key=None, key_padding_mask=None)`, `x` of shape `(N, T, E)` or a
            tuple `(query, key, value)` of shapes `(N, L, E)`, `(N, S, E)`, `(N, S, E)`
            (unbatched `(T, E)` too), gives `(y, vjp)` with `y` of the query's shape;
            `vjp(dy)` gives `(dparams, dx)` with `dx` of `x`'s shape (a tuple of three for
            cross-attention).

    Raises:
        FnnError: a bad constructor argument; (from `init` and `apply`) `E` not divisible by
            `num_heads`, or a mask of the wrong shape.
        FnnTypeError: (from `apply`) a non-floating input or a mask of a bad dtype.
        KeyArrayError: (from `apply`) a `key=` that is not an `fnn.random` key.
        ShapeError: (from `init`, `apply` and the VJP) inputs, params or cotangents of the
            wrong shape.

    Example:
        >>> init, apply = MultiHeadAttention(2, causal=True)
        >>> out_shape, params = init(fnn.random.key(0), (-1, 5, 8))
        >>> out_shape, params["in_proj_weight"].shape, params["out_proj"]["weight"].shape
        ((-1, 5, 8), torch.Size([24, 8]), torch.Size([8, 8]))
        >>> y, vjp = apply(params, torch.randn(3, 5, 8))
        >>> dparams, dx = vjp(torch.ones(3, 5, 8))
        >>> y.shape, dx.shape
        (torch.Size([3, 5, 8]), torch.Size([3, 5, 8]))
    """
    _checks.positive_int(_NAME, "num_heads", num_heads)
    if not isinstance(causal, bool):
        raise FnnTypeError(f"{_NAME}: causal must be a bool, got {causal!r}")
    if not isinstance(bias, bool):
        raise FnnTypeError(f"{_NAME}: bias must be a bool, got {bias!r}")
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, int | float)
        or not 0.0 <= dropout < 1.0
    ):
        raise FnnError(f"{_NAME}: dropout must be a number in [0, 1), got {dropout!r}")

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shape, Params]:
        _checks.init_dtype(_NAME, dtype, device)
        if isinstance(input_shape, list):
            if len(input_shape) != 3:
                raise ShapeError(
                    f"{_NAME}: cross-attention takes 3 input shapes [query, key, value], "
                    f"got {len(input_shape)}"
                )
            shapes = [_checks.input_shape(_NAME, s, min_rank=2) for s in input_shape]
        else:
            shapes = [_checks.input_shape(_NAME, input_shape, min_rank=2)]
        embed = shapes[0][-1]
        _check_embed(embed, num_heads)
        for s in shapes[1:]:
            if s[-1] != embed:
                raise ShapeError(
                    f"{_NAME}: key and value must have the query's embedding size {embed}, "
                    f"got shapes {[tuple(s) for s in shapes]}"
                )
        in_key, out_key = random.split(key)
        params: Params = {
            "in_proj_weight": xavier_uniform()(in_key, (3 * embed, embed), dtype, device)
        }
        if bias:
            params["in_proj_bias"] = torch.zeros(3 * embed, dtype=dtype, device=device)
        out_proj = {"weight": torch_default()(out_key, (embed, embed), dtype, device)}
        if bias:
            out_proj["bias"] = torch.zeros(embed, dtype=dtype, device=device)
        params["out_proj"] = out_proj
        return shapes[0], params

    def apply(
        params: Params,
        x: Any,
        *,
        key: Key | None = None,
        key_padding_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Any, VJP]:
        del kwargs
        w_in, b_in, w_out, b_out = _params(params, bias)
        cross = isinstance(x, tuple | list)
        inputs = _inputs(x, cross, w_in)
        unbatched = inputs[0].ndim == 2
        if unbatched:
            inputs = tuple(t.unsqueeze(0) for t in inputs)
            if key_padding_mask is not None and isinstance(key_padding_mask, torch.Tensor):
                key_padding_mask = key_padding_mask.unsqueeze(0)
        query = inputs[0]
        n, length, embed = query.shape
        source = inputs[1].shape[1]
        _check_embed(embed, num_heads)
        if w_in.shape != (3 * embed, embed):
            raise ShapeError(
                f"{_NAME}: params['in_proj_weight'] has shape {tuple(w_in.shape)}, "
                f"expected ({3 * embed}, {embed}) for inputs of embedding size {embed}"
            )
        heads, head = num_heads, embed // num_heads
        if cross:
            w_q, w_k, w_v = w_in.chunk(3)
            b_q, b_k, b_v = b_in.chunk(3) if b_in is not None else (None, None, None)
            q = F.linear(query, w_q, b_q).view(n, length, heads, head).transpose(1, 2)
            k = F.linear(inputs[1], w_k, b_k).view(n, source, heads, head).transpose(1, 2)
            v = F.linear(inputs[2], w_v, b_v).view(n, source, heads, head).transpose(1, 2)
        else:
            # as torch's module: a product, then the bias added in place (not a fused addmm)
            qkv = query.reshape(n * length, embed).mm(w_in.t())
            if b_in is not None:
                qkv.add_(b_in)
            qkv = qkv.view(n, length, 3, heads, head)
            q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        mask = _padding_mask(key_padding_mask, n, source, query)
        rate = dropout if key is not None else 0.0
        if query.device.type == "cpu" and rate == 0.0:
            if query.numel() and source:
                o, lse = aten._scaled_dot_product_flash_attention_for_cpu.default(
                    q, k, v, 0.0, causal, attn_mask=mask
                )
            else:  # the kernel is not for empty inputs
                o = q.new_zeros(n, heads, length, head)
                lse = q.new_zeros(n, heads, length)
            core: tuple[Any, ...] = ("flash", lse)
        else:
            keep = None
            if key is not None and rate:
                try:
                    # Dropout's mask: tensor ops only, so torch.compile traces it
                    keep = random._bernoulli_traceable(
                        key, 1.0 - rate, (n, heads, length, source), query.device
                    )
                except KeyArrayError as error:
                    raise KeyArrayError(f"{_NAME}: bad key: {error}") from None
            o, weights = _math_forward(q, k, v, causal, mask, keep, rate)
            core = ("math", weights, keep, rate)
        attended = o.transpose(1, 2).reshape(n, length, embed)
        y = F.linear(attended, w_out, b_out)
        saved = (query, inputs[1], inputs[2]) if cross else (query,)
        residuals = AttentionResiduals(
            saved, q, k, v, attended, mask, causal, core, w_in, w_out, bias, unbatched, cross
        )
        return (y[0] if unbatched else y), VJP(attention_backward, residuals)

    info = LayerInfo(_NAME, keywords=frozenset({"key", "key_padding_mask"}))
    return declare(init, apply, info)


class AttentionResiduals(NamedTuple):
    """What a `MultiHeadAttention` VJP keeps: what `attention_backward` (or a backward swapped
    in with `fnn.with_vjp`) receives.

    Attributes:
        inputs: `(x,)` for self-attention, `(query, key, value)` for cross-attention,
            batched `(N, T, E)`.
        q: the projected queries, `(N, H, L, D)` (for self-attention a view into one
            `(N, L, 3E)` projection that `k` and `v` share).
        k: the projected keys, `(N, H, S, D)`.
        v: the projected values, `(N, H, S, D)`.
        attended: the attention output with heads concatenated, `(N, L, E)` (the output
            projection's input; flash attention's `out` is a view of it).
        mask: the additive key-padding mask `(N, 1, 1, S)`, or `None`.
        causal: whether the causal mask applies.
        core: `("flash", logsumexp)`, `logsumexp` of shape `(N, H, L)`, or
            `("math", weights, keep, rate)` with the `(N, H, L, S)` softmax weights and the
            dropout mask (`None` without dropout).
        in_proj_weight: `(3E, E)`.
        out_proj_weight: `(E, E)`.
        bias: whether the projections have biases.
        unbatched: the input had no batch axis (the fields above have one of size 1).
        cross: cross-attention (`dx` is a tuple of three).
    """

    inputs: tuple[torch.Tensor, ...]
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    attended: torch.Tensor
    mask: torch.Tensor | None
    causal: bool
    core: tuple[Any, ...]
    in_proj_weight: torch.Tensor
    out_proj_weight: torch.Tensor
    bias: bool
    unbatched: bool
    cross: bool


def _check_embed(embed: int, num_heads: int) -> None:
    if embed < 1 or embed % num_heads:
        raise FnnError(
            f"{_NAME}: the embedding size {embed} must be a positive multiple of num_heads={num_heads}"
        )


def _params(
    params: Params, bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """The four projections' leaves (biases `None` without `bias`), or a clear error."""
    expected = ["in_proj_weight"] + (["in_proj_bias"] if bias else []) + ["out_proj"]
    out_expected = ["weight", "bias"] if bias else ["weight"]
    out = params.get("out_proj") if isinstance(params, Mapping) else None
    if (
        not isinstance(params, Mapping)
        or sorted(params) != sorted(expected)
        or not isinstance(out, Mapping)
        or sorted(out) != sorted(out_expected)
    ):
        raise TreeError(
            f"{_NAME}: expected params with keys {expected} and params['out_proj'] with keys "
            f"{out_expected} (bias={bias}), got {_keys(params)}"
        )
    w_in, w_out = params["in_proj_weight"], out["weight"]
    b_in = params["in_proj_bias"] if bias else None
    b_out = out["bias"] if bias else None
    for name, leaf in (("in_proj_weight", w_in), ("out_proj.weight", w_out)):
        if not isinstance(leaf, torch.Tensor) or leaf.ndim != 2:
            raise ShapeError(
                f"{_NAME}: params['{name}'] must be a 2-d tensor, got {describe(leaf)}"
            )
    embed = w_out.shape[0]
    for name, leaf, shape in (
        ("in_proj_bias", b_in, (3 * embed,)),
        ("out_proj.bias", b_out, (embed,)),
    ):
        if leaf is not None and (not isinstance(leaf, torch.Tensor) or leaf.shape != shape):
            raise ShapeError(
                f"{_NAME}: params['{name}'] must have shape {shape}, got {describe(leaf)}"
            )
    if w_out.shape != (embed, embed):
        raise ShapeError(
            f"{_NAME}: params['out_proj.weight'] must be square (E, E), got {tuple(w_out.shape)}"
        )
    return w_in, b_in, w_out, b_out


def _keys(params: Any) -> Any:
    if not isinstance(params, Mapping):
        return describe(params)
    return {k: _keys(v) if isinstance(v, Mapping) else "tensor" for k, v in params.items()}


def _inputs(x: Any, cross: bool, w_in: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`(query, key, value)` (the same tensor thrice for self-attention), checked."""
    inputs = tuple(x) if cross else (x, x, x)
    if cross and len(inputs) != 3:
        raise ShapeError(
            f"{_NAME}: cross-attention takes a tuple (query, key, value), got {len(inputs)} inputs"
        )
    for t in inputs:
        _checks.input_like(_NAME, t, w_in)
        if t.ndim not in (2, 3):
            raise ShapeError(
                f"{_NAME}: expected inputs of shape (N, T, E) or unbatched (T, E), got {tuple(t.shape)}"
            )
    query, key, value = inputs
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ShapeError(
            f"{_NAME}: query, key and value must all be batched or all unbatched, got shapes "
            f"{[tuple(t.shape) for t in inputs]}"
        )
    if key.shape != value.shape or (query.ndim == 3 and key.shape[0] != query.shape[0]):
        raise ShapeError(
            f"{_NAME}: key and value must have the same shape (N, S, E) as each other and the "
            f"query's batch, got shapes {[tuple(t.shape) for t in inputs]}"
        )
    return inputs


def _padding_mask(mask: Any, n: int, source: int, like: torch.Tensor) -> torch.Tensor | None:
    """`key_padding_mask` as an additive float mask of shape (N, 1, 1, S), or `None`."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or not (
        mask.dtype == torch.bool or mask.is_floating_point()
    ):
        raise FnnTypeError(
            f"{_NAME}: key_padding_mask must be a bool or float tensor of shape (N, S), got {describe(mask)}"
        )
    if mask.shape != (n, source):
        raise ShapeError(
            f"{_NAME}: key_padding_mask must have shape (N, S) = {(n, source)}, got {tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool:
        additive = like.new_zeros(n, source).masked_fill_(mask.to(like.device), float("-inf"))
    else:
        additive = mask.to(like.dtype)
    return additive.view(n, 1, 1, source)


def _math_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    mask: torch.Tensor | None,
    keep: torch.Tensor | None,
    rate: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(o, weights)`: `o = dropout(softmax(q kᵀ / √D + mask)) v`, the plain way."""
    scores = q.matmul(k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores + mask
    if causal:
        length, source = scores.shape[-2:]
        future = torch.ones(length, source, dtype=torch.bool, device=q.device).triu_(1)
        scores = scores.masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, -1)
    dropped = weights if keep is None else weights * keep * (1.0 / (1.0 - rate))
    return dropped.matmul(v), weights


@backward
def attention_backward(residuals: AttentionResiduals, dy: Any) -> tuple[Params, Any]:
    """
    y = o Woᵀ + bo,  o = softmax(q kᵀ/√D + m) v,  [q k v] = x W_inᵀ + b_in ⇒   dWo = dyᵀ o,  dbo = Σ dy,  (dq, dk, dv) = flash attention's VJP of do = dy Wo, dW_in = [dq dk dv]ᵀ x,  db_in = Σ [dq dk dv],  dx = [dq dk dv] W_in
    """
    return _attention_grads(list(residuals), dy, need_dx=True, per_example=False)


@attention_backward.consumer
def _attention_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`attention_backward` for `fnn.core.backprop`: q, k, v and the output are freed as soon as
    the attention's own backward is done with them, and `dx` is skipped when not needed."""
    fields = list(box.pop(0))  # box = [residuals, dy]; only the callee holds dy from here
    return _attention_grads(fields, box.pop(), need_dx=need_dx, per_example=False)


# per example: the same, with each weight gradient a batched product over that example's rows
@attention_backward.per_example_rule
def _attention_per_example(
    residuals: AttentionResiduals, dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    if residuals.unbatched:
        raise ShapeError(
            f"{_NAME}: per-example gradients need batched inputs (N, T, E), got unbatched ones"
        )
    return _attention_grads(list(residuals), dy, need_dx=need_dx, per_example=True)


def _attention_grads(
    fields: list[Any], dy: Any, need_dx: bool, per_example: bool
) -> tuple[Params, Any]:
    """The VJP; `fields` (an `AttentionResiduals` as a list) is emptied, and each residual is
    dropped after its last use (only the caller's VJP, if any, keeps them longer)."""
    saved, q, k, v, attended, mask, causal, core, w_in, w_out, bias, unbatched, cross = fields
    fields.clear()
    n, length, embed = attended.shape
    expected = (length, embed) if unbatched else (n, length, embed)
    if not isinstance(dy, torch.Tensor) or dy.shape != expected or dy.dtype != attended.dtype:
        _checks.cotangent_like(_NAME, dy, expected, attended)
    if unbatched:
        dy = dy.unsqueeze(0)
    heads, head = q.shape[1], q.shape[3]
    if not cross and not per_example:
        fields += (saved[0], q, k, v, attended, mask, causal, core, w_in, w_out, bias)
        del saved, q, k, v, attended, mask, core
        cotangent = [dy]
        del dy  # the callee frees it once used
        self_grads, self_dx = _self_attention_grads(fields, cotangent, need_dx)
        return self_grads, (self_dx[0] if unbatched and self_dx is not None else self_dx)
    out_grads = _linear_grads(attended, dy, bias, per_example)
    do = dy.matmul(w_out).view(n, length, heads, head).transpose(1, 2)
    del dy
    if core[0] == "flash":
        if do.numel() and k.shape[2]:
            out = attended.view(n, length, heads, head).transpose(1, 2)
            dq, dk, dv = aten._scaled_dot_product_flash_attention_for_cpu_backward.default(
                do, q, k, v, out, core[1], 0.0, causal, attn_mask=mask
            )
            del out
        else:
            dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    else:
        dq, dk, dv = _math_backward(q, k, v, core[1], core[2], core[3], do)
    del q, k, v, attended, core, do, mask
    # back to rows of (N, T, E): flash's gradients are laid out (N, T, H, D), so these are views
    rows = [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], embed) for t in (dq, dk, dv)]
    del dq, dk, dv
    inputs = saved if cross else saved * 3
    parts = [_linear_grads(x_i, d_i, bias, per_example) for x_i, d_i in zip(inputs, rows)]
    grads: Params = {"in_proj_weight": torch.cat([p["weight"] for p in parts], -2)}
    if bias:
        grads["in_proj_bias"] = torch.cat([p["bias"] for p in parts], -1)
    grads["out_proj"] = out_grads
    del parts, inputs, saved
    if not need_dx:
        return grads, None
    w_q, w_k, w_v = w_in.chunk(3)
    if cross:
        dxs = tuple(d_i.matmul(w) for d_i, w in zip(rows, (w_q, w_k, w_v)))
        return grads, tuple(t[0] for t in dxs) if unbatched else dxs
    # self-attention: x feeds q, k and v, so dx = dq Wq + dk Wk + dv Wv
    flat = [d.reshape(-1, embed) for d in rows]
    dx = flat[0].mm(w_q).addmm_(flat[1], w_k).addmm_(flat[2], w_v).view(n, length, embed)
    return grads, dx[0] if unbatched else dx


def _self_attention_grads(
    fields: list[Any], cotangent: list[torch.Tensor], need_dx: bool
) -> tuple[Params, torch.Tensor | None]:
    """Self-attention's VJP with every sum over tokens taken in torch.nn.MultiheadAttention's
    order (time-major, as it transposes batch-first inputs), so the gradients are autograd's
    bit for bit: float32 training runs then follow the torch twin's loss curve. `fields` is
    `[x, q, k, v, attended, mask, causal, core, w_in, w_out, bias]` and `cotangent` `[dy]`,
    both emptied here."""
    x, q, k, v, attended, mask, causal, core, w_in, w_out, bias = fields
    fields.clear()
    dy = cotangent.pop()
    n, length, embed = attended.shape
    heads, head = q.shape[1], q.shape[3]
    dy_t = dy.transpose(0, 1).reshape(length * n, embed)  # rows (t, n)
    del dy
    attended_t = attended.transpose(0, 1).reshape(length * n, embed)
    grads: Params = {"out_proj": {"weight": dy_t.t().mm(attended_t)}}
    del attended_t
    if bias:
        grads["out_proj"]["bias"] = dy_t.sum(0)
    do = dy_t.mm(w_out).view(length, n, heads, head).permute(1, 2, 0, 3)
    del dy_t
    if core[0] == "flash":
        if do.numel() and k.shape[2]:
            out = attended.view(n, length, heads, head).transpose(1, 2)
            dq, dk, dv = aten._scaled_dot_product_flash_attention_for_cpu_backward.default(
                do, q, k, v, out, core[1], 0.0, causal, attn_mask=mask
            )
            del out
        else:
            dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    else:
        dq, dk, dv = _math_backward(q, k, v, core[1], core[2], core[3], do)
    del q, k, v, attended, core, do, mask
    # [dq dk dv] as rows (t, n) of 3E: the in-projection's output gradient
    d_proj = torch.stack([t.permute(2, 0, 1, 3) for t in (dq, dk, dv)], 2)
    del dq, dk, dv
    d_proj = d_proj.view(length * n, 3 * embed)
    x_t = x.transpose(0, 1).reshape(length * n, embed)
    del x
    grads["in_proj_weight"] = d_proj.t().mm(x_t)
    del x_t
    if bias:
        grads["in_proj_bias"] = d_proj.sum(0)
    ordered: Params = {"in_proj_weight": grads["in_proj_weight"]}
    if bias:
        ordered["in_proj_bias"] = grads["in_proj_bias"]
    ordered["out_proj"] = grads["out_proj"]
    if not need_dx:
        return ordered, None
    return ordered, d_proj.mm(w_in).view(length, n, embed).transpose(0, 1)


def _linear_grads(
    x: torch.Tensor, dy: torch.Tensor, bias: bool, per_example: bool
) -> dict[str, torch.Tensor]:
    """`{"weight": dyᵀ x, "bias": Σ dy}` over all rows, or per example (leading axis N)."""
    if per_example:
        grads = {"weight": dy.transpose(1, 2).bmm(x)}
        if bias:
            grads["bias"] = dy.sum(1)
        return grads
    dy2 = dy.reshape(-1, dy.shape[-1])
    grads = {"weight": dy2.t().mm(x.reshape(-1, x.shape[-1]))}
    if bias:
        grads["bias"] = dy2.sum(0)
    return grads


def _math_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    weights: torch.Tensor,
    keep: torch.Tensor | None,
    rate: float,
    do: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # o = P̃ v, P̃ = P ⊙ M/(1−r), P = softmax(S), S = q kᵀ/√D
    #   ⇒   dv = P̃ᵀ do,  dP = (do vᵀ) ⊙ M/(1−r),  dS = P ⊙ (dP − Σⱼ dP P),  dq = dS k/√D,  dk = dSᵀ q/√D
    scale = 1.0 / math.sqrt(q.shape[-1])
    dropped = weights if keep is None else weights * keep * (1.0 / (1.0 - rate))
    dv = dropped.transpose(-2, -1).matmul(do)
    d_dropped = do.matmul(v.transpose(-2, -1))
    d_weights = d_dropped if keep is None else d_dropped * keep * (1.0 / (1.0 - rate))
    d_scores = aten._softmax_backward_data.default(d_weights, weights, -1, weights.dtype)
    dq = d_scores.matmul(k).mul_(scale)
    dk = d_scores.transpose(-2, -1).matmul(q).mul_(scale)
    return dq, dk, dv
