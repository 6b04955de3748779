"""lvqmln: LVQMLN on PyTorch Lightning.

Optional parts (the estimator, the CLI, plotting, export) are imported lazily so that
``import lvqmln_torch`` costs little more than importing Lightning itself.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import functional
from .backbones import CNNBackbone, MLPBackbone
from .data import ArrayDataModule
from .model import LVQMLN

__version__ = "0.1.0"

__all__ = [
    "LVQMLN",
    "ArrayDataModule",
    "BuiltinDataModule",
    "CNNBackbone",
    "LVQMLNClassifier",
    "MLPBackbone",
    "from_prosemble",
    "functional",
    "load_builtin",
]

# Lazy too: the built-in data sets import sklearn.datasets, which a fit on arrays never needs.
_LAZY = {
    "LVQMLNClassifier": ".estimator",
    "from_prosemble": ".migration",
    "BuiltinDataModule": ".datasets",
    "load_builtin": ".datasets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'lvqmln_torch' has no attribute {name!r}")
