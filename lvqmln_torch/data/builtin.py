"""Built-in data sets (shipped with scikit-learn, so nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import datasets as sk_datasets

from .datamodule import ArrayDataModule, split_and_batch_arguments

__all__ = ["BUILTIN_DATASETS", "BuiltinDataModule", "load_builtin"]

BUILTIN_DATASETS: dict[str, Callable[..., Any]] = {
    "iris": sk_datasets.load_iris,
    "wine": sk_datasets.load_wine,
    "breast_cancer": sk_datasets.load_breast_cancer,
    "digits": sk_datasets.load_digits,
}


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


class BuiltinDataModule(ArrayDataModule):
    """An [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] over a built-in data set.

    The other arguments are [`ArrayData`][lvqmln_torch.data.arrays.ArrayData]'s split and batching
    arguments ([`SPLIT_AND_BATCH_ARGUMENTS`][lvqmln_torch.data.datamodule.SPLIT_AND_BATCH_ARGUMENTS]),
    here with a 20% test split and standardised features by default.

    Args:
        name: ``iris``, ``wine``, ``breast_cancer`` or ``digits``.
        as_images: digits as ``(n, 1, 8, 8)`` images (for the CNN backbone).
    """

    def __init__(
        self,
        name: str = "iris",
        as_images: bool = False,
        val_size: float | int | None = None,
        test_size: float | int | None = 0.2,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        standardize: bool = True,
        on_device: bool = True,
    ) -> None:
        X, y = load_builtin(name, as_images)
        super().__init__(X, y, **split_and_batch_arguments(locals()))
        self.name = name
