"""Parameter initialisers: `f(key, shape, dtype, device) -> tensor`.

Each public name here is a factory that returns an initialiser, so arguments are
given once: `Dense(25, weight_init=xavier_uniform(gain=2 ** 0.5))`. The formulas
are `torch.nn.init`'s; the numbers come from an explicit `fnn.random` key.

Fans follow torch: for a weight of shape `(out, in, *kernel)`,
`fan_in = in · prod(kernel)` and `fan_out = out · prod(kernel)`.

    >>> w = kaiming_normal()(fnn.random.key(0), (25, 2), torch.float32, "cpu")
    >>> w.shape
    torch.Size([25, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

import torch
from typing_extensions import Protocol

from . import random
from .core import Key
from .errors import FnnError, FnnTypeError

__all__ = [
    "Initializer",
    "fan_in_uniform",
    "fans",
    "torch_default",
    "uniform",
    "normal",
    "zeros",
    "ones",
    "constant",
    "xavier_uniform",
    "xavier_normal",
    "glorot_uniform",
    "glorot_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "truncated_normal",
]


class Initializer(Protocol):
    """`init(key, shape, dtype, device) -> tensor of that shape`, as `Dense` takes."""

    def __call__(
        self, key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor: ...


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """`(fan_in, fan_out)` of a weight shape, as in torch.

    Args:
        shape: a weight shape `(out, in, *kernel)`.

    Returns:
        `(in · prod(kernel), out · prod(kernel))`.

    Raises:
        FnnError: `shape` has fewer than 2 dimensions.

    Example:
        >>> fans((16, 3, 5, 5))
        (75, 400)
    """
    if len(shape) < 2:
        raise FnnError(
            f"fan-based initialisers need a weight with at least 2 dimensions, got shape {tuple(shape)}"
        )
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform(low: float = 0.0, high: float = 1.0) -> Initializer:
    """Uniform on `[low, high)`.

    Args:
        low: lower bound (included).
        high: upper bound (excluded).

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`.

    Example:
        >>> init = uniform(-1.0, 1.0)
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.0792, -0.3095,  0.9162],
                [ 0.1155,  0.9057, -0.7706]])
    """

    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        return random.uniform(key, shape, low, high, dtype=dtype, device=device)

    return init


def normal(std: float = 1.0, mean: float = 0.0) -> Initializer:
    """Normal with the given standard deviation and mean.

    Args:
        std: standard deviation.
        mean: mean.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`.

    Example:
        >>> init = normal(std=0.1)
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.0604, -0.1350, -0.1437],
                [-0.1397,  0.0670,  0.0188]])
    """

    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        return random.normal(key, shape, mean, std, dtype=dtype, device=device)

    return init


def constant(value: float) -> Initializer:
    """Every element equal to `value`; the key is not used.

    Args:
        value: the value of every element.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`.

    Example:
        >>> init = constant(0.5)
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000]])
    """

    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        del key
        return torch.full(tuple(shape), value, dtype=dtype, device=device)

    return init


def zeros() -> Initializer:
    """All zeros; the key is not used.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`.

    Example:
        >>> init = zeros()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[0., 0., 0.],
                [0., 0., 0.]])
    """
    return constant(0.0)


def ones() -> Initializer:
    """All ones; the key is not used.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`.

    Example:
        >>> init = ones()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    return constant(1.0)


def _fan_uniform(bound_of_fans: Callable[[int, int], float]) -> Initializer:
    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        bound = bound_of_fans(*fans(shape))
        return random.uniform(key, shape, -bound, bound, dtype=dtype, device=device)

    return init


def _fan_normal(std_of_fans: Callable[[int, int], float]) -> Initializer:
    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        std = std_of_fans(*fans(shape))
        return random.normal(key, shape, 0.0, std, dtype=dtype, device=device)

    return init


def xavier_uniform(gain: float = 1.0) -> Initializer:
    """U(−a, a) with a = gain·√(6 / (fan_in + fan_out)) (`torch.nn.init.xavier_uniform_`).

    Also available as `glorot_uniform`.

    Args:
        gain: scale factor (`torch.nn.init.calculate_gain` gives the usual ones).

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`,
            a weight shape `(out, in, *kernel)` (`FnnError` for fewer than 2 dimensions).

    Example:
        >>> init = xavier_uniform()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.0868, -0.3390,  1.0037],
                [ 0.1265,  0.9921, -0.8441]])
    """
    return _fan_uniform(lambda fan_in, fan_out: gain * math.sqrt(6.0 / (fan_in + fan_out)))


def xavier_normal(gain: float = 1.0) -> Initializer:
    """N(0, σ²) with σ = gain·√(2 / (fan_in + fan_out)) (`torch.nn.init.xavier_normal_`).

    Also available as `glorot_normal`.

    Args:
        gain: scale factor (`torch.nn.init.calculate_gain` gives the usual ones).

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`,
            a weight shape `(out, in, *kernel)` (`FnnError` for fewer than 2 dimensions).

    Example:
        >>> init = xavier_normal()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.3818, -0.8536, -0.9090],
                [-0.8834,  0.4237,  0.1186]])
    """
    return _fan_normal(lambda fan_in, fan_out: gain * math.sqrt(2.0 / (fan_in + fan_out)))


glorot_uniform = xavier_uniform
glorot_normal = xavier_normal


FanMode: TypeAlias = Literal["fan_in", "fan_out"]
Nonlinearity: TypeAlias = Literal[
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]
"""The names `torch.nn.init.calculate_gain` knows."""


def _kaiming_std(
    a: float, mode: FanMode, nonlinearity: Nonlinearity
) -> Callable[[int, int], float]:
    if mode not in ("fan_in", "fan_out"):
        raise FnnError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    # typed here: torch ≤ 2.6 leaves calculate_gain unannotated
    calculate_gain: Callable[[Nonlinearity, float], float] = torch.nn.init.calculate_gain
    gain = calculate_gain(nonlinearity, a)

    def std(fan_in: int, fan_out: int) -> float:
        return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)

    return std


def kaiming_uniform(
    a: float = 0.0, mode: FanMode = "fan_in", nonlinearity: Nonlinearity = "leaky_relu"
) -> Initializer:
    """U(−b, b) with b = √3 · gain / √fan (`torch.nn.init.kaiming_uniform_`).

    Args:
        a: negative slope of the rectifier after this layer (for `"leaky_relu"`).
        mode: `"fan_in"` (keeps the forward variance) or `"fan_out"` (the backward one).
        nonlinearity: the `torch.nn.init.calculate_gain` name giving `gain`.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`,
            a weight shape `(out, in, *kernel)` (`FnnError` for fewer than 2 dimensions).

    Raises:
        FnnError: `mode` is neither `"fan_in"` nor `"fan_out"`.

    Example:
        >>> init = kaiming_uniform()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.1121, -0.4377,  1.2957],
                [ 0.1633,  1.2808, -1.0898]])
    """
    std = _kaiming_std(a, mode, nonlinearity)
    return _fan_uniform(lambda fan_in, fan_out: math.sqrt(3.0) * std(fan_in, fan_out))


def kaiming_normal(
    a: float = 0.0, mode: FanMode = "fan_in", nonlinearity: Nonlinearity = "leaky_relu"
) -> Initializer:
    """N(0, σ²) with σ = gain / √fan (`torch.nn.init.kaiming_normal_`).

    Args:
        a: negative slope of the rectifier after this layer (for `"leaky_relu"`).
        mode: `"fan_in"` (keeps the forward variance) or `"fan_out"` (the backward one).
        nonlinearity: the `torch.nn.init.calculate_gain` name giving `gain`.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`,
            a weight shape `(out, in, *kernel)` (`FnnError` for fewer than 2 dimensions).

    Raises:
        FnnError: `mode` is neither `"fan_in"` nor `"fan_out"`.

    Example:
        >>> init = kaiming_normal()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.4929, -1.1021, -1.1736],
                [-1.1405,  0.5470,  0.1532]])
    """
    return _fan_normal(_kaiming_std(a, mode, nonlinearity))


def torch_default() -> Initializer:
    """The default weight init of `torch.nn.Linear`/`Conv2d`: U(±1/√fan_in).

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`,
            a weight shape `(out, in, *kernel)` (`FnnError` for fewer than 2 dimensions).

    Example:
        >>> init = torch_default()
        >>> init(fnn.random.key(0), (2, 3), torch.float32, "cpu")
        tensor([[-0.0457, -0.1787,  0.5290],
                [ 0.0667,  0.5229, -0.4449]])
    """
    return kaiming_uniform(a=math.sqrt(5.0))


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times `gain` (`torch.nn.init.orthogonal_`).

    For a weight of shape `(rows, *rest)`, the `(rows, cols)` matrix (`cols = prod(rest)`)
    has orthonormal rows (rows ≤ cols) or columns (rows > cols), times `gain`: the Q of the
    QR factorisation of a standard normal matrix, its signs fixed by R's diagonal so that
    it is uniform over the orthogonal matrices, as torch's. The normal draw comes from
    the key (`fnn.random.generator(key)`); with `generator=fnn.random.generator(key)`
    torch's `orthogonal_` gives the same tensor. float16 and bfloat16 weights are drawn
    and factorised in float32, then rounded.

    Args:
        gain: the scale factor (`torch.nn.init.calculate_gain` gives the usual ones).

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`
            (at least 2 dimensions; `FnnError` otherwise). On the `meta` device it draws
            nothing and gives an empty tensor, as torch's.

    Example:
        >>> w = orthogonal()(fnn.random.key(0), (3, 5), torch.float64, "cpu")
        >>> torch.allclose(w @ w.T, torch.eye(3, dtype=torch.float64))
        True
    """

    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        shape = tuple(shape)
        if len(shape) < 2:
            raise FnnError(
                f"orthogonal init: needs a weight with at least 2 dimensions, got shape {shape}"
            )
        if math.prod(shape) == 0 or torch.device(device).type == "meta":
            return torch.empty(shape, dtype=dtype, device=device)
        rows = shape[0]
        cols = math.prod(shape) // rows
        work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        flat = torch.empty((rows, cols), dtype=work, device=device)
        flat.normal_(0, 1, generator=random.generator(key, device))
        if rows < cols:
            flat = flat.t()
        q: torch.Tensor
        r: torch.Tensor
        q, r = torch.linalg.qr(flat)
        q = q * torch.diag(r, 0).sign()
        if rows < cols:
            q = q.t()
        return (q.reshape(shape) * gain).to(dtype)

    return init


