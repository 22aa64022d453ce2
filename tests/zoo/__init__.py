"""The layer zoo: every layer kind of fnn, listed once, for the feature × layer matrix.

Each module in this folder defines `CASES`, a list of `Case`s; `all_cases()` gathers them.
`tests/test_matrix.py` runs every case through every feature (value_and_grad,
train_step, per_example_grads, summary, remat, with_vjp, torch.compile, fnn.io,
state_dict round trips, float64, bf16, meta init, pickling of VJPs), so a new layer joins
the matrix by adding one `Case` to its family's module here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, NamedTuple


class Case(NamedTuple):
    name: str  # a readable id, e.g. "Conv1d" or "LSTM-bidirectional"
    make: Callable[[], Any]  # () -> fnn Layer
    input_shape: Any  # the shape given to init, batch axis -1, e.g. (-1, 3, 8, 8), or a list
    inputs: str = "float"  # "float": normal floats; "index:K": int64 indices in [0, K)
    apply_kwargs: Callable[[], dict[str, Any]] | None = None  # e.g. lambda: {"key": key}
    torch_twin: Callable[[], Any] | None = None  # () -> torch.nn.Module with the same
    # state_dict names and the same forward (fed the same input), or None
    stateful: bool = False  # needs fnn.init_state / state= (BatchNorm)
    per_example: bool = True  # False where the output mixes examples (BatchNorm in train)
    notes: str = ""  # why a feature is expected to raise a documented error, if any


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for module in pkgutil.iter_modules(__path__):
        cases += importlib.import_module(f"{__name__}.{module.name}").CASES
    return cases
