"""Zoo cases: the recurrent layers (RNN, LSTM, GRU, run by fnn.scan) and a scan over a cell."""

import torch

import fnn
from fnn import layers as L

from . import Case


def _output_only(cls):
    """torch.nn.LSTM/GRU/RNN with the same state_dict whose forward returns the output only
    (fnn's layer returns `(h_n, …)` only with return_state=True)."""

    class OutputOnly(cls):
        def forward(self, x):
            return super().forward(x)[0]

    OutputOnly.__name__ = cls.__name__
    return OutputOnly


LSTM, GRU, RNN = (_output_only(c) for c in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN))

CASES = [
    Case("LSTM", lambda: L.LSTM(4), (-1, 3, 2), torch_twin=lambda: LSTM(2, 4, batch_first=True)),
    Case(
        "LSTM-2layers-bidirectional",
        lambda: L.LSTM(3, num_layers=2, bidirectional=True),
        (-1, 3, 2),
        torch_twin=lambda: LSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True),
    ),
    Case(
        "LSTM-dropout",
        lambda: L.LSTM(3, num_layers=2, dropout=0.3),
        (-1, 3, 2),
        apply_kwargs=lambda: {"key": fnn.random.key(5)},
    ),
    Case(
        "LSTM-return_state",
        lambda: L.LSTM(3, return_state=True),
        (-1, 3, 2),
        torch_twin=lambda: torch.nn.LSTM(2, 3, batch_first=True),
        notes="output (y, (h_n, c_n)): a tuple, as torch.nn.LSTM's",
    ),
    Case("GRU", lambda: L.GRU(4), (-1, 3, 2), torch_twin=lambda: GRU(2, 4, batch_first=True)),
    Case(
        "GRU-bidirectional-nobias",
        lambda: L.GRU(3, bidirectional=True, bias=False),
        (-1, 3, 2),
        torch_twin=lambda: GRU(2, 3, bidirectional=True, bias=False, batch_first=True),
    ),
    Case("RNN", lambda: L.RNN(4), (-1, 3, 2), torch_twin=lambda: RNN(2, 4, batch_first=True)),
    Case(
        "RNN-relu-2layers",
        lambda: L.RNN(3, num_layers=2, nonlinearity="relu"),
        (-1, 3, 2),
        torch_twin=lambda: RNN(2, 3, num_layers=2, nonlinearity="relu", batch_first=True),
    ),
    Case(
        "scan-LSTMCell",
        lambda: fnn.scan(L.LSTMCell(3)),
        [[(-1, 3), (-1, 3)], (-1, 4, 2)],
        notes="input ((h0, c0), xs), output ((h_T, c_T), ys): no single torch.nn twin",
    ),
]