def truncated_normal(
    mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> Initializer:
    """N(mean, std²) truncated to [a, b] (`torch.nn.init.trunc_normal_`).

    `a` and `b` are absolute bounds, as torch's (not in units of `std`). Sampled as
    torch's, by rejection: normal draws redrawn until inside [a, b] when that interval
    holds more than 30 % of the mass, else uniform proposals on [a, b] accepted with the
    normal density; all draws come from the key (`fnn.random.generator(key)`), so torch's
    `trunc_normal_(..., generator=fnn.random.generator(key))` gives the same tensor.

    Args:
        mean: the mean of the normal before truncation.
        std: its standard deviation, > 0.
        a: the lower bound.
        b: the upper bound, > a.

    Returns:
        An initialiser `init(key, shape, dtype, device)` giving a tensor of shape `shape`
            with every element in [a, b]. On the `meta` device it draws nothing.

    Raises:
        FnnError: `std` ≤ 0 or `a` ≥ b.
        FnnTypeError: an argument that is not a number.

    Example:
        >>> w = truncated_normal(std=0.02, a=-0.04, b=0.04)(fnn.random.key(0), (1000,), torch.float32, "cpu")
        >>> bool(w.abs().max() <= 0.04), round(w.std().item(), 2)
        (True, 0.02)
    """
    for what, value in (("mean", mean), ("std", std), ("a", a), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FnnTypeError(f"truncated_normal: {what} must be a number, got {value!r}")
    if not std > 0:
        raise FnnError(f"truncated_normal: std must be > 0, got {std!r}")
    if not a < b:
        raise FnnError(f"truncated_normal: a must be < b, got a={a!r}, b={b!r}")

    def norm_cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    mass = norm_cdf((b - mean) / std) - norm_cdf((a - mean) / std)

    def init(
        key: Key, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str
    ) -> torch.Tensor:
        out = torch.empty(tuple(shape), dtype=dtype, device=device)
        if out.is_meta:
            return out
        g = random.generator(key, device)
        if mass > 0.3:  # redraw the normals that fall outside
            lo = out.new_tensor(a, device="cpu").item()
            hi = out.new_tensor(b, device="cpu").item()
            result = out.normal_(mean, std, generator=g)
            while True:
                outside = (result < lo) | (result > hi)
                if not outside.any():
                    return result
                redrawn = torch.empty_like(result).normal_(mean, std, generator=g)
                result = torch.where(outside, redrawn, result)
        # uniform proposals on [a, b], accepted with probability pdf / peak pdf
        log_peak = -0.5 * ((max(a, min(mean, b)) - mean) / std) ** 2
        result = out.uniform_(a, b, generator=g)
        log_pdf = result.sub(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)
        pending = torch.empty_like(result).uniform_(generator=g).log_().gt(log_pdf)
        while pending.any():
            candidates = torch.empty_like(result).uniform_(a, b, generator=g)
            result = torch.where(pending, candidates, result)
            log_pdf = candidates.sub(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)
            accept = torch.empty_like(result).uniform_(generator=g).log_().gt(log_pdf)
            pending = torch.where(pending, accept, pending)
        return result

    return init


def fan_in_uniform(fan_in: int) -> Initializer:
    """U(±1/√fan_in): torch's default bias init for a layer with that fan-in.

    Args:
        fan_in: the layer's number of inputs per output (0 gives zeros).

    Returns:
        An initializer `f(key, shape, dtype, device)` drawing uniform in ±1/√fan_in.

    Example:
        >>> b = fan_in_uniform(4)(fnn.random.key(0), (3,), torch.float32, "cpu")
        >>> bool((b.abs() <= 0.5).all())
        True
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return uniform(-bound, bound)
