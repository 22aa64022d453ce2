"""Checkpoints: `save(path, tree)` and `load(path, like=None)`, atomic and pickle-free.

A checkpoint holds any nested dict (str keys) / list / tuple of tensors and plain
values (`int`, `float`, `bool`, `str`, `None`): params, optimizer state, step
counts and `fnn.random` keys together.

The file is a fixed 20-byte preamble, a JSON header and the raw tensor bytes::

    b"FNNCKPT\\x00" | header length (u64) | header CRC-32 (u32) | JSON header | tensor data

(integers little-endian). The JSON header describes the tree (containers, plain
values, and for each tensor its dtype, shape and byte range) and carries a CRC-32
of the tensor data. Loading parses JSON and copies bytes, so it never runs code
from the file: there is no pickle anywhere. A truncated or corrupt file is a
`CheckpointError` naming the file.

`save` writes a temporary file in the same folder, flushes and fsyncs it, and
renames it over `path` with `os.replace`, so `path` always holds either the old
or the new checkpoint, even if the process dies mid-save.

    >>> import tempfile, os
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = os.path.join(folder.name, "ckpt.fnn")
    >>> save(path, {"params": {"w": torch.ones(2)}, "step": 3})
    >>> load(path)
    {'params': {'w': tensor([1., 1.])}, 'step': 3}
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Mapping
from typing import Any, BinaryIO, TypeGuard

import torch

from .core import PyTree
from .errors import FnnError, FnnTypeError

__all__ = ["save", "load", "CheckpointError", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"FNNCKPT\x00"
"""The first 8 bytes of every fnn checkpoint."""
FORMAT_VERSION = 1
"""The version written in the header; `load` refuses versions it does not know."""

_PREAMBLE = struct.Struct("<8sQI")  # magic, header length in bytes, header CRC-32
_MAX_HEADER = 1 << 30  # a larger header length is corruption, not a real tree
_CHUNK = 1 << 24  # bytes per write/read call for big tensors

# Every dtype a checkpoint may hold, by the name written in the header.
_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name)
    for name in (
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "complex128",
        "complex64",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
    )
}
_DTYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


class CheckpointError(FnnError):
    """A file that is not a valid fnn checkpoint (truncated, corrupt, foreign), or a
    loaded tree that does not match `like=`."""


# --------------------------------------------------------------------------- save


def save(path: str | os.PathLike[str], tree: PyTree) -> None:
    """Write `tree` to `path` atomically: `path` holds the old or the new checkpoint, never a mix.

    Args:
        path: the checkpoint file; its folder must exist. An existing file is
            replaced only once the new one is completely on disk.
        tree: nested `dict` (str keys), `list`, `tuple` (NamedTuples too) of tensors
            on any device and plain `int`/`float`/`bool`/`str`/`None` values.

    Raises:
        FnnTypeError: a leaf of another kind (a function, an object, a sparse tensor),
            named by its path; nothing is written then.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = os.path.join(folder.name, "ckpt.fnn")
        >>> save(path, {"key": fnn.random.key(0), "step": 20, "lr": 0.1})
        >>> sorted(load(path))
        ['key', 'lr', 'step']
    """
    tensors: list[torch.Tensor] = []
    node = _encode(tree, "", tensors)
    entries, offset = [], 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        entries.append(
            {
                "dtype": _DTYPE_NAMES[t.dtype],
                "shape": list(t.shape),
                "offset": offset,
                "nbytes": nbytes,
            }
        )
        offset += nbytes
    crc = 0
    for t in tensors:
        crc = zlib.crc32(_raw(t), crc)
    header = json.dumps(
        {
            "format": "fnn-checkpoint",
            "version": FORMAT_VERSION,
            "byte_order": "little",
            "tree": node,
            "tensors": entries,
            "data_bytes": offset,
            "data_crc32": crc,
        },
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_PREAMBLE.pack(MAGIC, len(header), zlib.crc32(header)))
            f.write(header)
            _write_tensors(f, tensors)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _encode(tree: PyTree, path: str, tensors: list[torch.Tensor]) -> Any:
    """The JSON node of `tree`; its tensors (CPU, contiguous) are appended to `tensors`."""
    if isinstance(tree, torch.Tensor):
        if tree.layout is not torch.strided or tree.is_quantized or tree.dtype not in _DTYPE_NAMES:
            raise FnnTypeError(
                f"fnn.io.save: the tensor at {path or 'the root'} cannot be saved "
                f"(layout {tree.layout}, dtype {tree.dtype}); supported dtypes: {sorted(_DTYPES)}"
            )
        if tree.device.type == "meta":
            raise FnnTypeError(
                f"fnn.io.save: the tensor at {path or 'the root'} is on the meta device (it has no data)"
            )
        tensors.append(tree.detach().to("cpu").contiguous())
        return {"tensor": len(tensors) - 1}
    if tree is None or isinstance(tree, bool | str):
        return tree
    if isinstance(tree, int):
        return {"int": str(tree)}  # a string: JSON readers elsewhere may round big ints
    if isinstance(tree, float):
        return {"float": tree.hex()}  # exact, NaN and ±inf included
    if isinstance(tree, Mapping):
        bad = [k for k in tree if not isinstance(k, str)]
        if bad:
            raise FnnTypeError(
                f"fnn.io.save: dict keys must be str, got {bad[0]!r} at {path or 'the root'}"
            )
        return {"dict": [[k, _encode(v, f"{path}[{k!r}]", tensors)] for k, v in tree.items()]}
    if isinstance(tree, list):
        return {"list": [_encode(v, f"{path}[{i}]", tensors) for i, v in enumerate(tree)]}
    if isinstance(tree, tuple):
        items = [_encode(v, f"{path}[{i}]", tensors) for i, v in enumerate(tree)]
        if hasattr(tree, "_fields"):  # a NamedTuple: field names kept, rebuilt from `like=`
            return {"namedtuple": type(tree).__name__, "fields": list(tree._fields), "items": items}
        return {"tuple": items}
    raise FnnTypeError(
        f"fnn.io.save: cannot save the {type(tree).__name__} at {path or 'the root'}; a checkpoint holds "
        "dicts with str keys, lists, tuples, tensors, int, float, bool, str and None"
    )


def _raw(t: torch.Tensor) -> memoryview:
    """A writable byte view of a CPU contiguous tensor's memory (no copy, no numpy)."""
    nbytes = t.numel() * t.element_size()
    if nbytes == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_uint8 * nbytes).from_address(t.data_ptr())).cast("B")


