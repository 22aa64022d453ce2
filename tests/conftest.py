import pytest
import torch

import fnn


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Small tensors: one thread is faster and steadier on a busy 2-core machine.
    torch.set_num_threads(1)
    yield


@pytest.fixture
def key():
    return fnn.random.key(0)
