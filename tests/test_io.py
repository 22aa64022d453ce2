"""fnn.io checkpoints: round trips, atomic writes, refusing pickles, corruption, exact resume."""

from __future__ import annotations

import collections
import enum
import json
import math
import os
import pathlib
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import zlib

import numpy
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnn
from fnn import layers as L
from fnn.io import CheckpointError

ROOT = pathlib.Path(__file__).resolve().parent.parent
Pair = collections.namedtuple("Pair", "first second")


def same(a, b) -> bool:
    """Exact equality of two trees: same containers, same leaf types, bit-identical tensors."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.device == b.device
            and torch.equal(_bits(a), _bits(b))
        )
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def everything() -> dict:
    k = fnn.random.key(3)
    return {
        "params": {
            "0": {"weight": fnn.random.normal(k, (3, 2)), "bias": torch.zeros(3)},
            "2": {"weight": torch.randn(4, 3, dtype=torch.float64)},
        },
        "opt_state": {"step": 20, "momentum_buffer": None},
        "key": fnn.random.key(7),
        "keys": fnn.random.split(k, 3),
        "dtypes": [
            torch.ones(2, dtype=d)
            for d in (torch.float16, torch.bfloat16, torch.int32, torch.uint8, torch.bool)
        ]
        + [torch.tensor([1 + 2j]), torch.tensor([[1 - 2j]], dtype=torch.complex128)],
        "odd": (
            torch.tensor(3.5),
            torch.zeros(0, 4),
            torch.arange(12.0).reshape(3, 4).t(),
            torch.arange(10)[2:7:2],
        ),
        "plain": [
            1,
            -(2**70),
            0.1,
            float("inf"),
            float("-inf"),
            float("nan"),
            -0.0,
            True,
            False,
            "sgd",
            None,
        ],
        "nested": {"a": [({"b": (1,)},)], "empty": {}, "empty_list": [], "empty_tuple": ()},
    }


# --------------------------------------------------------------------------- round trips


def test_round_trip_is_exact(tmp_path):
    tree = everything()
    fnn.io.save(tmp_path / "c.fnn", tree)
    back = fnn.io.load(tmp_path / "c.fnn")
    assert same(back, tree)
    assert same(fnn.io.load(str(tmp_path / "c.fnn"), like=tree), tree)


def test_loaded_tensors_are_independent_and_writable(tmp_path):
    fnn.io.save(tmp_path / "c.fnn", {"a": torch.ones(3), "b": torch.ones(3)})
    back = fnn.io.load(tmp_path / "c.fnn")
    back["a"].add_(1)
    assert back["b"].tolist() == [1.0, 1.0, 1.0]
    assert back["a"].is_contiguous() and back["a"].device.type == "cpu"


def test_namedtuples_come_back_from_like(tmp_path):
    tree = {"s": Pair(torch.ones(2), 3), "size": torch.Size([2, 3])}
    fnn.io.save(tmp_path / "c.fnn", tree)
    assert type(fnn.io.load(tmp_path / "c.fnn")["s"]) is tuple
    back = fnn.io.load(tmp_path / "c.fnn", like=tree)
    assert type(back["s"]) is Pair and type(back["size"]) is torch.Size and same(back, tree)


def test_floats_and_ints_keep_every_bit(tmp_path):
    values = [0.1 + 0.2, 1e-310, 2.0**-1074, 1.7976931348623157e308, 2**63, -(2**64) - 1]
    fnn.io.save(tmp_path / "c.fnn", values)
    back = fnn.io.load(tmp_path / "c.fnn")
    assert [type(v) for v in back] == [type(v) for v in values]
    assert all(a == b for a, b in zip(back, values))


def test_saved_key_gives_the_same_numbers(tmp_path):
    k = fnn.random.split(fnn.random.key(11))[1]
    fnn.io.save(tmp_path / "k.fnn", {"key": k})
    k2 = fnn.io.load(tmp_path / "k.fnn")["key"]
    assert torch.equal(fnn.random.uniform(k, (5,)), fnn.random.uniform(k2, (5,)))


def test_requires_grad_tensors_are_saved_detached(tmp_path):
    fnn.io.save(tmp_path / "c.fnn", [torch.ones(2, requires_grad=True)])
    assert not fnn.io.load(tmp_path / "c.fnn")[0].requires_grad


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.text(max_size=5),
            st.builds(
                lambda shape, dtype: (
                    torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape).to(dtype)
                ),
                st.lists(st.integers(0, 3), max_size=3),
                st.sampled_from(
                    [torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.int8]
                ),
            ),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=4), children, max_size=3),
        ),
        max_leaves=10,
    )
)
def test_any_tree_round_trips(tmp_path, tree):
    fnn.io.save(tmp_path / "c.fnn", tree)
    assert same(fnn.io.load(tmp_path / "c.fnn"), tree)


def test_conjugate_and_negative_views_are_saved_as_their_values(tmp_path):
    z = torch.tensor([1 + 2j, -3 - 4j])
    tree = {
        "conj": z.conj(),
        "neg": torch.tensor([1.0, -2.0])._neg_view(),
        "conj_neg": z.conj()._neg_view(),
        "conj128": torch.tensor([[1 + 2j]], dtype=torch.complex128).conj(),
        "conj_t": torch.arange(6.0).reshape(2, 3).mul(1j).conj().t(),
    }
    assert all(t.is_conj() or t.is_neg() for t in tree.values())
    fnn.io.save(tmp_path / "c.fnn", tree)
    back = fnn.io.load(tmp_path / "c.fnn")
    assert back["conj"].tolist() == [1 - 2j, -3 + 4j]
    assert back["neg"].tolist() == [-1.0, 2.0]
    assert back["conj_neg"].tolist() == [-1 + 2j, 3 - 4j]
    for name, t in tree.items():
        assert not back[name].is_conj() and not back[name].is_neg()
        assert back[name].dtype == t.dtype and torch.equal(
            back[name], t.resolve_conj().resolve_neg()
        )


@pytest.mark.parametrize(
    "name", ["float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64", "complex64"]
)
def test_every_safetensors_dtype_round_trips(tmp_path, name):
    dtype = getattr(torch, name, None)
    if dtype is None:
        pytest.skip(f"this torch has no torch.{name}")
    try:  # built here, never at import: some CPU builds cannot make these
        t = (
            torch.arange(6).reshape(2, 3).to(dtype)
            if name.startswith("uint")
            else torch.tensor([[0.0, 1.5, -2.0], [0.25, 448.0, -0.5]]).to(dtype)
        )
    except (RuntimeError, TypeError) as error:
        pytest.skip(f"this torch build cannot make {name} tensors on the CPU: {error}")
    fnn.io.save(tmp_path / "c.fnn", {"t": t, "tail": torch.ones(1, dtype=torch.int8)})
    back = fnn.io.load(tmp_path / "c.fnn", like={"t": t, "tail": torch.ones(1, dtype=torch.int8)})
    assert back["t"].dtype == dtype and same(back["t"], t)


def test_ints_beyond_the_decimal_conversion_limit_round_trip(tmp_path):
    values = [10**5000 + 1, -(2**20_000) + 3, 2**33_216, 2**2000, 7]  # over the 4300-digit limit
    fnn.io.save(tmp_path / "c.fnn", {"big": values})
    assert fnn.io.load(tmp_path / "c.fnn") == {"big": values}
    if not hasattr(sys, "set_int_max_str_digits"):
        return  # Pythons before 3.10.7 have no limit
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # the lowest limit Python allows
    try:
        fnn.io.save(tmp_path / "c.fnn", {"big": values})
        assert fnn.io.load(tmp_path / "c.fnn") == {"big": values}
    finally:
        sys.set_int_max_str_digits(limit)


class Color(enum.IntEnum):
    RED = 1
    GREEN = 2


class Name(str):
    pass


def test_int_float_and_str_subclasses_save_as_plain_values_and_come_back_from_like(tmp_path):
    tree = {"color": Color.GREEN, "x": numpy.float64(0.25), "name": Name("sgd"), "flag": True}
    path = tmp_path / "c.fnn"
    fnn.io.save(path, tree)
    plain = fnn.io.load(path)
    assert plain == {"color": 2, "x": 0.25, "name": "sgd", "flag": True}
    assert [type(v) for v in plain.values()] == [int, float, str, bool]
    back = fnn.io.load(path, like=tree)
    assert back == tree and [type(v) for v in back.values()] == [Color, numpy.float64, Name, bool]
    fnn.io.save(path, {"color": 5, "x": 0.25, "name": "sgd", "flag": True})
    with pytest.raises(CheckpointError, match=r"\['color'\] is 5, which Color does not accept"):
        fnn.io.load(path, like=tree)
    fnn.io.save(path, {"flag": 1})
    with pytest.raises(CheckpointError, match=r"\['flag'\] is a int, expected a bool"):
        fnn.io.load(path, like={"flag": True})


def test_cyclic_and_too_deep_trees_are_clear_errors_and_write_nothing(tmp_path):
    path = tmp_path / "c.fnn"
    cyclic: dict = {"a": [1]}
    cyclic["a"].append(cyclic)
    with pytest.raises(
        fnn.errors.FnnTypeError, match=r"contains itself \(a cycle\) at \['a'\]\[1\]"
    ):
        fnn.io.save(path, cyclic)
    deep: object = 0
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(fnn.errors.FnnTypeError, match="more than 100 containers deep at"):
        fnn.io.save(path, {"d": deep})
    assert os.listdir(tmp_path) == []
    shared = [torch.ones(1)]  # the same list twice is not a cycle
    ok: object = torch.ones(1)
    for _ in range(100):
        ok = {"k": ok} if isinstance(ok, list) else [ok]
    fnn.io.save(path, ok)
    assert same(fnn.io.load(path), ok)
    fnn.io.save(path, {"a": shared, "b": shared})
    assert same(fnn.io.load(path), {"a": shared, "b": shared})


def test_a_tensor_changed_by_another_thread_during_save_always_gives_loadable_files(tmp_path):
    w = torch.zeros(1 << 21)  # 8 MiB
    stop = threading.Event()

    def keep_changing():
        while not stop.is_set():
            w.add_(1)

    changer = threading.Thread(target=keep_changing)
    changer.start()
    path = tmp_path / "c.fnn"
    try:
        for _ in range(6):
            fnn.io.save(path, {"w": w, "step": 1})
            back = fnn.io.load(path)  # the checksum matches what was written
            assert back["w"].shape == w.shape and bool((back["w"] >= 0).all())
    finally:
        stop.set()
        changer.join()
    assert float(w[0]) > 0  # the tensor really changed during the saves


# --------------------------------------------------------------------------- like=


def template():
    init, _ = fnn.serial(L.Dense(3), L.Relu(), L.Dense(2))
    _, params = init(fnn.random.key(0), (-1, 2))
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    return {"params": params, "opt_state": opt.init(params), "step": 0, "key": fnn.random.key(0)}


def _drop(tree, *path):
    *parents, last = path
    for p in parents:
        tree = tree[p]
    del tree[last]


def _set(tree, value, *path):
    *parents, last = path
    for p in parents:
        tree = tree[p]
    tree[last] = value


LIKE_CASES = {
    "missing key": (
        lambda t: _drop(t, "params", "2", "bias"),
        ["['params']['2']", "misses keys ['bias']"],
    ),
    "extra key": (
        lambda t: _set(t, torch.ones(1), "params", "2", "scale"),
        ["['params']['2']", "unexpected keys ['scale']"],
    ),
    "wrong shape": (
        lambda t: _set(t, torch.ones(3, 3), "params", "0", "weight"),
        ["['params']['0']['weight']", "shape (3, 3), expected (3, 2)"],
    ),
    "wrong dtype": (
        lambda t: _set(t, torch.ones(2, dtype=torch.float64), "params", "2", "bias"),
        ["['params']['2']['bias']", "dtype torch.float64, expected torch.float32"],
    ),
    "int for tensor": (lambda t: _set(t, 3, "key"), ["['key']", "is a int, expected a tensor"]),
    "tensor for int": (lambda t: _set(t, torch.tensor(0), "step"), ["['step']", "expected a int"]),
    "None for tree": (
        lambda t: _set(t, None, "opt_state", "momentum_buffer"),
        ["['opt_state']['momentum_buffer']", "is None, expected a dict"],
    ),
    "list length": (lambda t: _set(t, [1, 2], "step"), ["['step']", "a list of 2 items"]),
}


@pytest.mark.parametrize("case", list(LIKE_CASES))
def test_like_names_the_first_mismatching_leaf(tmp_path, case):
    spoil, fragments = LIKE_CASES[case]
    saved = template()
    spoil(saved)
    path = tmp_path / "c.fnn"
    fnn.io.save(path, saved)
    with pytest.raises(CheckpointError) as info:
        fnn.io.load(path, like=template())
    message = str(info.value)
    assert message.startswith(f"fnn.io.load: {path} does not match like=")
    for fragment in fragments:
        assert fragment in message


def test_like_accepts_a_matching_tree_and_keeps_its_types(tmp_path):
    saved = template()
    fnn.io.save(tmp_path / "c.fnn", saved)
    assert same(fnn.io.load(tmp_path / "c.fnn", like=template()), saved)


def test_like_on_meta_device_validates_without_data(tmp_path):
    saved = template()
    fnn.io.save(tmp_path / "c.fnn", saved)
    like = fnn.tree.map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, template())
    back = fnn.io.load(tmp_path / "c.fnn", like=like)
    assert back["params"]["0"]["weight"].device.type == "cpu"


# --------------------------------------------------------------------------- what save refuses


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda: {"lr": lambda step: 0.1}, ["['lr']", "function"]),
        (lambda: {"a": [1, object()]}, ["['a'][1]", "object"]),
        (lambda: {1: torch.ones(1)}, ["dict keys must be str", "1"]),
        (lambda: {"s": torch.ones(2).to_sparse()}, ["['s']", "cannot be saved"]),
        (lambda: {"m": torch.ones(2, device="meta")}, ["['m']", "meta"]),
        (lambda: {"c": torch.zeros(2, dtype=torch.complex32)}, ["['c']", "complex32"]),
        (lambda: {"n": [numpy.float32(1.0)]}, ["['n'][0]", "numpy.float32"]),
        (lambda: {"b": numpy.bool_(True)}, ["['b']", "the numpy.bool"]),
        (
            lambda: {"nt": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])},
            ["['nt']", "nested tensor"],
        ),
        (
            lambda: {"q": torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)},
            ["['q']", "cannot be saved"],
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_save_refuses_what_it_cannot_store_and_keeps_the_old_file(tmp_path, make, fragments):
    path = tmp_path / "c.fnn"
    fnn.io.save(path, {"old": 1})
    try:  # built here, not at import: some torch builds lack some dtypes and kinds
        tree = make()
    except (AttributeError, RuntimeError, TypeError) as error:
        pytest.skip(f"this torch cannot build the case: {error}")
    with pytest.raises(fnn.errors.FnnTypeError) as info:
        fnn.io.save(path, tree)
    assert all(f in str(info.value) for f in fragments), str(info.value)
    assert str(info.value).startswith("fnn.io.save:")
    assert fnn.io.load(path) == {"old": 1}
    assert os.listdir(tmp_path) == ["c.fnn"]


# --------------------------------------------------------------------------- atomicity


def test_save_writes_a_temp_file_in_the_same_folder_then_renames(tmp_path, monkeypatch):
    calls = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(fnn.io.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        fnn.io.os,
        "replace",
        lambda src, dst: (calls.append(("replace", src, dst)), real_replace(src, dst))[1],
    )
    fnn.io.save(tmp_path / "c.fnn", {"w": torch.ones(2)})
    replace = next(c for c in calls if c[0] == "replace")
    assert pathlib.Path(replace[1]).parent == tmp_path and replace[2] == str(tmp_path / "c.fnn")
    assert calls.index("fsync") < calls.index(replace)  # the data is on disk before the rename
    assert os.listdir(tmp_path) == ["c.fnn"]


@pytest.mark.parametrize("where", ["during the write", "between write and rename"])
def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, where):
    path = tmp_path / "c.fnn"
    old = template()
    fnn.io.save(path, old)
    before = path.read_bytes()

    def half_then_fail(f, tensors):
        f.write(b"\x00" * 100)
        raise OSError("disk full (injected)")

    def fail_rename(src, dst):
        raise OSError("crash before rename (injected)")

    if where == "during the write":
        monkeypatch.setattr(fnn.io, "_write_tensors", half_then_fail)
    else:
        monkeypatch.setattr(fnn.io.os, "replace", fail_rename)
    with pytest.raises(OSError, match="injected"):
        fnn.io.save(path, {"new": torch.zeros(1000)})
    assert path.read_bytes() == before
    assert same(fnn.io.load(path, like=old), old)
    assert os.listdir(tmp_path) == ["c.fnn"]  # the temp file was removed


CHILD_KILLED_MID_WRITE = """
import sys, time, torch, fnn
real = fnn.io._write_tensors
def slow(f, tensors):
    f.write(b"\\x00" * 4096)
    f.flush()
    print("mid-write", flush=True)
    time.sleep(60)