def _write_tensors(f: BinaryIO, tensors: list[torch.Tensor]) -> None:
    if sys.byteorder != "little":
        raise FnnError("fnn.io.save: only little-endian machines are supported")
    for t in tensors:
        data = _raw(t)
        for start in range(0, len(data), _CHUNK):
            f.write(data[start : start + _CHUNK])


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- load


def load(path: str | os.PathLike[str], like: PyTree | None = None) -> PyTree:
    """Read a checkpoint written by `save`; no code from the file is ever executed.

    Args:
        path: the checkpoint file.
        like: optional tree of the expected structure (e.g. freshly initialised params and
            optimizer state). The loaded tree must then have the same structure, tensor
            shapes and dtypes, and kinds of plain values; its tensors go to the device of
            the matching `like` tensor, and NamedTuples get `like`'s type back.

    Returns:
        The saved tree, each tensor with its saved shape and dtype, on the CPU unless
            `like` says otherwise.

    Raises:
        CheckpointError: the file is not a complete fnn checkpoint (truncated, corrupt,
            foreign), or it does not match `like` (naming the first mismatching leaf).
        FileNotFoundError: `path` does not exist.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = os.path.join(folder.name, "ckpt.fnn")
        >>> save(path, {"w": torch.zeros(2, 3)})
        >>> load(path, like={"w": torch.ones(3, 2)})
        Traceback (most recent call last):
        ...
        fnn.io.CheckpointError: fnn.io.load: ...ckpt.fnn does not match like=: ['w'] has shape (2, 3), expected (3, 2)
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        preamble = f.read(_PREAMBLE.size)
        if len(preamble) < _PREAMBLE.size or preamble[:8] != MAGIC:
            raise CheckpointError(
                f"fnn.io.load: {path} is not an fnn checkpoint ({_what_is(preamble, size)})"
            )
        _, header_len, header_crc = _PREAMBLE.unpack(preamble)
        if header_len > min(size - _PREAMBLE.size, _MAX_HEADER):
            raise _corrupt(
                path, f"the header says {header_len} bytes but the file has {size} bytes"
            )
        raw_header = f.read(header_len)
        if zlib.crc32(raw_header) != header_crc:
            raise _corrupt(path, "the header does not match its checksum")
        try:
            header = json.loads(raw_header.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise _corrupt(path, "the JSON header does not parse") from None
        entries, data_bytes, crc = _check_header(path, header)
        data_start = _PREAMBLE.size + header_len
        if size - data_start != data_bytes:
            raise _corrupt(
                path, f"expected {data_bytes} bytes of tensor data, found {size - data_start}"
            )
        tensors, crc_got = [], 0
        for e in entries:
            t = torch.empty(e["shape"], dtype=_DTYPES[e["dtype"]])
            view = _raw(t)
            got = 0
            while got < len(view):
                n = f.readinto(view[got : got + _CHUNK])
                if not n:
                    raise _corrupt(path, "the file ended inside the tensor data")
                got += n
            crc_got = zlib.crc32(view, crc_got)
            tensors.append(t)
    if crc_got != crc:
        raise _corrupt(path, "the tensor data does not match its checksum")

    try:
        tree = _decode(header["tree"], tensors)
    except (KeyError, TypeError, ValueError, IndexError, RecursionError):
        raise _corrupt(path, "the tree description is malformed") from None
    if like is not None:
        tree = _match(tree, like, "", path)
    return tree


def _corrupt(path: str, why: str) -> CheckpointError:
    return CheckpointError(f"fnn.io.load: {path} is truncated or corrupt: {why}")


def _what_is(preamble: bytes, size: int) -> str:
    if size == 0:
        return "the file is empty"
    if preamble[:1] == b"\x80" or preamble[:2] == b"PK":
        return "it looks like a pickle or torch.save file; fnn never unpickles files"
    if MAGIC.startswith(preamble[:8]):
        return f"the file ends after {size} bytes, inside the preamble"
    return "wrong magic bytes"


def _check_header(path: str, header: Any) -> tuple[list[dict[str, Any]], int, int]:
    """The validated tensor entries, data length and CRC; `CheckpointError` otherwise."""
    if not isinstance(header, dict) or header.get("format") != "fnn-checkpoint":
        raise _corrupt(path, "the header is not an fnn checkpoint header")
    if header.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"fnn.io.load: {path} has checkpoint format version {header.get('version')!r}; "
            f"this fnn reads version {FORMAT_VERSION}"
        )
    if header.get("byte_order") != "little" or sys.byteorder != "little":
        raise CheckpointError(
            f"fnn.io.load: {path}: only little-endian checkpoints on little-endian machines"
        )
    entries, data_bytes, crc = (
        header.get("tensors"),
        header.get("data_bytes"),
        header.get("data_crc32"),
    )
    if (
        not isinstance(entries, list)
        or not _is_count(data_bytes)
        or not _is_count(crc)
        or "tree" not in header
    ):
        raise _corrupt(path, "the header misses its tensor table")
    end = 0
    for i, e in enumerate(entries):
        ok = (
            isinstance(e, dict)
            and e.get("dtype") in _DTYPES
            and isinstance(e.get("shape"), list)
            and all(_is_count(d) for d in e["shape"])
            and e.get("offset") == end
            and e.get("nbytes") == math.prod(e["shape"]) * _itemsize(_DTYPES[e["dtype"]])
        )
        if not ok:
            raise _corrupt(path, f"tensor entry {i} is malformed")
        end += e["nbytes"]
    if end != data_bytes:
        raise _corrupt(path, f"the tensor table covers {end} bytes, the header says {data_bytes}")
    return entries, data_bytes, crc


def _is_count(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _decode(node: Any, tensors: list[torch.Tensor]) -> PyTree:
    if node is None or isinstance(node, bool | str):
        return node
    if not isinstance(node, dict) or len(node) not in (1, 3):
        raise ValueError(node)
    if "tensor" in node:
        index = node["tensor"]
        if not _is_count(index):
            raise ValueError(index)
        return tensors[index]
    if "int" in node:
        return int(node["int"])
    if "float" in node:
        return float.fromhex(node["float"])
    if "dict" in node:
        return {str(k): _decode(v, tensors) for k, v in node["dict"]}
    if "list" in node:
        return [_decode(v, tensors) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, tensors) for v in node["tuple"])
    if "namedtuple" in node:
        return tuple(_decode(v, tensors) for v in node["items"])  # the type comes from `like=`
    raise ValueError(node)


def _match(got: PyTree, like: PyTree, where: str, path: str) -> PyTree:
    """`got` checked against `like` (structure, shapes, dtypes), with `like`'s devices and types."""

    def fail(why: str) -> CheckpointError:
        return CheckpointError(
            f"fnn.io.load: {path} does not match like=: {where or 'the root'} {why}"
        )

    if isinstance(like, Mapping):
        if not isinstance(got, dict):
            raise fail(f"is {_kind(got)}, expected a dict")
        missing = [k for k in like if k not in got]
        extra = [k for k in got if k not in like]
        if missing or extra:
            parts = ([f"misses keys {missing}"] if missing else []) + (
                [f"has unexpected keys {extra}"] if extra else []
            )
            raise fail(" and ".join(parts))
        return {k: _match(got[k], like[k], f"{where}[{k!r}]", path) for k in like}
    if isinstance(like, list | tuple):
        if (
            not isinstance(got, list | tuple)
            or len(got) != len(like)
            or isinstance(got, list) != isinstance(like, list)
        ):
            raise fail(f"is {_kind(got)}, expected {_kind(like)}")
        items = [_match(g, w, f"{where}[{i}]", path) for i, (g, w) in enumerate(zip(got, like))]
        if isinstance(like, list):
            return items
        return type(like)(*items) if hasattr(like, "_fields") else tuple(items)
    if isinstance(like, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            raise fail(f"is {_kind(got)}, expected a tensor")
        if got.shape != like.shape:
            raise fail(f"has shape {tuple(got.shape)}, expected {tuple(like.shape)}")
        if got.dtype != like.dtype:
            raise fail(f"has dtype {got.dtype}, expected {like.dtype}")
        return got if like.device.type in ("cpu", "meta") else got.to(like.device)
    if like is None:
        if got is not None:
            raise fail(f"is {_kind(got)}, expected None")
        return got
    if type(got) is not type(like):
        raise fail(f"is {_kind(got)}, expected {_kind(like)}")
    return got


def _kind(x: object) -> str:
    if isinstance(x, list | tuple):
        return f"a {type(x).__name__} of {len(x)} items"
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return "None" if x is None else f"a {type(x).__name__}"
