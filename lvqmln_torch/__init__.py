"""lvqmln: LVQMLN on PyTorch Lightning.

The package is layered; each layer imports only from the layers below it (see the docs'
Architecture page):

- ``core``: the torch-only foundation (functional math, the prototype head, backbones,
  initializers, the network, explanation math, validation, atomic file writes);
- ``data``, ``training`` and ``viz``: array data and DataModules; optimizers, schedules,
  stopping rules and the module's configuration; plots (each built on ``core`` alone);
- ``lightning``: the ``LightningModule``, its metrics and callbacks;
- ``io``: checkpoints, export and JAX interop;
- ``sklearn``: the scikit-learn estimator, its engines, persistence and the migration from
  prosemble;
- the command lines (``cli``, ``explain_cli``) and the demo on top.

Every public name is imported lazily (PEP 562), so each path pays only for what it uses:
``from lvqmln_torch import LVQMLNClassifier`` and a fit on the estimator's numpy engine,
``predict`` and ``transform`` never import Lightning; ``LVQMLN`` and ``ArrayDataModule`` do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._compat import install_old_module_paths

__version__ = "0.1.0"

# Public name → the module that defines it.
_LAZY = {
    "LVQMLN": ".lightning.model",
    "ArrayDataModule": ".data.datamodule",
    "ArrayData": ".data.arrays",
    "BuiltinDataModule": ".data.builtin",
    "load_builtin": ".data.builtin",
    "csv_to_npy": ".data.csv_read",
    "CNNBackbone": ".core.cnn",
    "MLPBackbone": ".core.backbones",
    "LVQMLNClassifier": ".sklearn.estimator",
    "from_prosemble": ".sklearn.estimator",
    "PrototypeNetwork": ".core.network",
    "PrototypeHead": ".core.head",
    "TrainingStallWarning": ".training.rules",
}
# Public submodule name → its module.
_SUBMODULES = {
    "functional": ".core.functional",
    "callbacks": ".lightning.callbacks",
    "explain": ".core.explain",
    "explain_plots": ".viz.explain_plots",
    "export": ".io.export",
    "plotting": ".viz.plotting",
    "validation": ".core.validation",
    "rules": ".training.rules",
}

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
    from .core import explain, functional, validation
    from .core.backbones import MLPBackbone
    from .core.cnn import CNNBackbone
    from .core.head import PrototypeHead
    from .core.network import PrototypeNetwork
    from .data.arrays import ArrayData
    from .data.builtin import BuiltinDataModule, load_builtin
    from .data.csv_read import csv_to_npy
    from .data.datamodule import ArrayDataModule
    from .io import export
    from .lightning import callbacks
    from .lightning.model import LVQMLN
    from .sklearn.estimator import LVQMLNClassifier, from_prosemble
    from .training import rules
    from .training.rules import TrainingStallWarning
    from .viz import explain_plots, plotting

# Pickles, configs and scripts written against 0.1's flat layout name its module paths.
install_old_module_paths()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name], __name__)
    else:
        raise AttributeError(f"module 'lvqmln_torch' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
