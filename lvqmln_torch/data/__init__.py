"""Layer 2, data (built on ``core`` alone): array data and its validation, batch plans,
memory-mapped rows, labels, the CSV reader, and the DataModules (arrays, built-in data sets,
CSV files) with the CSV prediction writer.

``lvqmln_torch.data`` was a module in lvqmln 0.1; its names (``lvqmln_torch.data.ArrayDataModule``
in a config's ``class_path``, say) are still served here, lazily."""

from __future__ import annotations

import importlib
from typing import Any

# The names of 0.1's ``lvqmln_torch.data`` module → the module that defines each now.
_OLD_MODULE_NAMES = {
    "ArrayDataModule": ".datamodule",
    "InMemoryBatches": ".batches",
    "MappedBatches": ".batches",
    "encode_labels": ".labels",
    "validate_inputs": ".arrays",
}


def __getattr__(name: str) -> Any:
    if name not in _OLD_MODULE_NAMES:
        raise AttributeError(f"module 'lvqmln_torch.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_OLD_MODULE_NAMES[name], __name__), name)
