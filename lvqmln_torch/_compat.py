"""The module paths of lvqmln 0.1 (a flat package), kept importable for what names them:
pickled estimators and networks, ``class_path`` entries in LightningCLI configs, string
transfers and optimizers saved by the estimator, and user scripts.

``import lvqmln_torch.network`` returns the module ``lvqmln_torch.core.network`` itself (the
same module object, so classes compare equal and unpickle to the current definitions). The
finder is consulted before the file system, so ``lvqmln_torch.callbacks.patience`` never loads
a second copy of ``lvqmln_torch.lightning.callbacks.patience``. ``lvqmln_torch.data`` is a
package now; its ``__init__`` serves the old module's names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["OLD_MODULE_PATHS", "install_old_module_paths"]

_PACKAGE = __name__.rpartition(".")[0]

OLD_MODULE_PATHS: dict[str, str] = {
    "functional": "core.functional",
    "head": "core.head",
    "backbones": "core.backbones",
    "initializers": "core.initializers",
    "network": "core.network",
    "explain": "core.explain",
    "validation": "core.validation",
    "_files": "core.files",
    "arrays": "data.arrays",
    "batches": "data.batches",
    "mapped": "data.mapped",
    "labels": "data.labels",
    "csv_read": "data.csv_read",
    "datasets": "data.builtin",
    "csv_data": "data.csv_datamodule",
    "optimizers": "training.optimizers",
    "schedules": "training.schedules",
    "rules": "training.rules",
    "config": "training.config",
    "plotting": "viz.plotting",
    "explain_plots": "viz.explain_plots",
    "model": "lightning.model",
    "metrics": "lightning.metrics",
    "user_data": "lightning.user_data",
    "callbacks": "lightning.callbacks",
    "callbacks._shadow": "lightning.callbacks._shadow",
    "callbacks._stopping": "lightning.callbacks._stopping",
    "callbacks.convergence": "lightning.callbacks.convergence",
    "callbacks.ema": "lightning.callbacks.ema",
    "callbacks.latent_plot": "lightning.callbacks.latent_plot",
    "callbacks.lookahead": "lightning.callbacks.lookahead",
    "callbacks.patience": "lightning.callbacks.patience",
    "callbacks.projection": "lightning.callbacks.projection",
    "callbacks.restore_best": "lightning.callbacks.restore_best",
    "callbacks.stall": "lightning.callbacks.stall",
    "checkpoint": "io.checkpoint",
    "export": "io.export",
    "interop": "io.interop",
    "estimator": "sklearn.estimator",
    "estimator_params": "sklearn.params",
    "estimator_explain": "sklearn.explanations",
    "persistence": "sklearn.persistence",
    "migration": "sklearn.migration",
    "engines": "sklearn.engines",
    "numpy_engine": "sklearn.numpy_engine",
    "numpy_core": "sklearn.numpy_core",
    "lightning_fit": "sklearn.lightning_fit",
    "_output": "sklearn.output",
}
"""Module of lvqmln 0.1 (relative to the package) → the module that holds its code now."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.target_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module ran when it was imported. The import system has just set its
        ``__spec__`` to the alias's; give it back its own, or its relative imports would warn
        that ``__package__ != __spec__.parent``."""
        module.__spec__ = self.target_spec


class _OldPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        prefix, _, old = fullname.partition(".")
        if prefix != _PACKAGE or old not in OLD_MODULE_PATHS:
            return None
        new = f"{_PACKAGE}.{OLD_MODULE_PATHS[old]}"
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install_old_module_paths() -> None:
    """Put the finder of 0.1's module paths first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPathFinder())
