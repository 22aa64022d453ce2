"""Layer constructors (stax style): each call returns a `Layer(init, apply)`."""

from ..combinators import parallel, serial
from .activations import (
    Elu,
    Gelu,
    Identity,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    elementwise,
)
from .conv import Conv
from .dense import Dense
from .dropout import Dropout
from .fan import FanInConcat, FanInSum, FanOut
from .norm import BatchNorm, LayerNorm
from .pool import AvgPool, MaxPool
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .reshape import Flatten, Reshape

__all__ = [
    "Dense",
    "Conv",
    "MaxPool",
    "AvgPool",
    "LayerNorm",
    "BatchNorm",
    "Relu",
    "LeakyRelu",
    "Tanh",
    "Sigmoid",
    "Elu",
    "Gelu",
    "Softplus",
    "Softmax",
    "LogSoftmax",
    "Identity",
    "Flatten",
    "Reshape",
    "Dropout",
    "FanOut",
    "FanInSum",
    "FanInConcat",
    "serial",
    "parallel",
    "elementwise",
    # recurrent layers
    "RNN",
    "LSTM",
    "GRU",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
]
