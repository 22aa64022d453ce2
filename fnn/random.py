"""Explicit, splittable random keys (JAX style) on top of torch generators.

A key is a CPU `int64` tensor of shape `(2,)` holding two 32-bit words. It is a
plain tensor, so it lives in pytrees and checkpoints like any other leaf. Every
function here derives a private `torch.Generator` from the key, so the same key
always gives the same numbers (on a given device) and torch's global generator is
never read nor advanced.

    >>> k = key(0)
    >>> k1, k2 = split(k)
    >>> uniform(k1, (2, 3)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import FnnError, KeyArrayError

__all__ = [
    "key",
    "split",
    "fold_in",
    "uniform",
    "normal",
    "bernoulli",
    "permutation",
    "randint",
    "generator",
]

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
Key = torch.Tensor


def _mix64(z: int) -> int:
    # splitmix64's finaliser: a bijective avalanche on 64-bit integers.
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _words(k: object) -> tuple[int, int]:
    _check_key(k)
    assert isinstance(k, torch.Tensor)
    hi, lo = k.tolist()
    return hi, lo


def _check_key(k: object) -> None:
    """A `KeyArrayError` unless `k` is a key; reads metadata only, so `torch.compile` traces it."""
    if not (
        isinstance(k, torch.Tensor)
        and k.dtype == torch.int64
        and k.shape == (2,)
        and k.device.type == "cpu"
    ):
        got = (
            f"tensor of shape {tuple(k.shape)}, dtype {k.dtype}, device {k.device}"
            if isinstance(k, torch.Tensor)
            else type(k).__name__
        )
        raise KeyArrayError(
            f"expected an fnn.random key (a CPU int64 tensor of shape (2,), made by "
            f"fnn.random.key(seed) or split), got {got}"
        )


def _from_int(z: int) -> Key:
    return torch.tensor([(z >> 32) & _MASK32, z & _MASK32], dtype=torch.int64)


def key(seed: int) -> Key:
    """A key made from an integer seed.

    Args:
        seed: any Python int (negative and large ones too); equal seeds give equal keys.

    Returns:
        The key: a CPU int64 tensor of shape `(2,)`.

    Raises:
        KeyArrayError: `seed` is not an int.

    Example:
        >>> k = key(0)
        >>> k.shape, k.dtype, torch.equal(k, key(0))
        (torch.Size([2]), torch.int64, True)
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KeyArrayError(f"fnn.random.key: seed must be an int, got {type(seed).__name__}")
    return _from_int(_mix64(seed & _MASK64))


def split(k: Key, num: int = 2) -> Key:
    """`num` new independent keys from `k`; use each new key once, and `k` no more.

    Under `torch.compile` it runs as tensor ops (no Python int of the key's value), with
    the same numbers, so a model that splits its `key=` (Dropout) compiles whole.

    Args:
        k: a key, shape `(2,)`.
        num: how many keys to make.

    Returns:
        The keys stacked as an int64 tensor of shape `(num, 2)`, so `a, b = split(k)` works.

    Raises:
        KeyArrayError: `k` is not a key.
        FnnError: `num` is not a positive int.

    Example:
        >>> a, b = split(key(0))
        >>> split(key(0), 3).shape, torch.equal(a, b)
        (torch.Size([3, 2]), False)
    """
    if not isinstance(num, int) or num < 1:
        raise FnnError(f"fnn.random.split: num must be a positive int, got {num!r}")
    if torch.compiler.is_compiling():  # the same numbers, from tensor ops torch.compile traces
        _check_key(k)
        mixed = _mix64_tensor(_seed_tensor(k))
        words = _mix64_tensor(mixed ^ _mix64_tensor(torch.arange(1, num + 1, dtype=torch.int64)))
        return torch.stack([_shift_right(words, 32), words & _MASK32], 1)
    hi, lo = _words(k)
    base = _mix64((hi << 32) | lo)
    rows = [_mix64(base ^ _mix64(i + 1)) for i in range(num)]
    return torch.tensor([[(z >> 32) & _MASK32, z & _MASK32] for z in rows], dtype=torch.int64)


