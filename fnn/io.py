"""Checkpoints: `save(path, tree)` and `load(path, like=None)`, atomic and pickle-free.

A checkpoint holds any nested dict (str keys) / list / tuple of tensors and plain
values (`int`, `float`, `bool`, `str`, `None`): params, optimizer state, step
counts and `fnn.random` keys together.

The file is a safetensors file (format version 2)::

    header length N (u64, little-endian) | JSON header (N bytes) | raw tensor bytes

The JSON header maps each tensor's name (its dotted path in the tree, e.g.
`"params.0.weight"`) to its dtype, shape and byte range, as safetensors does, so
safetensors' `load_file` reads fnn's checkpoints and `load` reads safetensors
files written by other tools. Its `__metadata__` carries what safetensors has no
place for: the tree (containers, plain values, which tensor sits where, dtypes
safetensors lacks) as JSON, the format version, and CRC-32s of the header and of
the tensor bytes. Loading parses JSON and copies bytes, so it never runs code from
the file: there is no pickle anywhere. A truncated or corrupt file is a
`CheckpointError` naming the file. Files of the previous format (version 1,
starting with `MAGIC`) are still read.

`save` writes a temporary file in the target's folder, flushes and fsyncs it, and
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
import re
import secrets
import socket
import stat
import struct
import sys
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from io import BufferedReader
from typing import Any, BinaryIO, TypeGuard

import torch

from .core import PyTree
from .errors import FnnError, FnnTypeError, TreeError
from .tree import from_state_dict
from .tree import leaves as tree_leaves
from .tree import map as tree_map

__all__ = ["save", "load", "CheckpointError", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"FNNCKPT\x00"
"""The first 8 bytes of a checkpoint of format version 1 (still read by `load`)."""
FORMAT_VERSION = 2
"""The version `save` writes (a safetensors file); `load` reads versions 1 and 2 and
refuses versions it does not know."""

_CHUNK = 1 << 24  # bytes per read call of format 1
# Format 2 checksums the tensor bytes in blocks of 4 MiB, one CRC-32 each, so that load
# verifies them in parallel threads while it reads.
_BLOCK = 1 << 22
_MAX_DEPTH = 100  # containers nested deeper than this are refused by save (and load)
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_MAX_DIM = 1 << 62  # a larger tensor dimension is corruption, not a real tensor
_CRC_PLACEHOLDER = "00000000"
_HEADER_CRC_KEY = "fnn.header_crc32"
_DATA_CRC_KEY = "fnn.data_crc32"
_TREE_KEY = "fnn.tree"
_VERSION_KEY = "fnn.version"
_FNN_KEYS = frozenset({_HEADER_CRC_KEY, _DATA_CRC_KEY, _TREE_KEY, _VERSION_KEY})


def _dtype_table() -> dict[str, torch.dtype]:
    """safetensors' dtype codes for the torch dtypes a checkpoint may hold (those this torch has)."""
    names = {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "C64": "complex64",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U64": "uint64",
        "U32": "uint32",
        "U16": "uint16",
        "U8": "uint8",
        "BOOL": "bool",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
        "F8_E4M3FNUZ": "float8_e4m3fnuz",
        "F8_E5M2FNUZ": "float8_e5m2fnuz",
    }
    return {code: getattr(torch, name) for code, name in names.items() if hasattr(torch, name)}


# The dtypes of format 2, by safetensors code; complex128 (which safetensors lacks) is
# stored as its float64 (..., 2) real view, the tree node naming the dtype.
_ST_DTYPES = _dtype_table()
_ST_CODES = {dtype: code for code, dtype in _ST_DTYPES.items()}
_SAVABLE = sorted(str(d).removeprefix("torch.") for d in [*_ST_CODES, torch.complex128])

