"""Every public-looking function or class of fnn is in its module's `__all__` (and so in the
API reference); everything else is underscored."""

import importlib
import inspect
import pkgutil

import fnn


def test_every_public_looking_name_is_in_all():
    missing = []
    for info in pkgutil.walk_packages(fnn.__path__, "fnn."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        exported = set(getattr(module, "__all__", ()))
        for name, value in vars(module).items():
            if name.startswith("_") or name in exported or inspect.ismodule(value):
                continue
            defined_here = getattr(value, "__module__", None) == info.name
            if defined_here and callable(value):
                missing.append(f"{info.name}.{name}")
    assert missing == [], (
        f"public-looking names outside __all__ (export or underscore them): {missing}"
    )
