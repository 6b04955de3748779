"""Optimizers by name (or dotted import path, or class)."""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["OPTIMIZERS", "resolve_optimizer"]

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
}


def resolve_optimizer(optimizer: str | type[Optimizer]) -> type[Optimizer]:
    """An optimizer class from a name in :data:`OPTIMIZERS`, a dotted path such as
    ``"torch.optim.SGD"``, or a class.

    Raises:
        ValueError: for anything else, listing the valid names.
    """
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        if optimizer.lower() in OPTIMIZERS:
            return OPTIMIZERS[optimizer.lower()]
        if "." in optimizer:
            module_name, _, attr = optimizer.rpartition(".")
            try:
                candidate: Any = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                candidate = None
            if isinstance(candidate, type) and issubclass(candidate, Optimizer):
                return candidate
    raise ValueError(
        f"Unknown optimizer {optimizer!r}. Valid optimizers: {', '.join(OPTIMIZERS)}, "
        "a dotted path to a torch.optim.Optimizer subclass, or the class itself"
    )