# The dtypes of format 1, by the name written in its header.
_V1_DTYPES: dict[str, torch.dtype] = {
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
_V1_PREAMBLE = struct.Struct("<8sQI")  # magic, header length in bytes, header CRC-32
_V1_MAX_HEADER = 1 << 30


class CheckpointError(FnnError):
    """A file that is not a valid fnn checkpoint (truncated, corrupt, foreign), or a
    loaded tree that does not match `like=`."""


# --------------------------------------------------------------------------- save


def save(path: str | os.PathLike[str], tree: PyTree) -> None:
    """Write `tree` to `path` atomically: `path` holds the old or the new checkpoint, never a mix.

    The file is a safetensors file that safetensors' `load_file` also reads (the
    tensors by their dotted paths, e.g. `"params.0.weight"`).

    Args:
        path: the checkpoint file; its folder must exist. An existing file is
            replaced only once the new one is completely on disk, and keeps its
            permission bits; a new file gets `0o666` less the umask. A symlink is
            written through: its target is replaced, the link stays.
        tree: nested `dict` (str keys), `list`, `tuple` (NamedTuples too), at most 100
            levels deep, of tensors on any device and plain `int`/`float`/`bool`/`str`/
            `None` values (subclasses such as `IntEnum` or `numpy.float64` are saved as
            their plain value).

    Raises:
        FnnTypeError: a leaf of another kind (a function, an object, a sparse tensor),
            a tree that contains itself or is nested too deep, named by its path;
            nothing is written then.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.TemporaryDirectory()
        >>> path = os.path.join(folder.name, "ckpt.fnn")
        >>> save(path, {"key": fnn.random.key(0), "step": 20, "lr": 0.1})
        >>> sorted(load(path))
        ['key', 'lr', 'step']
    """
    if sys.byteorder != "little":
        raise FnnError("fnn.io.save: only little-endian machines are supported")
    found: dict[str, torch.Tensor] = {}
    node = _encode(tree, (), "", found, set())
    tree_json = json.dumps(node, separators=(",", ":"), allow_nan=False)
    # Widest elements first, so every tensor starts aligned to its element size.
    ordered = sorted(found.items(), key=lambda item: -item[1].element_size())
    entries: dict[str, Any] = {}
    offset = 0
    for name, t in ordered:
        nbytes = t.numel() * t.element_size()
        entries[name] = {
            "dtype": _ST_CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    metadata = {"format": "pt", _VERSION_KEY: str(FORMAT_VERSION), _TREE_KEY: tree_json}
    tensors = [t for _, t in ordered]

    target = _target(os.fspath(path))
    folder = os.path.dirname(target)
    _remove_stale_temp_files(target)
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_header(metadata, entries, [0] * -(-offset // _BLOCK)))
            crcs = _write_tensors(f, tensors)
            f.seek(0)
            f.write(_header(metadata, entries, crcs))  # same length: only the CRCs change
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:  # even KeyboardInterrupt: remove the partial file, then re-raise
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _header(metadata: dict[str, str], entries: dict[str, Any], data_crcs: list[int]) -> bytes:
    """The length prefix and JSON header (padded to 8 bytes) with the CRC-32s filled in:
    the header's own, and one per `_BLOCK` bytes of tensor data."""
    meta = {
        **metadata,
        _DATA_CRC_KEY: ",".join(f"{c:08x}" for c in data_crcs),
        _HEADER_CRC_KEY: _CRC_PLACEHOLDER,
    }
    text = json.dumps({"__metadata__": meta, **entries}, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    unsealed = struct.pack("<Q", len(text)) + text
    field = f'"{_HEADER_CRC_KEY}":"{_CRC_PLACEHOLDER}"'.encode()
    sealed = f'"{_HEADER_CRC_KEY}":"{zlib.crc32(unsealed):08x}"'.encode()
    return unsealed.replace(field, sealed)


def _encode(
    tree: PyTree,
    names: tuple[str, ...],
    where: str,
    found: dict[str, torch.Tensor],
    open_ids: set[int],
) -> Any:
    """The JSON node of `tree`; its tensors (CPU, contiguous, resolved) are appended to `found`."""
    at = where or "the root"
    if isinstance(tree, torch.Tensor):
        stored = _storable(tree, at)
        name = _tensor_name(names, found)
        found[name] = stored
        if tree.dtype == torch.complex128:
            return {"tensor": name, "dtype": "complex128"}
        return {"tensor": name}
    if tree is None or type(tree) is bool:
        return tree
    if isinstance(tree, str):
        return str.__str__(tree)  # a str subclass is saved as its plain value
    if isinstance(tree, int):
        value = int.__int__(tree)  # an IntEnum is saved as its plain value
        # A string: JSON readers elsewhere may round big ints. Hex past 2000 bits (603
        # digits): Python limits decimal conversions (4300 digits by default, 640 at
        # least), not base 16.
        return {"int": str(value) if value.bit_length() <= 2000 else hex(value)}
    if isinstance(tree, float):
        return {"float": float.__float__(tree).hex()}  # exact, NaN and ±inf included
    if not isinstance(tree, (Mapping, list, tuple)):
        kind = type(tree)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        raise FnnTypeError(
            f"fnn.io.save: cannot save the {name} at {at}; a checkpoint holds "
            "dicts with str keys, lists, tuples, tensors, int, float, bool, str and None"
        )
    if id(tree) in open_ids:
        raise FnnTypeError(f"fnn.io.save: the tree contains itself (a cycle) at {at}")
    if len(open_ids) >= _MAX_DEPTH:
        raise FnnTypeError(
            f"fnn.io.save: the tree is nested more than {_MAX_DEPTH} containers deep at {at}"
        )
    open_ids.add(id(tree))
    try:
        if isinstance(tree, Mapping):
            bad = [k for k in tree if not isinstance(k, str)]
            if bad:
                raise FnnTypeError(f"fnn.io.save: dict keys must be str, got {bad[0]!r} at {at}")
            return {
                "dict": [
                    [str.__str__(k), _encode(v, (*names, k), f"{where}[{k!r}]", found, open_ids)]
                    for k, v in tree.items()
                ]
            }
        items = [
            _encode(v, (*names, str(i)), f"{where}[{i}]", found, open_ids)
            for i, v in enumerate(tree)
        ]
        if isinstance(tree, list):
            return {"list": items}
        if hasattr(tree, "_fields"):  # a NamedTuple: field names kept, rebuilt from `like=`
            return {"namedtuple": type(tree).__name__, "fields": list(tree._fields), "items": items}
        return {"tuple": items}
    finally:
        open_ids.discard(id(tree))


def _storable(tree: torch.Tensor, at: str) -> torch.Tensor:
    """The tensor's values as a CPU, contiguous tensor of a safetensors dtype (views resolved)."""
    if tree.is_nested:
        raise FnnTypeError(
            f"fnn.io.save: the tensor at {at} is a nested tensor; save its components "
            "(`t.unbind()`) as a list"
        )
    if tree.layout is not torch.strided or tree.is_quantized or not _is_savable(tree.dtype):
        raise FnnTypeError(
            f"fnn.io.save: the tensor at {at} cannot be saved "
            f"(layout {tree.layout}, dtype {tree.dtype}); supported dtypes: {_SAVABLE}"
        )
    if tree.device.type == "meta":
        raise FnnTypeError(
            f"fnn.io.save: the tensor at {at} is on the meta device (it has no data)"
        )
    t = tree.detach()
    # Conjugate and negative views share memory with their base and only flag the
    # operation: the raw bytes would be the base's values.
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.dtype == torch.complex128:
        t = torch.view_as_real(t)
    return t.to("cpu").contiguous()


def _is_savable(dtype: torch.dtype) -> bool:
    return dtype in _ST_CODES or dtype == torch.complex128


def _tensor_name(names: tuple[str, ...], taken: Mapping[str, object]) -> str:
    """A unique safetensors name: the dotted path, disambiguated where keys hold dots."""
    base = ".".join(names) or "tensor"
    base = base.encode("utf-8", "backslashreplace").decode("utf-8")  # no lone surrogates
    name, n = base, 1
    while name in taken or name == "__metadata__":
        name, n = f"{base}#{n}", n + 1
    return name


def _raw(t: torch.Tensor) -> memoryview:
    """A writable byte view of a CPU contiguous tensor's memory (no copy, no numpy)."""
    nbytes = t.numel() * t.element_size()
    if nbytes == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_uint8 * nbytes).from_address(t.data_ptr())).cast("B")


def _write_tensors(f: BinaryIO, tensors: list[torch.Tensor]) -> list[int]:
    """Write the tensors' bytes; the CRC-32 of each `_BLOCK` of them. Each chunk is copied
    once, then both checksummed and written, so a tensor changed meanwhile by another
    thread still gives a file that matches its checksums (with values from before or
    after the change)."""
    crcs: list[int] = []
    crc = filled = 0
    for t in tensors:
        data = _raw(t)
        for start in range(0, len(data), _BLOCK):
            chunk = memoryview(bytes(data[start : start + _BLOCK]))
            f.write(chunk)
            while chunk:
                take = min(len(chunk), _BLOCK - filled)
                crc = zlib.crc32(chunk[:take], crc)
                filled += take
                chunk = chunk[take:]
                if filled == _BLOCK:
                    crcs.append(crc)
                    crc = filled = 0
    if filled:
        crcs.append(crc)
    return crcs


def _target(path: str) -> str:
    """The file to replace: a symlink's final target (written through, as `open` does)."""
    return os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def _create_temp(target: str) -> tuple[int, str]:
    """A new temporary file `.NAME.HOST.PID.RANDOM.tmp` beside `target`, mode 0o666 less the
    umask (the target's own permission bits when it exists)."""
    folder, base = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(folder, f".{base}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode) & 0o777
    except OSError:
        return fd, tmp
    if hasattr(os, "fchmod"):
        try:
            os.fchmod(fd, mode)
        except OSError:
            os.close(fd)
            os.unlink(tmp)
            raise
    return fd, tmp


def _remove_stale_temp_files(target: str) -> None:
    """Delete the temporary files of earlier saves to `target` whose process (on this host)
    is gone: saves killed mid-write. POSIX only (a signal-0 probe tells a live process)."""
    if os.name != "posix":
        return
    folder, base = os.path.split(target)
    prefix = f".{base}.{_host()}."
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text, _, token = name[len(prefix) : -len(".tmp")].partition(".")
        if not pid_text.isdigit() or not re.fullmatch(r"[0-9a-f]{8}", token):
            continue
        pid = int(pid_text)
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a pid: leave its file alone
    return True


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
    """Read a checkpoint written by `save`, or any safetensors file; no code from the file is ever executed.

    A safetensors file that `save` did not write (a torch model's `save_file`) loads as
    nested dicts of its dotted names, `fnn.tree.from_state_dict`'s layout, so
    `load(path, like=params)` loads a torch model's weights into the matching fnn model.
    Such a file has no checksum: only its structure is checked.

    Args:
        path: the checkpoint file.
        like: optional tree of the expected structure (e.g. freshly initialised params and
            optimizer state). The loaded tree must then have the same structure, tensor
            shapes and dtypes, and kinds of plain values; its tensors go to the device of
            the matching `like` tensor, and NamedTuples (and subclasses of `int`, `float`,
            `str` such as `IntEnum`) get `like`'s type back.

    Returns:
        The saved tree, each tensor with its saved shape and dtype, on the CPU unless
            `like` says otherwise.

    Raises:
        CheckpointError: the file is not a complete fnn checkpoint or safetensors file
            (truncated, corrupt, foreign), or it does not match `like` (naming the first
            mismatching leaf).
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
    if sys.byteorder != "little":
        raise CheckpointError(f"fnn.io.load: {path}: only little-endian machines are supported")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        read = _load_v1 if head == MAGIC else _load_safetensors
        tree, has_tree = read(f, path, size, head)
    if like is not None:
        tree = _match(tree, like, "", path, not has_tree)
    return tree


def _corrupt(path: str, why: str) -> CheckpointError:
    return CheckpointError(f"fnn.io.load: {path} is truncated or corrupt: {why}")


def _foreign(path: str, head: bytes, size: int) -> CheckpointError:
    if size == 0:
        why = "the file is empty"
    elif _looks_pickled(head):
        why = "it looks like a pickle or torch.save file; fnn never unpickles files"
    elif size < 8:
        why = f"the file has only {size} bytes"
    else:
        why = "wrong magic bytes: neither a safetensors file nor an fnn checkpoint of format 1"
    return CheckpointError(f"fnn.io.load: {path} is not an fnn checkpoint ({why})")


def _looks_pickled(head: bytes) -> bool:
    return head[:1] == b"\x80" or head[:2] == b"PK"  # a pickle's PROTO opcode, a zip file


def _load_safetensors(f: BufferedReader, path: str, size: int, head: bytes) -> tuple[PyTree, bool]:
    """The tree, and whether the file described it (else: nested dotted names)."""
    if len(head) < 8:
        raise _foreign(path, head, size)
    (header_len,) = struct.unpack("<Q", head)
    if header_len > _MAX_HEADER or (header_len > size - 8 and _looks_pickled(head)):
        raise _foreign(path, head, size)
    if header_len > size - 8:
        raise _corrupt(path, f"the header says {header_len} bytes but the file has {size} bytes")
    raw = f.read(header_len)
    if raw[:1] != b"{":
        raise _foreign(path, head, size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise _corrupt(path, "the JSON header does not parse") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "the JSON header is not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise _corrupt(path, "__metadata__ is not an object of strings")
    is_fnn = metadata is not None and any(k in _FNN_KEYS for k in metadata)
    if is_fnn:
        assert metadata is not None
        _check_fnn_metadata(path, metadata, head + raw)

    spans = _check_table(path, header)
    data_bytes = spans[-1][2] if spans else 0
    if size - 8 - header_len != data_bytes:
        raise _corrupt(
            path,
            f"expected {data_bytes} bytes of tensor data, found {size - 8 - header_len}",
        )
    expected = None
    if is_fnn:
        assert metadata is not None
        text = metadata[_DATA_CRC_KEY]
        expected = [int(c, 16) for c in text.split(",")] if text else []
        if len(expected) != -(-data_bytes // _BLOCK):
            raise _corrupt(path, "the data checksums do not fit the data's length")
    # Each tensor gets its own storage (freed on its own, 64-byte aligned): the bytes are
    # read straight into it, and the checksum blocks run across tensors.
    raw_tensors = [torch.empty(end - start, dtype=torch.uint8) for _, start, end in spans]
    _read_checked(f, [_raw(t) for t in raw_tensors], expected, path)

    tensors: dict[str, torch.Tensor] = {}
    for (name, _, _), raw_tensor in zip(spans, raw_tensors):
        entry = header[name]
        dtype = _ST_DTYPES[entry["dtype"]]
        if dtype == torch.bool and bool((raw_tensor > 1).any()):
            raise _corrupt(path, f"the bool tensor {name!r} holds bytes other than 0 and 1")
        tensors[name] = raw_tensor.view(dtype).reshape(entry["shape"])

    if not is_fnn:
        try:
            return from_state_dict(tensors), False
        except TreeError as error:
            raise _corrupt(path, f"the tensor names do not nest: {error}") from None
    assert metadata is not None
    try:
        node = json.loads(metadata[_TREE_KEY])
    except (ValueError, RecursionError):
        raise _corrupt(path, "the tree description does not parse") from None
    used: set[str] = set()

    def take(ref: Any, dtype: Any) -> torch.Tensor:
        if not isinstance(ref, str) or ref not in tensors or ref in used:
            raise _Malformed
        used.add(ref)
        t = tensors[ref]
        if dtype is None:
            return t
        if dtype != "complex128" or t.dtype != torch.float64 or t.dim() == 0 or t.shape[-1] != 2:
            raise _Malformed
        if t.storage_offset() % 2:
            t = t.clone()
        return torch.view_as_complex(t)

    return _decode_checked(path, node, take), True


def _check_fnn_metadata(path: str, metadata: dict[str, str], raw: bytes) -> None:
    """The fnn keys of `__metadata__` are all there, the version known, the header's CRC right."""
    if not metadata.keys() >= _FNN_KEYS:
        raise _corrupt(path, "the header misses fnn's metadata")
    if metadata[_VERSION_KEY] != str(FORMAT_VERSION):
        raise CheckpointError(
            f"fnn.io.load: {path} has checkpoint format version {metadata[_VERSION_KEY]!r}; "
            f"this fnn reads versions 1 and {FORMAT_VERSION}"
        )
    crcs = metadata[_HEADER_CRC_KEY], metadata[_DATA_CRC_KEY]
    if not re.fullmatch(r"[0-9a-f]{8}", crcs[0]) or not re.fullmatch(
        r"([0-9a-f]{8}(,[0-9a-f]{8})*)?", crcs[1]
    ):
        raise _corrupt(path, "the header's checksums are malformed")
    field = f'"{_HEADER_CRC_KEY}":"{crcs[0]}"'.encode()
    if raw.count(field) != 1:
        raise _corrupt(path, "the header does not match its checksum")
    unsealed = raw.replace(field, f'"{_HEADER_CRC_KEY}":"{_CRC_PLACEHOLDER}"'.encode())
    if zlib.crc32(unsealed) != int(crcs[0], 16):
        raise _corrupt(path, "the header does not match its checksum")


def _read_checked(
    f: BufferedReader, views: list[memoryview], expected: list[int] | None, path: str
) -> None:
    """Fill `views` in order from `f`; with `expected`, check the CRC-32 of each `_BLOCK`
    bytes of them (in up to `torch.get_num_threads()` threads, each block once it is read)."""
    workers = min(len(expected), torch.get_num_threads()) if expected else 0
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 else None
        got: list[Future[int] | int] = []
        block: list[memoryview] = []  # the pieces of the current block, across tensors
        filled = 0
        for view in views:
            position = 0
            while position < len(view):
                piece = view[position : position + _BLOCK - filled]
                done = 0
                while done < len(piece):
                    n = f.readinto(piece[done:])
                    if not n:
                        raise _corrupt(path, "the file ended inside the tensor data")
                    done += n
                block.append(piece)
                filled += len(piece)
                position += len(piece)
                if filled == _BLOCK and expected is not None:
                    got.append(pool.submit(_crc, block) if pool else _crc(block))
                if filled == _BLOCK:
                    block, filled = [], 0
        if filled and expected is not None:
            got.append(pool.submit(_crc, block) if pool else _crc(block))
        crcs = [c if isinstance(c, int) else c.result() for c in got]
    if expected is not None and crcs != expected:
        first = next(i for i, (a, b) in enumerate(zip(crcs, expected)) if a != b)
        raise _corrupt(
            path, f"the tensor data does not match its checksum (bytes {first * _BLOCK} on)"
        )


def _crc(pieces: list[memoryview]) -> int:
    crc = 0
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    return crc


def _check_table(path: str, header: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(name, start, end) of each tensor, by offset; they must tile the data exactly."""
    spans = []
    for name, e in header.items():
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("dtype"), str)
            and e["dtype"] in _ST_DTYPES
            and _is_shape(e.get("shape"))
            and isinstance(e.get("data_offsets"), list)
            and len(e["data_offsets"]) == 2
            and all(_is_count(o) for o in e["data_offsets"])
        )
        if not ok:
            if (
                isinstance(e, dict)
                and isinstance(e.get("dtype"), str)
                and e["dtype"] not in _ST_DTYPES
            ):
                raise _corrupt(
                    path, f"tensor {name!r} has dtype {e['dtype']!r}, which this torch cannot hold"
                )
            raise _corrupt(path, f"the entry of tensor {name!r} is malformed")
        start, end = e["data_offsets"]
        if end - start != math.prod(e["shape"]) * _itemsize(_ST_DTYPES[e["dtype"]]):
            raise _corrupt(path, f"tensor {name!r}'s byte range does not fit its shape and dtype")
        spans.append((name, start, end))
    spans.sort(key=lambda s: (s[1], s[2]))
    position = 0
    for name, start, end in spans:
        if start != position:
            raise _corrupt(path, f"tensor {name!r} starts at byte {start}, expected {position}")
        position = end
    return spans


def _is_count(x: Any) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_shape(shape: Any) -> bool:
    return (
        isinstance(shape, list)
        and len(shape) <= 64
        and all(_is_count(d) and d <= _MAX_DIM for d in shape)
        and math.prod(d for d in shape if d) <= _MAX_DIM
    )


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class _Malformed(Exception):
    """A tree description that does not decode (turned into a `CheckpointError`)."""


def _decode_checked(path: str, node: Any, take: Callable[[Any, Any], torch.Tensor]) -> PyTree:
    try:
        return _decode(node, take, 0)
    except _Malformed:
        raise _corrupt(path, "the tree description is malformed") from None


def _decode(node: Any, take: Callable[[Any, Any], torch.Tensor], depth: int) -> PyTree:
    """The tree of a JSON node; `_Malformed` if it is not one `_encode` could write."""
    if node is None or isinstance(node, (bool, str)):
        return node
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        raise _Malformed
    keys = set(node)
    if keys in ({"tensor"}, {"tensor", "dtype"}):
        return take(node["tensor"], node.get("dtype"))
    if keys == {"int"} and isinstance(node["int"], str):
        text = node["int"]
        if not re.fullmatch(r"-?(0x[0-9a-f]+|[0-9]+)", text):
            raise _Malformed
        try:
            return int(text, 16 if "x" in text else 10)
        except ValueError:  # more decimal digits than Python converts
            raise _Malformed from None
    if keys == {"float"} and isinstance(node["float"], str):
        try:
            return float.fromhex(node["float"])
        except (ValueError, OverflowError):
            raise _Malformed from None
    if keys == {"dict"} and isinstance(node["dict"], list):
        pairs = node["dict"]
        if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
            raise _Malformed
        if len({k for k, _ in pairs}) != len(pairs):
            raise _Malformed
        return {k: _decode(v, take, depth + 1) for k, v in pairs}
    if keys == {"list"} and isinstance(node["list"], list):
        return [_decode(v, take, depth + 1) for v in node["list"]]
    if keys == {"tuple"} and isinstance(node["tuple"], list):
        return tuple(_decode(v, take, depth + 1) for v in node["tuple"])
    if keys == {"namedtuple", "fields", "items"} and isinstance(node["items"], list):
        return tuple(_decode(v, take, depth + 1) for v in node["items"])  # type from `like=`
    raise _Malformed


# --------------------------------------------------------------------------- format 1


def _load_v1(f: BufferedReader, path: str, size: int, head: bytes) -> tuple[PyTree, bool]:
    """A checkpoint of format 1: `MAGIC | header length (u64) | header CRC-32 (u32) | JSON | data`."""
    rest = f.read(_V1_PREAMBLE.size - 8)
    if len(rest) < _V1_PREAMBLE.size - 8:
        raise CheckpointError(
            f"fnn.io.load: {path} is not an fnn checkpoint "
            f"(the file ends after {size} bytes, inside the preamble)"
        )
    _, header_len, header_crc = _V1_PREAMBLE.unpack(head + rest)
    if header_len > min(size - _V1_PREAMBLE.size, _V1_MAX_HEADER):
        raise _corrupt(path, f"the header says {header_len} bytes but the file has {size} bytes")
    raw_header = f.read(header_len)
    if zlib.crc32(raw_header) != header_crc:
        raise _corrupt(path, "the header does not match its checksum")
    try:
        header = json.loads(raw_header.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise _corrupt(path, "the JSON header does not parse") from None
    entries, data_bytes, crc = _check_v1_header(path, header)
    data_start = _V1_PREAMBLE.size + header_len
    if size - data_start != data_bytes:
        raise _corrupt(
            path, f"expected {data_bytes} bytes of tensor data, found {size - data_start}"
        )
    tensors, crc_got = [], 0
    for e in entries:
        t = torch.empty(e["shape"], dtype=_V1_DTYPES[e["dtype"]])
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

    used: set[int] = set()

    def take(ref: Any, dtype: Any) -> torch.Tensor:
        if not _is_count(ref) or ref >= len(tensors) or ref in used or dtype is not None:
            raise _Malformed
        used.add(ref)
        return tensors[ref]

    return _decode_checked(path, header["tree"], take), True


def _check_v1_header(path: str, header: Any) -> tuple[list[dict[str, Any]], int, int]:
    """The validated tensor entries, data length and CRC; `CheckpointError` otherwise."""
    if not isinstance(header, dict) or header.get("format") != "fnn-checkpoint":
        raise _corrupt(path, "the header is not an fnn checkpoint header")
    if header.get("version") != 1:
        raise CheckpointError(
            f"fnn.io.load: {path} has checkpoint format version {header.get('version')!r}; "
            f"this fnn reads versions 1 and {FORMAT_VERSION}"
        )
    if header.get("byte_order") != "little":
        raise CheckpointError(f"fnn.io.load: {path}: only little-endian checkpoints are supported")
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
            and isinstance(e.get("dtype"), str)
            and e["dtype"] in _V1_DTYPES
            and _is_shape(e.get("shape"))
            and e.get("offset") == end
            and e.get("nbytes") == math.prod(e["shape"]) * _itemsize(_V1_DTYPES[e["dtype"]])
        )
        if not ok:
            raise _corrupt(path, f"tensor entry {i} is malformed")
        end += e["nbytes"]
    if end != data_bytes:
        raise _corrupt(path, f"the tensor table covers {end} bytes, the header says {data_bytes}")
    return entries, data_bytes, crc


# --------------------------------------------------------------------------- like=


def _match(got: PyTree, like: PyTree, where: str, path: str, names_only: bool) -> PyTree:
    """`got` checked against `like` (structure, shapes, dtypes), with `like`'s devices and types.

    With `names_only` (a file without fnn's tree: only dotted names), `like`'s subtrees
    without leaves (the `{}` of a parameter-free layer) need not be in the file."""

    def fail(why: str) -> CheckpointError:
        return CheckpointError(
            f"fnn.io.load: {path} does not match like=: {where or 'the root'} {why}"
        )

    if isinstance(like, Mapping):
        if not isinstance(got, dict):
            raise fail(f"is {_kind(got)}, expected a dict")
        empty = {k for k in like if k not in got and names_only and not tree_leaves(like[k])}
        missing = [k for k in like if k not in got and k not in empty]
        extra = [k for k in got if k not in like]
        if missing or extra:
            parts = ([f"misses keys {missing}"] if missing else []) + (
                [f"has unexpected keys {extra}"] if extra else []
            )
            raise fail(" and ".join(parts))
        return {
            k: tree_map(lambda leaf: leaf, like[k])
            if k in empty
            else _match(got[k], like[k], f"{where}[{k!r}]", path, names_only)
            for k in like
        }
    if isinstance(like, (list, tuple)):
        if (
            not isinstance(got, (list, tuple))
            or len(got) != len(like)
            or isinstance(got, list) != isinstance(like, list)
        ):
            raise fail(f"is {_kind(got)}, expected {_kind(like)}")
        items = [
            _match(g, w, f"{where}[{i}]", path, names_only)
            for i, (g, w) in enumerate(zip(got, like))
        ]
        if isinstance(like, list) or type(like) is tuple:
            return items if isinstance(like, list) else tuple(items)
        try:  # a NamedTuple, or another tuple type such as torch.Size
            return type(like)(*items) if hasattr(like, "_fields") else type(like)(items)
        except (TypeError, ValueError):
            raise fail(f"does not convert to {type(like).__name__}") from None
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
    base = _plain_base(like)
    if base is None or type(got) is not base:
        if type(got) is not type(like):
            raise fail(f"is {_kind(got)}, expected {_kind(like)}")
        return got
    if type(like) is base:
        return got
    try:  # a subclass (IntEnum, numpy.float64, a str subclass) saved as its plain value
        return type(like)(got)
    except (TypeError, ValueError):
        raise fail(f"is {got!r}, which {type(like).__name__} does not accept") from None


def _plain_base(x: object) -> type | None:
    for base in (bool, int, float, str):
        if isinstance(x, base):
            return base
    return None


def _kind(x: object) -> str:
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} items"
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return "None" if x is None else f"a {type(x).__name__}"
