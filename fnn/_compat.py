"""What differs between the torch releases fnn supports, in one place.

`is_compiling()`: True while torch.compile (dynamo) traces the caller, False in eager mode.
torch ≥ 2.3 has it as `torch.compiler.is_compiling`; older releases only as
`torch._dynamo.external_utils.is_compiling`, which dynamo folds to True while tracing in the
same way. The name is bound to torch's own function (no wrapper), so dynamo sees exactly the
call it knows how to fold.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["is_compiling", "autocast_enabled"]

is_compiling: Callable[[], bool]
if hasattr(torch.compiler, "is_compiling"):  # torch ≥ 2.3
    is_compiling = torch.compiler.is_compiling
else:  # torch 2.2: the same function under its older name
    from torch._dynamo.external_utils import is_compiling


def autocast_enabled(device_type: str) -> bool:
    """Whether `torch.autocast` is on for `device_type` ("cpu", "cuda", ...)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))  # torch ≥ 2.4
    except TypeError:  # an older signature: no device argument
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())