def fold_in(k: Key, data: int) -> Key:
    """A new key from `k` and an integer (a step count, a rank, ...).

    Args:
        k: a key, shape `(2,)`.
        data: the integer to fold in; different integers give independent keys.

    Returns:
        A key of shape `(2,)`.

    Raises:
        KeyArrayError: `k` is not a key.

    Example:
        >>> k = key(0)
        >>> torch.equal(fold_in(k, 1), fold_in(k, 1)), torch.equal(fold_in(k, 1), fold_in(k, 2))
        (True, False)
    """
    hi, lo = _words(k)
    return _from_int(_mix64(_mix64((hi << 32) | lo) ^ _mix64(int(data) & _MASK64) ^ 0x5BD1E995))


def generator(k: Key, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device`, seeded from `k` (for users' own sampling).

    Args:
        k: a key, shape `(2,)`.
        device: the generator's device.

    Returns:
        A new `torch.Generator`; the same key gives the same generator state, always.

    Raises:
        FnnError: `device` is not a device, or torch makes no generator there (meta,
            or CUDA without a driver): the message gives torch's reason.

    Example:
        >>> g = generator(key(0))
        >>> torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=generator(key(0))))
        True
    """
    hi, lo = _words(k)
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise FnnError(f"fnn.random: {device!r} is not a device ({error})") from None
    try:
        g = torch.Generator(device=where)
    except RuntimeError as error:  # torch says why: a meta device, no CUDA build, ...
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FnnError(
            f"fnn.random: torch makes no random generator on device {where} ({reason})"
        ) from None
    g.manual_seed(_mix64(((hi << 32) | lo) ^ 0x2545F4914F6CDD1D) >> 1)
    return g


# The same mixing on int64 tensors (two's-complement wrapping), for what `torch.compile` must
# trace: a generator seeded from a key's value cannot be made inside a compiled graph.


def _signed(z: int) -> int:
    return z - (1 << 64) if z >= 1 << 63 else z


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """A logical right shift of int64 words (torch's `>>` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix64_tensor(z: torch.Tensor) -> torch.Tensor:
    """`_mix64` of each int64 element, bit for bit."""
    z = z + _signed(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _signed(0x94D049BB133111EB)
    return z ^ _shift_right(z, 31)


def _seed_tensor(k: torch.Tensor) -> torch.Tensor:
    """The key's 64-bit value `(hi << 32) | lo` as a 0-d int64 tensor."""
    return (k[0] << 32) | k[1]


def _hash32(z: torch.Tensor) -> torch.Tensor:
    """lowbias32, a bijective 32-bit hash, of each int32 element (wrapping arithmetic)."""
    z = z ^ ((z >> 16) & 0xFFFF)
    z = z * 0x7FEB352D
    z = z ^ ((z >> 15) & 0x1FFFF)
    z = z * (0x846CA68B - (1 << 32))
    return z ^ ((z >> 16) & 0xFFFF)


def _bernoulli_traceable(
    k: Key, p: float, shape: tuple[int, ...], device: torch.device | str
) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability `p` (a number in [0, 1],
    resolved to 2⁻²⁴ as torch.rand's float32), drawn from `k` with tensor ops only, so
    `torch.compile(fullgraph=True)` traces it and the compiled draw equals the eager one.

    Element i is True when the top 24 bits of `hash32(i ^ s)` are below `p · 2²⁴`, `s` a
    32-bit seed mixed from the key (for Dropout; the pattern repeats every 2³² elements)."""
    _check_key(k)
    seed = (_mix64_tensor(_seed_tensor(k) ^ 0x2545F4914F6CDD1D) & _MASK32).to(torch.int32)
    count = 1
    for d in shape:
        count *= d
    if count < 1 << 31:
        index = torch.arange(count, dtype=torch.int32, device=device)
    else:
        index = torch.arange(count, dtype=torch.int64, device=device).to(torch.int32)
    bits = (_hash32(index ^ seed.to(device)) >> 8) & 0xFFFFFF
    return (bits < int(p * (1 << 24))).reshape(shape)


def _on_meta(device: torch.device | str) -> bool:
    return isinstance(device, (torch.device, str)) and torch.device(device).type == "meta"


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    out = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in out):
        raise FnnError(f"fnn.random: shape must be non-negative ints, got {shape!r}")
    return out


def uniform(
    k: Key,
    shape: Sequence[int] | int,
    low: float = 0.0,
    high: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Samples uniform in `[low, high)`.

    Args:
        k: a key, shape `(2,)`.
        shape: shape of the result (an int for 1-d).
        low: lower bound (included).
        high: upper bound (excluded).
        dtype: a floating dtype.
        device: where to draw the numbers.

    Returns:
        A tensor of shape `shape`.

    Raises:
        KeyArrayError: `k` is not a key.
        FnnError: a negative dimension, or a device without a random generator.

    Example:
        >>> uniform(key(0), (2, 3))
        tensor([[0.4604, 0.3453, 0.9581],
                [0.5577, 0.9528, 0.1147]])
    """
    if _on_meta(device):  # sizes only (no data, no generator): `init(..., device="meta")`
        return torch.empty(_shape(shape), dtype=dtype, device="meta")
    g = generator(k, device)
    u = torch.rand(_shape(shape), generator=g, dtype=dtype, device=device)
    if low != 0.0 or high != 1.0:
        u = u * (high - low) + low
    return u


def normal(
    k: Key,
    shape: Sequence[int] | int,
    mean: float = 0.0,
    std: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Samples from the normal distribution N(mean, std²).

    Args:
        k: a key, shape `(2,)`.
        shape: shape of the result (an int for 1-d).
        mean: mean of the distribution.
        std: standard deviation.
        dtype: a floating dtype.
        device: where to draw the numbers.

    Returns:
        A tensor of shape `shape`.

    Raises:
        KeyArrayError: `k` is not a key.
        FnnError: a negative dimension, or a device without a random generator.

    Example:
        >>> normal(key(0), 2)
        tensor([-0.6037, -1.3497])
    """
    if _on_meta(device):  # sizes only (no data, no generator): `init(..., device="meta")`
        return torch.empty(_shape(shape), dtype=dtype, device="meta")
    g = generator(k, device)
    z = torch.randn(_shape(shape), generator=g, dtype=dtype, device=device)
    if mean != 0.0 or std != 1.0:
        z = z * std + mean
    return z


def bernoulli(
    k: Key,
    p: float | torch.Tensor,
    shape: Sequence[int] | int | None = None,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A bool tensor, each element True with probability `p`.

    Args:
        k: a key, shape `(2,)`.
        p: a probability in [0, 1], or a tensor of them (broadcast against `shape`).
        shape: shape of the result; defaults to `p`'s shape (and device) when `p` is a tensor.
        device: where to draw the numbers when `p` is a number.

    Returns:
        A bool tensor of shape `shape`.

    Raises:
        KeyArrayError: `k` is not a key.
        FnnError: `p` is a number outside [0, 1], or no `shape` is given for a number `p`.

    Example:
        >>> bernoulli(key(0), 0.5, (4,))
        tensor([ True,  True, False, False])
    """
    if not isinstance(p, torch.Tensor) and not (isinstance(p, (int, float)) and 0 <= p <= 1):
        raise FnnError(
            f"fnn.random.bernoulli: p must be a probability in [0, 1] or a tensor, got {p!r}"
        )
    if shape is None:
        if not isinstance(p, torch.Tensor):
            raise FnnError("fnn.random.bernoulli: give a shape when p is a number")
        shape = tuple(p.shape)
        device = p.device
    g = generator(k, device)
    return torch.rand(_shape(shape), generator=g, device=device) < p


def permutation(k: Key, n: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random permutation of `range(n)`.

    Args:
        k: a key, shape `(2,)`.
        n: number of elements, ≥ 0.
        device: where to draw the numbers.

    Returns:
        An int64 tensor of shape `(n,)`.

    Raises:
        KeyArrayError: `k` is not a key.
        FnnError: `n` is not a non-negative int.

    Example:
        >>> permutation(key(0), 5)
        tensor([0, 4, 3, 2, 1])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FnnError(f"fnn.random.permutation: n must be a non-negative int, got {n!r}")
    g = generator(k, device)
    return torch.randperm(n, generator=g, device=device)


def randint(
    k: Key,
    shape: Sequence[int] | int,
    low: int,
    high: int,
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Integers uniform in `[low, high)`.

    Args:
        k: a key, shape `(2,)`.
        shape: shape of the result (an int for 1-d).
        low: lowest integer (included).
        high: one above the highest integer.
        device: where to draw the numbers.

    Returns:
        An int64 tensor of shape `shape`.

    Raises:
        KeyArrayError: `k` is not a key.
        FnnError: a negative dimension.

    Example:
        >>> randint(key(0), 5, 0, 10)
        tensor([5, 1, 4, 4, 2])
    """
    g = generator(k, device)
    return torch.randint(low, high, _shape(shape), generator=g, device=device)
