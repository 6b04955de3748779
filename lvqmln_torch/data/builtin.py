"""Built-in data sets (shipped with scikit-learn, so nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import datasets as sk_datasets

from .datamodule import SourceDataModule

__all__ = ["BUILTIN_DATASETS", "BuiltinDataModule", "load_builtin"]

BUILTIN_DATASETS: dict[str, Callable[..., Any]] = {
    "iris": sk_datasets.load_iris,
    "wine": sk_datasets.load_wine,
    "breast_cancer": sk_datasets.load_breast_cancer,
    "digits": sk_datasets.load_digits,
}
"""Built-in data set name → its scikit-learn loader."""


def load_builtin(name: str, as_images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a built-in data set.

    Args:
        name: one of [`BUILTIN_DATASETS`][lvqmln_torch.data.builtin.BUILTIN_DATASETS].
        as_images: digits only: ``(n, 1, 8, 8)`` images scaled to [0, 1] instead of flat
            ``(n, 64)`` vectors of 0 … 16.

    Raises:
        ValueError: for an unknown name, or images of a data set that has none.
    """
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Valid datasets: {', '.join(BUILTIN_DATASETS)}")
    bunch = BUILTIN_DATASETS[name]()
    X, y = bunch.data.astype(np.float64), bunch.target
    if as_images:
        if name != "digits":
            raise ValueError(f"as_images is only available for 'digits', not {name!r}")
        X = (bunch.images / 16.0)[:, None, :, :]
    return X, y


class BuiltinDataModule(SourceDataModule):
    """An [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] over a built-in data set.

    Args:
        name: ``iris``, ``wine``, ``breast_cancer`` or ``digits``.
        as_images: digits as ``(n, 1, 8, 8)`` images (for the CNN backbone).
        **kwargs: the split and batching arguments of
            [`SourceDataModule`][lvqmln_torch.data.datamodule.SourceDataModule] (``val_size``,
            ``test_size``, ``batch_size``, ``shuffle``, ``seed``, ``standardize``,
            ``on_device``).
    """

    def __init__(self, name: str = "iris", as_images: bool = False, **kwargs: Any) -> None:
        X, y = load_builtin(name, as_images)
        super().__init__(X, y, X_predict=None, **kwargs)
        self.name = name
