"""Optimizers as `Optimizer(init, update)` pairs with explicit state, matching `torch.optim`."""

from .base import LearningRate, Optimizer, Schedule
from .sgd import sgd

__all__ = ["Optimizer", "Schedule", "LearningRate", "sgd"]