fnn.io._write_tensors = slow
fnn.io.save(sys.argv[1], {"new": torch.zeros(100_000)})
"""


def test_killing_the_process_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "c.fnn"
    old = template()
    fnn.io.save(path, old)
    before = path.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_KILLED_MID_WRITE, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "mid-write"
        leftovers = [p for p in os.listdir(tmp_path) if p != "c.fnn"]
        assert len(leftovers) == 1 and leftovers[0].startswith(
            ".c.fnn."
        )  # the half-written temp file
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert same(fnn.io.load(path, like=old), old)
    # The next save to the same file removes the dead process's temporary file.
    fnn.io.save(path, old)
    assert os.listdir(tmp_path) == ["c.fnn"]


def test_only_temp_files_of_dead_processes_on_this_host_are_removed(tmp_path):
    path = tmp_path / "c.fnn"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = fnn.io._host()
    names = {
        "dead": f".c.fnn.{host}.{dead.pid}.0123abcd.tmp",
        "alive": f".c.fnn.{host}.{os.getppid()}.0123abcd.tmp",  # the parent process lives
        "mine": f".c.fnn.{host}.{os.getpid()}.0123abcd.tmp",  # another thread's save
        "other host": f".c.fnn.elsewhere-{host}.{dead.pid}.0123abcd.tmp",
        "other file": f".d.fnn.{host}.{dead.pid}.0123abcd.tmp",
        "not ours": f".c.fnn.{host}.{dead.pid}.notours.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"half")
    fnn.io.save(path, {"w": torch.ones(2)})
    left = set(os.listdir(tmp_path))
    assert names["dead"] not in left
    assert left == {"c.fnn"} | {n for k, n in names.items() if k != "dead"}


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_files_respect_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    def mode(p):
        return stat.S_IMODE(os.stat(p).st_mode)

    previous = os.umask(0o022)
    try:
        fnn.io.save(tmp_path / "a.fnn", {"w": torch.ones(2)})
        with open(tmp_path / "by_open", "wb"):
            pass
        assert mode(tmp_path / "a.fnn") == mode(tmp_path / "by_open") == 0o644
        os.umask(0o077)
        fnn.io.save(tmp_path / "b.fnn", {"w": torch.ones(2)})
        assert mode(tmp_path / "b.fnn") == 0o600
        fnn.io.save(tmp_path / "a.fnn", {"w": torch.zeros(2)})  # replacing keeps 0o644
        assert mode(tmp_path / "a.fnn") == 0o644
        os.chmod(tmp_path / "a.fnn", 0o640)
        fnn.io.save(tmp_path / "a.fnn", {"w": torch.ones(2)})
        assert mode(tmp_path / "a.fnn") == 0o640
        assert fnn.io.load(tmp_path / "a.fnn")["w"].tolist() == [1.0, 1.0]
    finally:
        os.umask(previous)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks here")
def test_saving_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    fnn.io.save(store / "step1.fnn", {"step": 1})
    link = tmp_path / "latest.fnn"
    link.symlink_to(store / "step1.fnn")
    fnn.io.save(link, {"step": 2})
    assert link.is_symlink() and os.readlink(link) == str(store / "step1.fnn")
    assert fnn.io.load(store / "step1.fnn") == fnn.io.load(link) == {"step": 2}
    assert os.listdir(store) == ["step1.fnn"]
    dangling = tmp_path / "next.fnn"
    dangling.symlink_to(store / "step2.fnn")  # its target does not exist yet
    fnn.io.save(dangling, {"step": 3})
    assert dangling.is_symlink() and fnn.io.load(store / "step2.fnn") == {"step": 3}
    assert sorted(os.listdir(tmp_path)) == ["latest.fnn", "next.fnn", "store"]


# --------------------------------------------------------------------------- never unpickle


class Payload:
    """Unpickling this runs `exec`, which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_a_malicious_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.fnn"
    evil.write_bytes(pickle.dumps({"params": Payload(marker)}))
    with open(evil, "rb") as f:  # the payload is real: plain pickle runs it
        pickle.load(f)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError) as info:
        fnn.io.load(evil)
    assert str(evil) in str(info.value) and "pickle" in str(info.value)
    assert not marker.exists()


