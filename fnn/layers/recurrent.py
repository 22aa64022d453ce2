"""Recurrent layers: `RNN`, `LSTM`, `GRU` (as torch.nn's, batch first) and their cells.

A recurrent layer is its cell run by `fnn.scan`. For speed, the input's contribution to
the gates is computed for all time steps at once (one matrix product, `x W_ihᵀ + b`,
stored time-major so that each step reads a contiguous (N, G·H) block), and the cell run
by `scan` only adds the hidden state's part, the G gates fused in one product `h W_hhᵀ`
as torch's weight layout (gates stacked on the rows) allows. Its backward mirrors that:
`scan`'s VJP walks time in reverse and hands back the gates' cotangents for every step,
from which `dW_ih = Σₜ dgₜᵀ xₜ` and `dx = dg W_ih` are again one product each, and so is
`dW_hh = Σₜ dgₜᵀ hₜ₋₁` for LSTM and RNN (their step takes `W_hh` as a keyword, a constant
of the step, rather than as a param whose gradient `scan` would sum step by step).

Params are named as `torch.nn.LSTM(batch_first=True).state_dict()`'s (`weight_ih_l0`,
`weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `…_reverse`), so torch weights load with
`fnn.tree.from_state_dict`. The cells (`RNNCell`, `LSTMCell`, `GRUCell`) have
`torch.nn.LSTMCell`'s param names and `scan`'s calling convention.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import random
from ..core import (
    VJP,
    Key,
    Layer,
    LayerInfo,
    Params,
    Shape,
    Shapes,
    backprop,
    backward,
    declare,
    per_example_rule,
)
from ..errors import FnnError, FnnTypeError, KeyArrayError, ShapeError, describe
from ..scan import scan
from . import _checks

__all__ = [
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "recurrent_cell_backward",
    "recurrent_backward",
]

aten = torch.ops.aten
# the overloads themselves: calling them skips the overload lookup of `aten.tanh_backward(...)`
_tanh_backward = aten.tanh_backward.default
_sigmoid_backward = aten.sigmoid_backward.default
_threshold_backward = aten.threshold_backward.default

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
"""Gates per mode: the rows of `weight_ih` are G·H, gates stacked in torch's order
(LSTM: input, forget, cell, output; GRU: reset, update, new)."""


def _mode(name: str, nonlinearity: str) -> str:
    if name in ("LSTM", "LSTMCell"):
        return "LSTM"
    if name in ("GRU", "GRUCell"):
        return "GRU"
    if nonlinearity not in ("tanh", "relu"):
        raise FnnError(f"{name}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"


# ---------------------------------------------------------------------------------------
# One time step, shared by the cells and the layers. `gx` (N, G·H) is the input's part of
# the gates' pre-activations, biases included (except GRU's `b_hh`, which the reset gate
# multiplies); the step adds `h W_hhᵀ` and returns (new carry, output, residuals).


def _step(
    mode: str, gx: torch.Tensor, carry: Any, w_hh_t: torch.Tensor, b_hh: torch.Tensor | None
) -> tuple[Any, torch.Tensor, tuple[torch.Tensor, ...]]:
    """`w_hh_t` is W_hhᵀ (H, G·H): a contiguous copy makes the per-step product faster."""
    if mode == "LSTM":
        h, c = carry
        size = h.shape[1]
        gates = torch.addmm(gx, h, w_hh_t)
        act = gates.sigmoid()  # i, f, o: σ (act's g rows go unused)
        g = gates[:, 2 * size : 3 * size].tanh_()  # the cell gate g: tanh
        i, f, _, o = act.chunk(4, 1)
        c_new = torch.addcmul(f * c, i, g)
        tanh_c = c_new.tanh()
        h_new = o * tanh_c
        return (h_new, c_new), h_new, (h, c, act, g, tanh_c)
    h = carry
    if mode == "GRU":
        size = h.shape[1]
        gh = h.mm(w_hh_t) if b_hh is None else torch.addmm(b_hh, h, w_hh_t)
        rz = torch.add(gx[:, : 2 * size], gh[:, : 2 * size]).sigmoid_()
        n = torch.addcmul(gx[:, 2 * size :], rz[:, :size], gh[:, 2 * size :]).tanh_()
        h_new = torch.addcmul(n, rz[:, size:], h - n)
        return h_new, h_new, (h, rz, n, gh[:, 2 * size :])
    pre = torch.addmm(gx, h, w_hh_t)
    h_new = pre.tanh_() if mode == "RNN_TANH" else pre.relu_()
    return h_new, h_new, (h, h_new)


# LSTM: c' = f c + i g,  h' = o tanh c'   ⇒   dc = dc' + dh' o (1 − tanh²c'),  d(i, f, g, o) = (dc g, dc c, dc i, dh' tanh c'),
#       through σ' (tanh' for g);  dc_prev = dc f,  dh_prev = dgates W_hh
# GRU:  h' = (1 − z) n + z h,  n = tanh(gxₙ + r ghₙ)   ⇒   dn = dh' (1 − z),  dz = dh' (h − n),  dr = dnₚ ghₙ,
#       dghₙ = dnₚ r;  dh_prev = dh' z + dgh W_hh
# RNN:  h' = φ(gx + h W_hhᵀ)   ⇒   dpre = dh' φ'(·),  dh_prev = dpre W_hh
def _step_backward(
    mode: str, res: tuple[torch.Tensor, ...], w_hh: torch.Tensor, dcarry: Any, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
    """`(dgx, dgh, h_prev, dcarry_prev)`: cotangents of the input's and the hidden state's
    gate pre-activations (`dW_hh = dghᵀ h_prev`), and of the previous carry."""
    if mode == "LSTM":
        h, c, act, g, tanh_c = res
        dh_carry, dc = dcarry
        dh = dy + dh_carry
        i, f, _, o = act.chunk(4, 1)
        dc = dc + _tanh_backward(dh * o, tanh_c)
        dgates = torch.cat(
            [
                _sigmoid_backward(dc * g, i),
                _sigmoid_backward(dc * c, f),
                _tanh_backward(dc * i, g),
                _sigmoid_backward(dh * tanh_c, o),
            ],
            1,
        )
        return dgates, dgates, h, (dgates.mm(w_hh), dc * f)
    dh = dy + dcarry
    if mode == "GRU":
        h, rz, n, ghn = res
        size = h.shape[1]
        r, z = rz[:, :size], rz[:, size:]
        dn_pre = _tanh_backward(dh - dh * z, n)
        drz = _sigmoid_backward(torch.cat([dn_pre * ghn, dh * (h - n)], 1), rz)
        dgx = torch.cat([drz, dn_pre], 1)
        dgh = torch.cat([drz, dn_pre * r], 1)
        return dgx, dgh, h, torch.addmm(dh * z, dgh, w_hh)
    h, h_new = res
    tanh = mode == "RNN_TANH"
    dpre = _tanh_backward(dh, h_new) if tanh else _threshold_backward(dh, h_new, 0)
    return dpre, dpre, h, dpre.mm(w_hh)


# ---------------------------------------------------------------------------------------
# Cells: one step as a layer, in scan's convention apply(params, (carry, x_t)).


def _cell(name: str, mode: str, hidden_size: int, bias: bool, projected: bool) -> Layer:
    """A cell layer. `projected`: params as torch.nn's cells, input x_t (N, C); otherwise
    the step run by the recurrent layers: params `weight_hh` (and GRU's `bias_hh`), input the
    precomputed gate pre-activations (N, G·H)."""
    gates = _GATES[mode] * hidden_size
    lstm = mode == "LSTM"
    step_bias = bias and mode == "GRU"  # the bias the step adds itself
    # The layers' LSTM and RNN steps take W_hh as the keyword `weight_hh=` (and its transpose
    # as `weight_hh_t=`, contiguous), constants of the step: the gradient of W_hh,
    # Σₜ dgₜᵀ hₜ₋₁, is then one product over all steps, made by the layer.
    # (GRU's hidden product has its own bias and the reset gate inside: its step owns both.)
    own_weight = projected or mode == "GRU"
    names = (
        ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
        if projected
        else (["weight_hh"] + (["bias_hh"] if step_bias else []) if own_weight else [])
    )

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        _checks.init_dtype(name, dtype, device)
        if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2):
            expected = "[[(-1, H), (-1, H)], (-1, C)]" if lstm else "[(-1, H), (-1, C)]"
            raise ShapeError(f"{name}: expected input shapes {expected}, got {input_shape!r}")
        carry_shape: Any = input_shape[0]
        shape = _checks.input_shape(name, input_shape[1], min_rank=2)
        features = shape[-1] if projected else hidden_size
        if projected and features < 1:
            raise ShapeError(f"{name}: input features must be ≥ 1, got {shape}")
        if not projected and shape[-1] != gates:
            raise ShapeError(f"{name}: expected gate inputs (-1, {gates}), got {shape}")
        bound = 1.0 / math.sqrt(hidden_size)
        shapes = {
            "weight_ih": (gates, features),
            "weight_hh": (gates, hidden_size),
            "bias_ih": (gates,),
            "bias_hh": (gates,),
        }
        keys = random.split(key, len(names))
        params = {
            n: random.uniform(k, shapes[n], -bound, bound, dtype=dtype, device=device)
            for n, k in zip(names, keys)
        }
        return [carry_shape, (*shape[:-1], hidden_size)], params

    def apply(params: Params, x: Any, **kwargs: Any) -> tuple[tuple[Any, torch.Tensor], VJP]:
        if not projected:  # the recurrent layers' own step: they checked params and inputs
            carry, gx = x
            if own_weight:
                w_hh = params["weight_hh"]
                w_hh_t = w_hh.t()
            else:  # W_hh and its transpose, both contiguous: constants of the step
                w_hh, w_hh_t = kwargs["weight_hh"], kwargs["weight_hh_t"]
            new_carry, y, res = _step(mode, gx, carry, w_hh_t, params.get("bias_hh"))
            residuals = (mode, res, w_hh, step_bias, None, None, bias, own_weight, False)
            return (new_carry, y), VJP(recurrent_cell_backward, residuals)
        if not (isinstance(x, (tuple, list)) and len(x) == 2):
            carry_form = "((h, c), x_t)" if lstm else "(h, x_t)"
            raise ShapeError(f"{name}: expected an input {carry_form}, got {describe(x)}")
        carry, x_t = x
        unbatched = isinstance(x_t, torch.Tensor) and x_t.ndim == 1  # (C,), h (H,): as torch
        if unbatched:
            x_t, carry = x_t.unsqueeze(0), _map_state(carry, torch.unsqueeze, 0)
        if (
            not isinstance(params, dict)
            or len(params) != len(names)
            or any(n not in params for n in names)
        ):
            _checks.param_leaves(name, params, names)
        _check_step_input(name, lstm, params["weight_hh"], carry, x_t, hidden_size)
        w_hh = params["weight_hh"]
        w_ih = params["weight_ih"]
        b_hh = params["bias_hh"] if step_bias else None
        expected = {"weight_ih": (gates, x_t.shape[1]), "weight_hh": (gates, hidden_size)}
        for leaf in names:
            shape = expected.get(leaf, (gates,))
            value = params[leaf]
            if value.shape != shape:
                if leaf == "weight_ih" and value.ndim == 2 and value.shape[0] == gates:
                    raise ShapeError(
                        f"{name}: expected an input x_t of shape (N, {value.shape[1]}), "
                        f"got {tuple(x_t.shape)}"
                    )
                _checks.param_like(name, leaf, value, shape, x_t)
        if not bias:
            gx = x_t.mm(w_ih.t())
        elif mode == "GRU":
            gx = torch.addmm(params["bias_ih"], x_t, w_ih.t())
        else:
            gx = torch.addmm(params["bias_ih"] + params["bias_hh"], x_t, w_ih.t())
        new_carry, y, res = _step(mode, gx, carry, w_hh.t(), b_hh)
        residuals = (mode, res, w_hh, step_bias, x_t, w_ih, bias, True, unbatched)
        if unbatched:
            new_carry, y = _map_state(new_carry, torch.squeeze, 0), y.squeeze(0)
        return (new_carry, y), VJP(recurrent_cell_backward, residuals)

    return declare(init, apply, LayerInfo(name))


def _check_step_input(
    name: str, lstm: bool, w_hh: torch.Tensor, carry: Any, x_t: Any, size: int
) -> None:
    """Cheap checks (attribute reads) of a cell's carry and input."""
    _checks.input_like(name, x_t, w_hh)
    if x_t.ndim != 2:
        raise ShapeError(f"{name}: expected an input x_t of shape (N, C), got {tuple(x_t.shape)}")
    parts = carry if lstm and isinstance(carry, (tuple, list)) and len(carry) == 2 else (carry,)
    if lstm and len(parts) != 2:
        raise ShapeError(f"{name}: expected the carry (h, c), got {describe(carry)}")
    for part in parts:
        if not isinstance(part, torch.Tensor) or part.shape != (x_t.shape[0], size):
            got = tuple(part.shape) if isinstance(part, torch.Tensor) else describe(part)
            raise ShapeError(
                f"{name}: expected a carry of shape ({x_t.shape[0]}, {size}) (N, H), got {got}"
            )
        _checks.input_like(name, part, w_hh)


@backward
def recurrent_cell_backward(residuals: tuple[Any, ...], dy: Any) -> tuple[Params, Any]:
    """
    the step above, then the input's projection gx = x W_ihᵀ + b   ⇒   dW_ih = dgxᵀ x,  db = Σₙ dgx,  dx = dgx W_ih
    """
    return _cell_grads(residuals, dy, False)


# per example: dW[n] = dg[n] ⊗ h[n] (and x[n]),  db[n] = dg[n]
@recurrent_cell_backward.per_example_rule
def _cell_per_example(residuals: tuple[Any, ...], dy: Any, need_dx: bool) -> tuple[Params, Any]:
    del need_dx
    return _cell_grads(residuals, dy, True)


def _cell_grads(residuals: tuple[Any, ...], dy: Any, per_example: bool) -> tuple[Params, Any]:
    mode, res, w_hh, step_bias, x_t, w_ih, bias, own_weight, unbatched = residuals
    if not (isinstance(dy, (tuple, list)) and len(dy) == 2):
        raise ShapeError(
            f"{mode} cell VJP: expected a cotangent (dcarry, dy_t), got {describe(dy)}"
        )
    dcarry, dy_t = dy
    if unbatched:
        if per_example:
            raise ShapeError(f"{mode} cell: per-example gradients need a batched input (N, C)")
        dcarry, dy_t = _map_state(dcarry, _unsqueeze0), _unsqueeze0(dy_t)
    if x_t is not None:  # a public cell (the layers' own step gets checked cotangents)
        _check_cotangent(mode, dcarry, dy_t, res[0])
    dgx, dgh, h_prev, dcarry_prev = _step_backward(mode, res, w_hh, dcarry, dy_t)
    outer = _outer_per_example if per_example else _outer
    grads: Params = {}
    if w_ih is not None:
        grads["weight_ih"] = outer(dgx, x_t)
    if own_weight:
        grads["weight_hh"] = outer(dgh, h_prev)
    if w_ih is not None and bias:
        grads["bias_ih"] = dgx if per_example else dgx.sum(0)
        if mode == "GRU":
            grads["bias_hh"] = dgh if per_example else dgh.sum(0)
        else:
            grads["bias_hh"] = grads["bias_ih"].clone()
    elif step_bias:
        grads["bias_hh"] = dgh if per_example else dgh.sum(0)
    dx = dgx.mm(w_ih) if w_ih is not None else dgx
    if unbatched:
        return grads, (_map_state(dcarry_prev, torch.squeeze, 0), dx.squeeze(0))
    return grads, (dcarry_prev, dx)


def _unsqueeze0(t: Any) -> Any:
    return t.unsqueeze(0) if isinstance(t, torch.Tensor) else t


def _map_state(state: Any, f: Any, *args: Any) -> Any:
    """`f(t, *args)` on a state's tensors: `h`, or LSTM's `(h, c)` (anything else as is)."""
    if isinstance(state, (tuple, list)):
        return tuple(f(t, *args) if isinstance(t, torch.Tensor) else t for t in state)
    return f(state, *args) if isinstance(state, torch.Tensor) else state


def _check_cotangent(mode: str, dcarry: Any, dy_t: Any, h: torch.Tensor) -> None:
    parts = dcarry if mode == "LSTM" and isinstance(dcarry, (tuple, list)) else (dcarry,)
    if mode == "LSTM" and len(parts) != 2:
        raise ShapeError(f"LSTM cell VJP: expected dcarry (dh, dc), got {describe(dcarry)}")
    for what, d in [("dcarry", p) for p in parts] + [("dy_t", dy_t)]:
        if not isinstance(d, torch.Tensor) or d.shape != h.shape:
            got = tuple(d.shape) if isinstance(d, torch.Tensor) else describe(d)
            raise ShapeError(
                f"{mode} cell VJP: expected {what} of shape {tuple(h.shape)}, got {got}"
            )


def _outer(dg: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return dg.t().mm(a)


def _outer_per_example(dg: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return torch.bmm(dg.unsqueeze(2), a.unsqueeze(1))


def _cell_args(name: str, hidden_size: object, bias: object) -> None:
    _checks.positive_int(name, "hidden_size", hidden_size)
    if not isinstance(bias, bool):
        raise FnnTypeError(f"{name}: bias must be a bool, got {bias!r}")


def RNNCell(hidden_size: int, bias: bool = True, nonlinearity: str = "tanh") -> Layer:
    """One Elman RNN step, `h' = φ(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`, as `torch.nn.RNNCell`.

    A cell in `fnn.scan`'s convention: run it over a sequence with `fnn.scan(RNNCell(H))`.

    Args:
        hidden_size: H, the size of the hidden state, ≥ 1.
        bias: whether to add `bias_ih` and `bias_hh`.
        nonlinearity: φ, `"tanh"` or `"relu"`.

    Returns:
        `Layer(init, apply)`. `init(key, [(-1, H), (-1, C)])` gives
            `([(-1, H), (-1, H)], params)` with torch.nn.RNNCell's params `weight_ih` (H, C),
            `weight_hh` (H, H), `bias_ih` (H,), `bias_hh` (H,), uniform in ±1/√H.
            `apply(params, (h, x_t))`, `h` (N, H) and `x_t` (N, C), gives `((h', h'), vjp)`;
            `vjp((dh_carry, dy))` gives `(dparams, (dh, dx_t))`. Unbatched `x_t` (C,)
            with a state of shape (H,) works as in torch.

    Raises:
        FnnError: a bad `hidden_size` or `nonlinearity`.
        ShapeError: (from `init`, `apply` and the VJP) bad shapes, naming what was expected.

    Example:
        >>> init, apply = L.RNNCell(4)
        >>> _, params = init(fnn.random.key(0), [(-1, 4), (-1, 3)])
        >>> (h, y), vjp = apply(params, (torch.zeros(2, 4), torch.ones(2, 3)))
        >>> y.shape
        torch.Size([2, 4])
    """
    _cell_args("RNNCell", hidden_size, bias)
    return _cell("RNNCell", _mode("RNNCell", nonlinearity), hidden_size, bias, True)


def LSTMCell(hidden_size: int, bias: bool = True) -> Layer:
    """One LSTM step on the carry `(h, c)`, as `torch.nn.LSTMCell`, in `fnn.scan`'s convention.

    `i, f, g, o = σ, σ, tanh, σ` of `x W_ihᵀ + b_ih + h W_hhᵀ + b_hh` (the four gates stacked
    on the weights' rows, torch's order), `c' = f c + i g`, `h' = o tanh(c')`.

    Args:
        hidden_size: H, the size of the hidden and cell states, ≥ 1.
        bias: whether to add `bias_ih` and `bias_hh`.

    Returns:
        `Layer(init, apply)`. `init(key, [[(-1, H), (-1, H)], (-1, C)])` gives
            `([[(-1, H), (-1, H)], (-1, H)], params)`, params `weight_ih` (4H, C),
            `weight_hh` (4H, H), `bias_ih` (4H,), `bias_hh` (4H,), uniform in ±1/√H.
            `apply(params, ((h, c), x_t))` gives `(((h', c'), h'), vjp)`;
            `vjp(((dh', dc'), dy))` gives `(dparams, ((dh, dc), dx_t))`. Unbatched
            `x_t` (C,) with states of shape (H,) works as in torch.

    Raises:
        FnnError: a bad `hidden_size`.
        ShapeError: (from `init`, `apply` and the VJP) bad shapes, naming what was expected.

    Example:
        >>> init, apply = fnn.scan(L.LSTMCell(4))
        >>> _, params = init(fnn.random.key(0), [[(-1, 4), (-1, 4)], (-1, 6, 3)])
        >>> h0 = c0 = torch.zeros(2, 4)
        >>> ((h, c), ys), vjp = apply(params, ((h0, c0), torch.randn(2, 6, 3)))
        >>> ys.shape
        torch.Size([2, 6, 4])
    """
    _cell_args("LSTMCell", hidden_size, bias)
    return _cell("LSTMCell", "LSTM", hidden_size, bias, True)


def GRUCell(hidden_size: int, bias: bool = True) -> Layer:
    """One GRU step, as `torch.nn.GRUCell`, in `fnn.scan`'s convention.

    `r, z = σ(x W_i{r,z}ᵀ + b_i{r,z} + h W_h{r,z}ᵀ + b_h{r,z})`,
    `n = tanh(x W_inᵀ + b_in + r (h W_hnᵀ + b_hn))`, `h' = (1 − z) n + z h`.

    Args:
        hidden_size: H, the size of the hidden state, ≥ 1.
        bias: whether to add `bias_ih` and `bias_hh`.

    Returns:
        `Layer(init, apply)`. `init(key, [(-1, H), (-1, C)])` gives
            `([(-1, H), (-1, H)], params)`, params `weight_ih` (3H, C), `weight_hh` (3H, H),
            `bias_ih` (3H,), `bias_hh` (3H,), uniform in ±1/√H. `apply(params, (h, x_t))`
            gives `((h', h'), vjp)`; `vjp((dh', dy))` gives `(dparams, (dh, dx_t))`.
            Unbatched `x_t` (C,) with a state of shape (H,) works as in torch.

    Raises:
        FnnError: a bad `hidden_size`.
        ShapeError: (from `init`, `apply` and the VJP) bad shapes, naming what was expected.

    Example:
        >>> init, apply = L.GRUCell(4)
        >>> _, params = init(fnn.random.key(0), [(-1, 4), (-1, 3)])
        >>> (h, y), vjp = apply(params, (torch.zeros(2, 4), torch.ones(2, 3)))
        >>> dparams, (dh, dx) = vjp((torch.zeros(2, 4), torch.ones(2, 4)))
        >>> dx.shape
        torch.Size([2, 3])
    """
    _cell_args("GRUCell", hidden_size, bias)
    return _cell("GRUCell", "GRU", hidden_size, bias, True)


# ---------------------------------------------------------------------------------------
# The layers: num_layers × directions cells, each run by scan.


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _recurrent(
    name: str,
    hidden_size: int,
    num_layers: int,
    nonlinearity: str,
    bias: bool,
    bidirectional: bool,
    dropout: float,
    return_state: bool,
) -> Layer:
    _checks.positive_int(name, "hidden_size", hidden_size)
    _checks.positive_int(name, "num_layers", num_layers)
    for what, flag in (
        ("bias", bias),
        ("bidirectional", bidirectional),
        ("return_state", return_state),
    ):
        if not isinstance(flag, bool):
            raise FnnTypeError(f"{name}: {what} must be a bool, got {flag!r}")
    rate = _checks.number(name, "dropout", dropout)
    if not 0.0 <= rate <= 1.0:
        raise FnnError(f"{name}: dropout must be in [0, 1], got {dropout!r}")
    mode = _mode(name, nonlinearity)
    lstm = mode == "LSTM"
    dirs = 2 if bidirectional else 1
    gates = _GATES[mode] * hidden_size
    step = _cell(f"{name} cell", mode, hidden_size, bias, False)
    scans = (scan(step), scan(step, reverse=True))
    kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    names = [
        k + _suffix(layer, d) for layer in range(num_layers) for d in range(dirs) for k in kinds
    ]
    states = "(h0, c0)" if lstm else "h0"

    def param_shapes(features: int) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {}
        for layer in range(num_layers):
            width = features if layer == 0 else hidden_size * dirs
            for d in range(dirs):
                s = _suffix(layer, d)
                shapes["weight_ih" + s] = (gates, width)
                shapes["weight_hh" + s] = (gates, hidden_size)
                if bias:
                    shapes["bias_ih" + s] = (gates,)
                    shapes["bias_hh" + s] = (gates,)
        return shapes

    def init(
        key: Key,
        input_shape: Shapes,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> tuple[Shapes, Params]:
        _checks.init_dtype(name, dtype, device)
        given_state = isinstance(input_shape, list) or (
            isinstance(input_shape, tuple)
            and len(input_shape) == 2
            and isinstance(input_shape[0], (tuple, list))
        )
        x_shape = input_shape[0] if given_state else input_shape
        shape = _checks.input_shape(name, x_shape, min_rank=2)
        if len(shape) > 3:
            raise ShapeError(f"{name}: expected an input shape (-1, T, C) or (T, C), got {shape}")
        if shape[-1] < 1:
            raise ShapeError(f"{name}: input features (last dimension) must be ≥ 1, got {shape}")
        bound = 1.0 / math.sqrt(hidden_size)
        shapes = param_shapes(shape[-1])
        keys = random.split(key, len(shapes))
        params = {
            n: random.uniform(k, s, -bound, bound, dtype=dtype, device=device)
            for (n, s), k in zip(shapes.items(), keys)
        }
        out: Shapes = (*shape[:-1], hidden_size * dirs)
        if return_state:
            state: Shapes = (num_layers * dirs, *shape[:-2], hidden_size)
            out = [out, [state, state] if lstm else state]
        return out, params

    def apply(params: Params, x: Any, *, key: Key | None = None, **kwargs: Any) -> tuple[Any, VJP]:
        del kwargs
        given_state = isinstance(x, (tuple, list))
        if given_state:
            if len(x) != 2:
                raise ShapeError(f"{name}: expected an input x or (x, {states}), got {describe(x)}")
            x, state = x
        if (
            not isinstance(params, dict)
            or len(params) != len(names)
            or any(n not in params for n in names)
        ):
            _checks.param_leaves(name, params, names)
        first = params["weight_ih_l0"]
        x = _checks.input_like(name, x, first)
        unbatched = x.ndim == 2
        if x.ndim not in (2, 3) or x.shape[-2] == 0:
            raise ShapeError(
                f"{name}: expected an input of shape (N, T, C) or (T, C) with T ≥ 1, got {tuple(x.shape)}"
            )
        if unbatched:
            x = x.unsqueeze(0)
        batch, steps, features = x.shape
        for n, s in param_shapes(features).items():
            p = params[n]
            if not isinstance(p, torch.Tensor) or p.shape != s:
                if n == "weight_ih_l0" and isinstance(p, torch.Tensor) and p.ndim == 2:
                    raise ShapeError(
                        f"{name}: expected an input of shape (N, T, {p.shape[1]}), got "
                        f"{tuple(x.shape[1 if unbatched else 0 :])}"
                    )
                _checks.param_like(name, n, p, s, x)
        h0s = _initial_state(
            name,
            lstm,
            given_state,
            state if given_state else None,
            x,
            num_layers * dirs,
            hidden_size,
            unbatched,
        )
        keys = None
        if key is not None and rate > 0.0 and num_layers > 1:
            try:
                keys = random.split(key, num_layers - 1)
            except KeyArrayError as error:
                raise KeyArrayError(f"{name}: bad key: {error}") from None
        scale = 1.0 / (1.0 - rate) if rate < 1.0 else 0.0
        inp = x.transpose(0, 1).contiguous()  # (T, N, C), time-major
        layers = []
        finals: list[Any] = []
        for layer in range(num_layers):
            mask = None
            if layer > 0 and keys is not None:
                # the mask Dropout draws: tensor ops only, so torch.compile traces it
                mask = random._bernoulli_traceable(
                    keys[layer - 1], 1.0 - rate, tuple(inp.shape), inp.device
                )
                inp = aten.native_dropout_backward.default(inp, mask, scale)
            flat = inp.reshape(steps * batch, inp.shape[2])
            outs, w_ihs, vjps, firsts = [], [], [], []
            for d in range(dirs):
                sfx = _suffix(layer, d)
                w_ih = params["weight_ih" + sfx]
                if not bias:
                    gx = flat.mm(w_ih.t())
                elif mode != "GRU":
                    gx = torch.addmm(
                        params["bias_ih" + sfx] + params["bias_hh" + sfx], flat, w_ih.t()
                    )
                else:
                    gx = torch.addmm(params["bias_ih" + sfx], flat, w_ih.t())
                gx = gx.view(steps, batch, gates).transpose(0, 1)  # (N, T, G·H), time-major
                h0 = h0s[layer * dirs + d]
                if mode == "GRU":
                    step_params = {"weight_hh": params["weight_hh" + sfx]}
                    if bias:
                        step_params["bias_hh"] = params["bias_hh" + sfx]
                    (carry, ys), vjp = scans[d].apply(step_params, (h0, gx))
                else:
                    w_hh = params["weight_hh" + sfx]
                    w_hh_t = w_hh.t().contiguous()  # for the forward products, once per call
                    (carry, ys), vjp = scans[d].apply(
                        {}, (h0, gx), weight_hh=w_hh, weight_hh_t=w_hh_t
                    )
                    firsts.append(h0[0] if lstm else h0)
                outs.append(ys.transpose(0, 1))  # (T, N, H), contiguous
                w_ihs.append(w_ih)
                vjps.append(vjp)
                finals.append(carry)
            # what dW_hh needs (LSTM, RNN): each direction's h₀ and outputs (T, N, H)
            hs = (tuple(firsts), tuple(outs)) if mode != "GRU" else None
            layers.append((inp, tuple(w_ihs), tuple(vjps), mask, hs))
            inp = outs[0] if dirs == 1 else torch.cat(outs, 2)
        y = inp.transpose(0, 1)
        y = y.squeeze(0) if unbatched else y.contiguous()
        flags = (mode, hidden_size, bias, given_state, unbatched, return_state, scale)
        vjp = VJP(recurrent_backward, (tuple(layers), flags))
        if not return_state:
            return y, vjp
        if lstm:
            h_n = torch.stack([f[0] for f in finals])
            c_n = torch.stack([f[1] for f in finals])
            if unbatched:
                h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
            return (y, (h_n, c_n)), vjp
        h_n = torch.stack(finals)
        return (y, h_n.squeeze(1) if unbatched else h_n), vjp

    info = LayerInfo(name, keywords=frozenset({"key"}))
    return declare(init, apply, info)


def _initial_state(
    name: str,
    lstm: bool,
    given: bool,
    state: Any,
    x: torch.Tensor,
    count: int,
    hidden_size: int,
    unbatched: bool,
) -> list[Any]:
    """The initial carry of each (layer, direction): `h` (N, H), or `(h, c)` for LSTM."""
    batch = x.shape[0]
    if not given:
        zeros = x.new_zeros(batch, hidden_size)
        return [(zeros, zeros) if lstm else zeros] * count
    parts = state if lstm and isinstance(state, (tuple, list)) and len(state) == 2 else (state,)
    if lstm and len(parts) != 2:
        raise ShapeError(f"{name}: expected the initial state (h0, c0), got {describe(state)}")
    expected = (count, hidden_size) if unbatched else (count, batch, hidden_size)
    checked = []
    for what, part in zip(("h0", "c0"), parts):
        if not isinstance(part, torch.Tensor) or tuple(part.shape) != expected:
            got = tuple(part.shape) if isinstance(part, torch.Tensor) else describe(part)
            raise ShapeError(
                f"{name}: expected {what} of shape {expected} (layers · directions, "
                f"{'' if unbatched else 'N, '}H), got {got}"
            )
        _checks.input_like(name, part, x)
        checked.append(part.unsqueeze(1) if unbatched else part)
    if lstm:
        return list(zip(checked[0].unbind(0), checked[1].unbind(0)))
    return list(checked[0].unbind(0))


@backward
def recurrent_backward(residuals: tuple[Any, ...], dy: Any) -> tuple[Params, Any]:
    """
    per layer and direction: gx = x W_ihᵀ + b, (h_T, ys) = scan(cell)(h0, gx)   ⇒   (_, (dh0, dgx)) = scan VJP((dh_T, dys)), dW_ih = Σₜ dgxₜᵀ xₜ,  dW_hh = Σₜ dgxₜᵀ hₜ₋₁,  db_ih = db_hh = Σ dgx (GRU: dW_hh, db_hh from scan's dparams), dx = Σ_dir dgx W_ih, through each dropout mask
    """
    layers, flags = residuals
    return _recurrent_grads(list(layers), flags, dy, "call", True)


@recurrent_backward.consumer
def _recurrent_consume(box: list[Any], need_dx: bool) -> tuple[Params, Any]:
    """`recurrent_backward` for `fnn.core.backprop`: each layer's residuals and each time
    step's are freed once used, and `dx = dgx W_ih` of the first layer is skipped when
    nobody needs it."""
    dy = box.pop()
    layers, flags = box.pop()
    pending = list(layers)
    del layers
    return _recurrent_grads(pending, flags, dy, "consume", need_dx)


# per example: dW_ih[n] = Σₜ dgx[t, n]ᵀ x[t, n], db[n] = Σₜ dgx[t, n]; dW_hh through the cells' rules
@recurrent_backward.per_example_rule
def _recurrent_per_example(
    residuals: tuple[Any, ...], dy: Any, need_dx: bool
) -> tuple[Params, Any]:
    layers, flags = residuals
    if flags[4]:
        raise ShapeError(
            f"{flags[0]}: per-example gradients need a batched input (N, T, C), got an unbatched one"
        )
    return _recurrent_grads(list(layers), flags, dy, "per_example", need_dx)


def _recurrent_children(residuals: tuple[Any, ...]) -> tuple[VJP, ...]:
    return tuple(vjp for layer in residuals[0] for vjp in layer[2])


recurrent_backward.holds_children(_recurrent_children)


def _recurrent_grads(
    layers: list[Any], flags: tuple[Any, ...], dy: Any, walk: str, need_dx: bool
) -> tuple[Params, Any]:
    mode, hidden_size, bias, given_state, unbatched, return_state, scale = flags
    lstm = mode == "LSTM"
    name = "LSTM" if lstm else "GRU" if mode == "GRU" else "RNN"
    num_layers = len(layers)
    dirs = len(layers[0][1])
    count = num_layers * dirs
    steps, batch = layers[0][0].shape[:2]
    like = layers[0][0]
    out_shape = (steps, hidden_size * dirs) if unbatched else (batch, steps, hidden_size * dirs)
    state_shape = (count, hidden_size) if unbatched else (count, batch, hidden_size)
    if return_state:
        if not (isinstance(dy, (tuple, list)) and len(dy) == 2):
            raise ShapeError(
                f"{name} VJP: expected a cotangent (dy, {'(dh_n, dc_n)' if lstm else 'dh_n'}), got {describe(dy)}"
            )
        dy, dstate = dy
        parts: tuple[Any, ...] = (
            tuple(dstate)
            if lstm and isinstance(dstate, (tuple, list)) and len(dstate) == 2
            else (dstate,)
        )
        if lstm and len(parts) != 2:
            raise ShapeError(f"{name} VJP: expected (dh_n, dc_n), got {describe(dstate)}")
        for part in parts:
            if not (isinstance(part, torch.Tensor) and part.shape == state_shape):
                _checks.cotangent_like(name, part, state_shape, like)
        parts = tuple((p.unsqueeze(1) if unbatched else p).to(like.dtype) for p in parts)
    else:
        zeros = like.new_zeros(count, batch, hidden_size)
        parts = (zeros, zeros) if lstm else (zeros,)
    if isinstance(dy, torch.Tensor) and dy.is_floating_point() and like.is_floating_point():
        dy = dy.to(like.dtype)  # under torch.autocast the output may be bfloat16: as autograd
    if not (isinstance(dy, torch.Tensor) and dy.shape == out_shape and dy.dtype is like.dtype):
        _checks.cotangent_like(name, dy, out_shape, like)
    if unbatched:
        dy = dy.unsqueeze(0)
    d_tm = dy.transpose(0, 1)  # (T, N, H·D)
    del dy
    per_example = walk == "per_example"
    gates = _GATES[mode] * hidden_size
    grads: dict[str, Any] = {}
    dh0: list[Any] = [None] * count
    for layer in range(num_layers - 1, -1, -1):
        inp, w_ihs, vjps, mask, hs = layers.pop()
        flat = inp.reshape(steps * batch, inp.shape[2])
        dinp = None
        for d in range(dirs):
            k = layer * dirs + d
            dcarry = (parts[0][k], parts[1][k]) if lstm else parts[0][k]
            dys = d_tm[:, :, d * hidden_size : (d + 1) * hidden_size].transpose(0, 1)
            cotangent = (dcarry, dys)
            if walk == "consume":
                box = [vjps[d], cotangent]
                del cotangent
                g_step, (dh0[k], dgx) = backprop(box, True)
            elif per_example:
                g_step, (dh0[k], dgx) = per_example_rule(vjps[d])(
                    vjps[d].residuals, cotangent, True
                )
            else:
                g_step, (dh0[k], dgx) = vjps[d](cotangent)
            dgx_tm = dgx.transpose(0, 1)  # (T, N, G·H), contiguous: scan stores time-major
            s = _suffix(layer, d)
            if per_example:
                grads["weight_ih" + s] = torch.bmm(dgx_tm.permute(1, 2, 0), inp.transpose(0, 1))
            else:
                dgx2 = dgx_tm.reshape(steps * batch, dgx_tm.shape[2])
                grads["weight_ih" + s] = dgx2.t().mm(flat)
            if hs is None:
                grads["weight_hh" + s] = g_step["weight_hh"]
            else:
                grads["weight_hh" + s] = _hidden_weight_grad(
                    dgx_tm, hs[0][d], hs[1][d], d, per_example
                )
            if bias:
                db = dgx_tm.sum(0) if per_example else dgx_tm.sum((0, 1))
                grads["bias_ih" + s] = db
                grads["bias_hh" + s] = g_step["bias_hh"] if mode == "GRU" else db.clone()
            if layer > 0 or need_dx:
                part = (
                    dgx_tm.reshape(steps * batch, gates)
                    .mm(w_ihs[d])
                    .view(steps, batch, inp.shape[2])
                )
                dinp = part if dinp is None else dinp.add_(part)
        del vjps
        if dinp is not None and mask is not None:
            dinp = aten.native_dropout_backward.default(dinp, mask, scale)
        d_tm = dinp
    dx = None
    if d_tm is not None:
        dx = d_tm.transpose(0, 1)
        dx = dx.squeeze(0) if unbatched else dx.contiguous()
    ordered = {n: grads[n] for n in _ordered_names(num_layers, dirs, bias)}
    if not given_state:
        return ordered, dx
    if lstm:
        dh = torch.stack([c[0] for c in dh0])
        dc = torch.stack([c[1] for c in dh0])
        if unbatched:
            dh, dc = dh.squeeze(1), dc.squeeze(1)
        return ordered, (dx, (dh, dc))
    dh = torch.stack(dh0)
    return ordered, (dx, dh.squeeze(1) if unbatched else dh)


# dW_hh = Σₜ dgₜᵀ hₜ₋₁, with hₜ₋₁ = h₀ at the first step (t = 0 forward, T−1 reverse)
def _hidden_weight_grad(
    dg: torch.Tensor, h0: torch.Tensor, ys: torch.Tensor, reverse: int, per_example: bool
) -> torch.Tensor:
    """The gradient of W_hh from the gates' cotangents `dg` (T, N, G·H), the initial state
    `h0` (N, H) and the outputs `ys` (T, N, H), in one product (per example: one per row)."""
    steps, batch, gates = dg.shape
    size = ys.shape[2]
    if per_example:
        h0 = h0.unsqueeze(0)
        h_prev = torch.cat([ys[1:], h0]) if reverse else torch.cat([h0, ys[:-1]])
        return torch.bmm(dg.permute(1, 2, 0), h_prev.transpose(0, 1))
    first, rest = (-1, slice(0, -1)) if reverse else (0, slice(1, None))
    before = slice(1, None) if reverse else slice(0, -1)
    rows = (steps - 1) * batch
    grad = dg[rest].reshape(rows, gates).t().mm(ys[before].reshape(rows, size))
    return torch.addmm(grad, dg[first].t(), h0)


def _ordered_names(num_layers: int, dirs: int, bias: bool) -> list[str]:
    kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    return [
        k + _suffix(layer, d) for layer in range(num_layers) for d in range(dirs) for k in kinds
    ]


def RNN(
    hidden_size: int,
    num_layers: int = 1,
    nonlinearity: str = "tanh",
    bias: bool = True,
    bidirectional: bool = False,
    dropout: float = 0.0,
    return_state: bool = False,
) -> Layer:
    """An Elman RNN, `h_t = φ(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)`, as `torch.nn.RNN`.

    Batch first: input (N, T, C) (or unbatched (T, C)). Its cell is run by `fnn.scan`.

    Args:
        hidden_size: H, the size of the hidden state, ≥ 1.
        num_layers: stacked layers; layer l > 0 reads layer l − 1's output.
        nonlinearity: φ, `"tanh"` or `"relu"`.
        bias: whether to add `bias_ih_l*` and `bias_hh_l*`.
        bidirectional: also run each layer backwards in time; outputs are concatenated
            (forward first), params of the backward direction end in `_reverse`.
        dropout: probability of zeroing each output of every layer but the last, when
            `apply` is given a `key=` (training); without a key, no dropout.
        return_state: also return the last hidden state `h_n`.

    Returns:
        `Layer(init, apply)`. `init(key, (-1, T, C))` gives `((-1, T, H·D), params)`, D = 2
            if bidirectional else 1, params named as `torch.nn.RNN(batch_first=True)`'s
            state_dict (`weight_ih_l0` (H, C), `weight_hh_l0` (H, H), `bias_ih_l0`,
            `bias_hh_l0`, …, `weight_ih_l0_reverse`, …), uniform in ±1/√H.
            `apply(params, x)` gives `(y, vjp)`, y (N, T, H·D); `apply(params, (x, h0))`,
            h0 (num_layers·D, N, H), starts from `h0` and its VJP gives `dx = (dx, dh0)`.
            With `return_state=True` the output is `(y, h_n)`, h_n (num_layers·D, N, H),
            and the cotangent `(dy, dh_n)`.

    Raises:
        FnnError: a bad constructor argument.
        ShapeError: (from `init`, `apply` and the VJP) bad input, state, param or cotangent
            shapes, naming what was expected.

    Example:
        >>> init, apply = L.RNN(4, num_layers=2)
        >>> _, params = init(fnn.random.key(0), (-1, 5, 3))
        >>> y, vjp = apply(params, torch.randn(2, 5, 3))
        >>> dparams, dx = vjp(torch.ones(2, 5, 4))
        >>> y.shape, dx.shape, sorted(dparams)[:2]
        (torch.Size([2, 5, 4]), torch.Size([2, 5, 3]), ['bias_hh_l0', 'bias_hh_l1'])
    """
    return _recurrent(
        "RNN", hidden_size, num_layers, nonlinearity, bias, bidirectional, dropout, return_state
    )


def LSTM(
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    dropout: float = 0.0,
    return_state: bool = False,
) -> Layer:
    """A long short-term memory layer, as `torch.nn.LSTM(batch_first=True)`.

    `i, f, g, o = σ, σ, tanh, σ` of `x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh`,
    `c_t = f c_{t−1} + i g`, `h_t = o tanh(c_t)`; the four gates are one product (torch's
    layout stacks them on the weights' rows) and the input's part is computed for all
    time steps at once. Batch first: input (N, T, C) (or unbatched (T, C)).

    Args:
        hidden_size: H, the size of the hidden and cell states, ≥ 1.
        num_layers: stacked layers; layer l > 0 reads layer l − 1's output.
        bias: whether to add `bias_ih_l*` and `bias_hh_l*`.
        bidirectional: also run each layer backwards in time; outputs are concatenated
            (forward first), params of the backward direction end in `_reverse`.
        dropout: probability of zeroing each output of every layer but the last, when
            `apply` is given a `key=` (training); without a key, no dropout.
        return_state: also return the last states `(h_n, c_n)`.

    Returns:
        `Layer(init, apply)`. `init(key, (-1, T, C))` gives `((-1, T, H·D), params)`, D = 2
            if bidirectional else 1, params named as `torch.nn.LSTM(batch_first=True)`'s
            state_dict (`weight_ih_l0` (4H, C), `weight_hh_l0` (4H, H), `bias_ih_l0` (4H,),
            `bias_hh_l0` (4H,), …, `…_reverse`), uniform in ±1/√H. `apply(params, x)` gives
            `(y, vjp)`, y (N, T, H·D); `apply(params, (x, (h0, c0)))`, h0 and c0 of shape
            (num_layers·D, N, H), starts from that state and its VJP gives
            `dx = (dx, (dh0, dc0))`. With `return_state=True` the output is
            `(y, (h_n, c_n))`, each (num_layers·D, N, H), and the cotangent
            `(dy, (dh_n, dc_n))`.

    Raises:
        FnnError: a bad constructor argument.
        ShapeError: (from `init`, `apply` and the VJP) bad input, state, param or cotangent
            shapes, naming what was expected.

    Example:
        >>> init, apply = L.LSTM(8, return_state=True)
        >>> _, params = init(fnn.random.key(0), (-1, 5, 3))
        >>> (y, (h, c)), vjp = apply(params, torch.randn(2, 5, 3))
        >>> y.shape, h.shape, params["weight_ih_l0"].shape
        (torch.Size([2, 5, 8]), torch.Size([1, 2, 8]), torch.Size([32, 3]))
        >>> dparams, dx = vjp((torch.ones(2, 5, 8), (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))))
    """
    return _recurrent(
        "LSTM", hidden_size, num_layers, "tanh", bias, bidirectional, dropout, return_state
    )


def GRU(
    hidden_size: int,
    num_layers: int = 1,
    bias: bool = True,
    bidirectional: bool = False,
    dropout: float = 0.0,
    return_state: bool = False,
) -> Layer:
    """A gated recurrent unit layer, as `torch.nn.GRU(batch_first=True)`.

    `r, z = σ(x_t W_i{r,z}ᵀ + b_i{r,z} + h W_h{r,z}ᵀ + b_h{r,z})`,
    `n = tanh(x_t W_inᵀ + b_in + r (h W_hnᵀ + b_hn))`, `h_t = (1 − z) n + z h_{t−1}`.
    Batch first: input (N, T, C) (or unbatched (T, C)).

    Args:
        hidden_size: H, the size of the hidden state, ≥ 1.
        num_layers: stacked layers; layer l > 0 reads layer l − 1's output.
        bias: whether to add `bias_ih_l*` and `bias_hh_l*`.
        bidirectional: also run each layer backwards in time; outputs are concatenated
            (forward first), params of the backward direction end in `_reverse`.
        dropout: probability of zeroing each output of every layer but the last, when
            `apply` is given a `key=` (training); without a key, no dropout.
        return_state: also return the last hidden state `h_n`.

    Returns:
        `Layer(init, apply)`. `init(key, (-1, T, C))` gives `((-1, T, H·D), params)`,
            params named as `torch.nn.GRU(batch_first=True)`'s state_dict (`weight_ih_l0`
            (3H, C), `weight_hh_l0` (3H, H), `bias_ih_l0`, `bias_hh_l0`, …), uniform in
            ±1/√H. `apply(params, x)` gives `(y, vjp)`, y (N, T, H·D);
            `apply(params, (x, h0))`, h0 (num_layers·D, N, H), starts from `h0` and its VJP
            gives `dx = (dx, dh0)`. With `return_state=True` the output is `(y, h_n)`.

    Raises:
        FnnError: a bad constructor argument.
        ShapeError: (from `init`, `apply` and the VJP) bad input, state, param or cotangent
            shapes, naming what was expected.

    Example:
        >>> init, apply = L.GRU(4, bidirectional=True)
        >>> _, params = init(fnn.random.key(0), (-1, 5, 3))
        >>> y, vjp = apply(params, torch.randn(2, 5, 3))
        >>> y.shape
        torch.Size([2, 5, 8])
    """
    return _recurrent(
        "GRU", hidden_size, num_layers, "tanh", bias, bidirectional, dropout, return_state
    )
