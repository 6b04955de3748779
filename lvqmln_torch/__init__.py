"""lvqmln: LVQMLN on PyTorch Lightning.

Every public name is imported lazily (PEP 562), so each path pays only for what it uses:
``from lvqmln_torch import LVQMLNClassifier`` and a fit on the estimator's numpy engine,
``predict`` and ``transform`` never import Lightning; ``LVQMLN`` and ``ArrayDataModule`` do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name → the module that defines it.
_LAZY = {
    "LVQMLN": ".model",
    "ArrayDataModule": ".data",
    "ArrayData": ".arrays",
    "BuiltinDataModule": ".datasets",
    "load_builtin": ".datasets",
    "csv_to_npy": ".csv_read",
    "CNNBackbone": ".backbones",
    "MLPBackbone": ".backbones",
    "LVQMLNClassifier": ".estimator",
    "from_prosemble": ".estimator",
    "PrototypeNetwork": ".network",
    "PrototypeHead": ".head",
    "TrainingStallWarning": ".rules",
}
_SUBMODULES = (
    "functional",
    "callbacks",
    "explain",
    "explain_plots",
    "export",
    "plotting",
    "validation",
    "rules",
)

__all__ = [
    "LVQMLN",
    "ArrayData",
    "ArrayDataModule",
    "BuiltinDataModule",
    "CNNBackbone",
    "LVQMLNClassifier",
    "MLPBackbone",
    "PrototypeHead",
    "PrototypeNetwork",
    "TrainingStallWarning",
    "callbacks",
    "csv_to_npy",
    "explain",
    "explain_plots",
    "export",
    "from_prosemble",
    "functional",
    "load_builtin",
    "plotting",
    "rules",
    "validation",
]

if TYPE_CHECKING:
    from . import callbacks, explain, explain_plots, export, functional, plotting, rules, validation
    from .arrays import ArrayData
    from .backbones import CNNBackbone, MLPBackbone
    from .csv_read import csv_to_npy
    from .data import ArrayDataModule
    from .datasets import BuiltinDataModule, load_builtin
    from .estimator import LVQMLNClassifier, from_prosemble
    from .head import PrototypeHead
    from .model import LVQMLN
    from .network import PrototypeNetwork
    from .rules import TrainingStallWarning


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'lvqmln_torch' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