def test_a_malicious_torch_save_file_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(1), "x": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="not an fnn checkpoint"):
        fnn.io.load(evil)
    assert not marker.exists()


def test_io_has_no_unpickling_code_path():
    source = (ROOT / "fnn" / "io.py").read_text()
    for forbidden in ("import pickle", "torch.load", "pickle.load", "eval(", "exec(", "importlib"):
        assert forbidden not in source, forbidden


# --------------------------------------------------------------------------- truncated or corrupt files


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "c.fnn"
    fnn.io.save(path, template())
    return path


def test_every_truncation_is_a_clear_error_naming_the_file(good_file):
    data = good_file.read_bytes()
    cuts = sorted(
        set(range(40)) | set(range(40, len(data), max(1, len(data) // 60))) | {len(data) - 1}
    )
    for cut in cuts:
        good_file.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            fnn.io.load(good_file)
        assert str(good_file) in str(info.value), (cut, str(info.value))


def test_trailing_garbage_is_corruption(good_file):
    good_file.write_bytes(good_file.read_bytes() + b"\x00")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        fnn.io.load(good_file)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_flipped_byte_is_detected(good_file, data):
    raw = bytearray(good_file.read_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    spoiled = good_file.with_name("spoiled.fnn")
    spoiled.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        fnn.io.load(spoiled)
    assert str(spoiled) in str(info.value)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty"),
        (b"hello world, this is not a checkpoint", "wrong magic"),
        (b"PK\x03\x04" + b"\x00" * 40, "pickle or torch.save"),
        (fnn.io.MAGIC + (10**12).to_bytes(8, "little") + b"\x00" * 10, "header says"),
    ],
)
def test_foreign_files_are_refused(tmp_path, content, fragment):
    path = tmp_path / "c.fnn"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        fnn.io.load(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


V1_HEADER = (
    b'{"format": "fnn-checkpoint", "version": 1, "byte_order": "little", "tree": %s,'
    b' "tensors": %s, "data_bytes": 0, "data_crc32": 0}'
)


def _write_with_header(path, header: bytes, data: bytes = b""):
    import struct
    import zlib

    path.write_bytes(
        struct.pack("<8sQI", fnn.io.MAGIC, len(header), zlib.crc32(header)) + header + data
    )


@pytest.mark.parametrize(
    "header, fragment",
    [
        (b"{not json", "does not parse"),
        (b"[1, 2]", "not an fnn checkpoint header"),
        (b'{"format": "fnn-checkpoint", "version": 99}', "version 99"),
        (b'{"format": "fnn-checkpoint", "version": 1, "byte_order": "little"}', "tensor table"),
        (
            b'{"format": "fnn-checkpoint", "version": 1, "byte_order": "little", "tree": {"tensor": 0},'
            b' "tensors": [{"dtype": "object", "shape": [1], "offset": 0, "nbytes": 8}], "data_bytes": 8, "data_crc32": 0}',
            "tensor entry 0 is malformed",
        ),
        (
            b'{"format": "fnn-checkpoint", "version": 1, "byte_order": "little", "tree": {"tensor": 5},'
            b' "tensors": [], "data_bytes": 0, "data_crc32": 0}',
            "tree description is malformed",
        ),
        (
            b'{"format": "fnn-checkpoint", "version": 1, "byte_order": "little", "tree": {"call": "os.system"},'
            b' "tensors": [], "data_bytes": 0, "data_crc32": 0}',
            "tree description is malformed",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "header"),
        # four that gave raw OverflowError, TypeError, ValueError, TypeError before
        (V1_HEADER % (b'{"float": "0x1p99999"}', b"[]"), "tree description is malformed"),
        (
            V1_HEADER
            % (b"null", b'[{"dtype": ["float32"], "shape": [0], "offset": 0, "nbytes": 0}]'),
            "tensor entry 0 is malformed",
        ),
        (V1_HEADER % (b"1" + b"0" * 5000, b"[]"), "does not parse"),
        (
            V1_HEADER
            % (
                b'{"tensor": 0}',
                b'[{"dtype": "float32", "shape": [0, %d], "offset": 0, "nbytes": 0}]' % 2**70,
            ),
            "tensor entry 0 is malformed",
        ),
    ],
)
def test_malformed_headers_are_clear_errors(tmp_path, header, fragment):
    path = tmp_path / "c.fnn"
    _write_with_header(path, header)
    with pytest.raises(CheckpointError) as info:
        fnn.io.load(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fnn.io.load(tmp_path / "nope.fnn")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, fnn.FnnError)


# --------------------------------------------------------------------------- safetensors


def test_safetensors_reads_fnn_checkpoints(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    import safetensors

    seq = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    params = fnn.tree.from_state_dict({k: v.detach() for k, v in seq.state_dict().items()})
    fnn.io.save(tmp_path / "params.fnn", params)
    twin = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    twin.load_state_dict(st.load_file(tmp_path / "params.fnn"))  # strict: same names
    assert all(torch.equal(a, b) for a, b in zip(twin.state_dict().values(), params_list(params)))

    tree = everything()  # every dtype fnn saves, complex128 included, and plain values
    fnn.io.save(tmp_path / "all.fnn", tree)
    flat = st.load_file(tmp_path / "all.fnn")
    assert torch.equal(flat["params.0.weight"], tree["params"]["0"]["weight"])
    assert torch.equal(flat["odd.2"], tree["odd"][2])  # a transposed view, saved contiguous
    assert torch.equal(torch.view_as_complex(flat["dtypes.6"]), tree["dtypes"][6])  # complex128
    tensors = [t for t in fnn.tree.leaves(tree) if isinstance(t, torch.Tensor)]
    assert len(flat) == len(tensors)
    with safetensors.safe_open(tmp_path / "all.fnn", "pt") as f:  # the Rust header parser
        assert f.metadata()["format"] == "pt" and f.metadata()["fnn.version"] == "2"
        assert sorted(f.keys()) == sorted(flat)


def params_list(params):
    return list(fnn.tree.to_state_dict(params).values())


def test_a_torch_models_safetensors_file_loads_into_fnn_with_like(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    seq = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    path = tmp_path / "model.safetensors"
    st.save_file(seq.state_dict(), path, metadata={"format": "pt"})
    _, params = fnn.serial(L.Dense(3), L.Relu(), L.Dense(2)).init(fnn.random.key(0), (-1, 2))
    loaded = fnn.io.load(path, like=params)
    assert loaded["1"] == {}  # Relu's empty params, which torch's file has no entry for
    assert len(params_list(loaded)) == 4
    assert all(torch.equal(a, b) for a, b in zip(params_list(loaded), seq.state_dict().values()))
    assert list(fnn.tree.to_state_dict(loaded)) == list(seq.state_dict())
    _, wrong = fnn.serial(L.Dense(4), L.Relu(), L.Dense(2)).init(fnn.random.key(0), (-1, 2))
    with pytest.raises(
        CheckpointError, match=r"\['0'\]\['weight'\] has shape \(3, 2\), expected \(4, 2\)"
    ):
        fnn.io.load(path, like=wrong)
    data = path.read_bytes()
    for cut in (3, 8, 20, len(data) - 1):  # no checksum, but every length is checked
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="model.safetensors"):
            fnn.io.load(path)


def test_tensor_names_stay_unique_when_keys_hold_dots(tmp_path):
    tree = {"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}, "__metadata__": torch.ones(2)}
    fnn.io.save(tmp_path / "c.fnn", tree)
    assert same(fnn.io.load(tmp_path / "c.fnn"), tree)


# --------------------------------------------------------------------------- format 1


def _save_v1(path, tree):
    """The writer of format 1 (fnn before safetensors), to prove its files still load."""
    tensors = []

    def enc(x):
        if isinstance(x, torch.Tensor):
            tensors.append(x.detach().contiguous())
            return {"tensor": len(tensors) - 1}
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, int):
            return {"int": str(x)}
        if isinstance(x, float):
            return {"float": x.hex()}
        if isinstance(x, dict):
            return {"dict": [[k, enc(v)] for k, v in x.items()]}
        if isinstance(x, list):
            return {"list": [enc(v) for v in x]}
        if hasattr(x, "_fields"):
            return {
                "namedtuple": type(x).__name__,
                "fields": list(x._fields),
                "items": [enc(v) for v in x],
            }
        return {"tuple": [enc(v) for v in x]}

    node = enc(tree)
    blobs = [_bits(t).numpy().tobytes() for t in tensors]
    entries, offset = [], 0
    for t, blob in zip(tensors, blobs):
        name = str(t.dtype).removeprefix("torch.")
        entries.append(
            {"dtype": name, "shape": list(t.shape), "offset": offset, "nbytes": len(blob)}
        )
        offset += len(blob)
    data = b"".join(blobs)
    header = {
        "format": "fnn-checkpoint",
        "version": 1,
        "byte_order": "little",
        "tree": node,
        "tensors": entries,
        "data_bytes": offset,
        "data_crc32": zlib.crc32(data),
    }
    _write_with_header(path, json.dumps(header, separators=(",", ":")).encode(), data)


def test_files_of_format_1_still_load(tmp_path):
    tree = everything()
    _save_v1(tmp_path / "v1.fnn", tree)
    assert same(fnn.io.load(tmp_path / "v1.fnn"), tree)
    saved = template()
    _save_v1(tmp_path / "v1.fnn", saved)
    assert same(fnn.io.load(tmp_path / "v1.fnn", like=template()), saved)
    raw = bytearray((tmp_path / "v1.fnn").read_bytes())
    raw[-3] ^= 1
    (tmp_path / "v1.fnn").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="tensor data does not match its checksum"):
        fnn.io.load(tmp_path / "v1.fnn")


# --------------------------------------------------------------------------- hand-made headers


def _write_v2(path, tree_node, entries=None, data=b"", **metadata):
    """A format-2 file with valid checksums around whatever header parts are given."""
    meta = {"format": "pt", "fnn.version": "2", "fnn.tree": json.dumps(tree_node), **metadata}
    entries = {} if entries is None else entries
    path.write_bytes(fnn.io._header(meta, entries, _block_crcs(data)) + data)


def _block_crcs(data):
    return [zlib.crc32(data[i : i + fnn.io._BLOCK]) for i in range(0, len(data), fnn.io._BLOCK)]


W = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
W_DATA = bytes(8)


@pytest.mark.parametrize(
    "tree, entries, metadata, fragment",
    [
        ({"float": "0x1p99999"}, None, {}, "tree description is malformed"),
        ({"float": 5}, None, {}, "tree description is malformed"),
        ({"int": "9" * 5000}, None, {}, "tree description is malformed"),
        ({"int": "1_000"}, None, {}, "tree description is malformed"),
        ({"dict": [[1, None]]}, None, {}, "tree description is malformed"),
        ({"dict": [["a", None], ["a", None]]}, None, {}, "tree description is malformed"),
        ({"dict": "ab"}, None, {}, "tree description is malformed"),
        ({"tensor": "nope"}, W, {}, "tree description is malformed"),
        ({"list": [{"tensor": "w"}, {"tensor": "w"}]}, W, {}, "tree description is malformed"),
        ({"tensor": "w", "dtype": "complex128"}, W, {}, "tree description is malformed"),
        ({"call": "os.system"}, None, {}, "tree description is malformed"),
        ([[[]]], None, {}, "tree description is malformed"),
        (
            None,
            {"w": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}},
            {},
            "'w' is malformed",
        ),
        (
            None,
            {"w": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}},
            {},
            "'w' is malformed",
        ),
        (None, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, {}, "does not fit"),
        (
            None,
            {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
            {},
            "starts at byte 4",
        ),
        (None, {"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, {}, "'X9'"),
        (None, {"w": "F32"}, {}, "'w' is malformed"),
        (None, None, {"fnn.version": "3"}, "version '3'"),
        (None, None, {"fnn.tree": "{not json"}, "does not parse"),
        (None, None, {"fnn.tree": "[" * 100_000 + "]" * 100_000}, "does not parse"),
    ],
)
def test_hand_made_headers_with_valid_checksums_are_clear_errors(
    tmp_path, tree, entries, metadata, fragment
):
    path = tmp_path / "c.fnn"
    ends = [e["data_offsets"][1] for e in (entries or {}).values() if isinstance(e, dict)]
    data = bytes(max(ends, default=0))  # as many bytes as the table claims
    _write_v2(path, tree, entries, data, **metadata)
    with pytest.raises(CheckpointError) as info:
        fnn.io.load(path)
    assert fragment in str(info.value) and str(path) in str(info.value), str(info.value)


@pytest.mark.parametrize("threads", [1, 3])
def test_each_block_of_tensor_data_is_checked_in_parallel_threads(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(fnn.io, "_BLOCK", 1 << 12)  # 4 KiB blocks: 11 of them here
    torch.set_num_threads(threads)
    tree = {"a": torch.arange(10_000.0), "b": torch.arange(1000, dtype=torch.int16)}
    path = tmp_path / "c.fnn"
    fnn.io.save(path, tree)
    assert same(fnn.io.load(path), tree)
    raw = path.read_bytes()
    data_start = 8 + int.from_bytes(raw[:8], "little")
    assert len(raw) - data_start == 42_000
    for where in (0, 4096, 20_000, 41_999):  # first, second, a middle and the last block
        spoiled = bytearray(raw)
        spoiled[data_start + where] ^= 0x10
        path.write_bytes(bytes(spoiled))
        with pytest.raises(
            CheckpointError,
            match=rf"does not match its checksum \(bytes {where // 4096 * 4096} on\)",
        ):
            fnn.io.load(path)


def test_a_checksum_mismatch_in_the_header_is_detected(tmp_path):
    path = tmp_path / "c.fnn"
    fnn.io.save(path, {"w": torch.ones(2)})
    raw = path.read_bytes().replace(b'"format":"pt"', b'"format":"PT"')
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="header does not match its checksum"):
        fnn.io.load(path)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "tensor",
                    "dtype",
                    "int",
                    "float",
                    "dict",
                    "list",
                    "tuple",
                    "namedtuple",
                    "fields",
                    "items",
                    "w",
                    "x",
                ]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=JSON,
    entry=st.dictionaries(
        st.sampled_from(["dtype", "shape", "data_offsets", "x"]), JSON, max_size=4
    ),
    v1=st.booleans(),
)
def test_fuzzed_headers_give_a_tree_or_a_checkpoint_error(tmp_path, tree, entry, v1):
    path = tmp_path / "fuzz.fnn"
    if v1:
        header = {
            "format": "fnn-checkpoint",
            "version": 1,
            "byte_order": "little",
            "tree": tree,
            "tensors": [entry] if entry else [],
            "data_bytes": 0,
            "data_crc32": 0,
        }
        _write_with_header(path, json.dumps(header).encode())
    else:
        _write_v2(path, tree, {"w": entry} if entry else W, W_DATA if not entry else b"")
    try:
        fnn.io.load(path)
    except CheckpointError as error:
        assert str(path) in str(error)


# --------------------------------------------------------------------------- exact resume


def _model():
    return fnn.serial(L.Dense(25), L.Relu(), L.Dropout(0.1), L.Dense(25), L.Relu(), L.Dense(2))


def _fresh():
    """The template of a checkpoint: initial params, optimizer state, step, key."""
    _, params = _model().init(fnn.random.key(0), (-1, 2))
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    return {"params": params, "opt_state": opt.init(params), "step": 0, "key": fnn.random.key(42)}


def _train(ckpt, steps):
    """`steps` more steps of SGD with momentum; data and dropout keys come from the saved key."""
    opt = fnn.optim.sgd(lr=0.1, momentum=0.9)
    loss_and_grads = fnn.value_and_grad(_model().apply, fnn.losses.cross_entropy)
    params, state, step, key = ckpt["params"], ckpt["opt_state"], ckpt["step"], ckpt["key"]
    for _ in range(steps):
        key, data_key, dropout_key = fnn.random.split(key, 3)
        x, labels = fnn.data.disk(data_key, 100)
        _, grads = loss_and_grads(params, x, labels, key=dropout_key)
        params, state = opt.update(params, grads, state)
        step += 1
    return {"params": params, "opt_state": state, "step": step, "key": key}


def resume_in_child(src: str, dst: str) -> None:
    """Run in a fresh process: load `src` (validated against a template), train 20, save `dst`."""
    torch.set_num_threads(1)
    fnn.io.save(dst, _train(fnn.io.load(src, like=_fresh()), 20))


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    straight = _train(_fresh(), 40)

    first = _train(_fresh(), 20)
    fnn.io.save(tmp_path / "step20.fnn", first)
    code = textwrap.dedent(
        f"""
        from tests.test_io import resume_in_child
        resume_in_child({str(tmp_path / "step20.fnn")!r}, {str(tmp_path / "step40.fnn")!r})
        """
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
    resumed = fnn.io.load(tmp_path / "step40.fnn", like=_fresh())

    assert resumed["step"] == straight["step"] == 40
    assert same(resumed, straight)
    # and the run really moved: the momentum buffers and params differ from step 20
    assert not torch.equal(resumed["params"]["0"]["weight"], first["params"]["0"]["weight"])
    buffers = [
        t
        for t in fnn.tree.leaves(resumed["opt_state"])
        if isinstance(t, torch.Tensor) and t.is_floating_point()
    ]
    assert buffers and all(bool(t.abs().sum() > 0) for t in buffers)
