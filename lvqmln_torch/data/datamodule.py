"""Array data for LVQMLN as a Lightning ``LightningDataModule`` (the arrays' validation,
encoding, splits and batches are [`ArrayData`][lvqmln_torch.data.arrays.ArrayData]'s)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from .arrays import ArrayData
from .batches import InMemoryBatches, MappedBatches

__all__ = ["ArrayDataModule", "SourceDataModule"]


class ArrayDataModule(ArrayData, pl.LightningDataModule):
    """Arrays in, batches out, as a ``LightningDataModule``: in-memory tensors move to the
    training device in ``setup`` (memory-mapped inputs stay on disk and are read per step) and
    the batches follow the trainer's epoch, rank and world size. The arguments are
    [`ArrayData`][lvqmln_torch.data.arrays.ArrayData]'s (memory-mapped arrays and ``.npy`` paths
    included)."""

    @override
    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if self.on_device and trainer is not None and not self.memory_mapped:
            device = trainer.strategy.root_device
            if self._tensors["train"][0].device != device:
                self._to_tensors(device)

    def _loader(self, name: str, shuffle: bool) -> InMemoryBatches | MappedBatches:
        trainer = self.trainer
        if trainer is None:
            return self.loader(name, shuffle)
        return self.loader(
            name,
            shuffle,
            epoch_fn=lambda: trainer.current_epoch,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )

    @override
    def train_dataloader(self) -> InMemoryBatches | MappedBatches:
        return self._loader("train", self.shuffle)

    @override
    def val_dataloader(self) -> InMemoryBatches | MappedBatches | list:
        return self._loader("val", False) if self.has("val") else []

    @override
    def test_dataloader(self) -> InMemoryBatches | MappedBatches:
        return self._loader("test", False)

    @override
    def predict_dataloader(self) -> InMemoryBatches | MappedBatches:
        # Predictions are gathered per rank by the caller; never shard them.
        return self.loader("predict")

    @override
    def state_dict(self) -> dict[str, Any]:
        if not self.standardize:
            return {}
        return {"mean": torch.as_tensor(self.mean_), "scale": torch.as_tensor(self.scale_)}


class SourceDataModule(ArrayDataModule):
    """An [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] over arrays read from
    a named source (a built-in data set, a CSV file): the base of
    [`BuiltinDataModule`][lvqmln_torch.data.builtin.BuiltinDataModule] and
    [`CsvDataModule`][lvqmln_torch.data.csv_datamodule.CsvDataModule], which pass their other
    keyword arguments (these split and batching ones) on to it. A 20% test split and
    standardised features by default.

    Args:
        X: the source's ``(n, d)`` features or ``(n, C, H, W)`` images.
        y: its ``(n,)`` labels.
        X_predict: inputs for ``predict`` (default: the test split, else ``X``).
        val_size: held-out validation fraction or count (stratified).
        test_size: held-out test fraction or count (stratified); ``None`` trains on every row.
        batch_size: mini-batch size, ``None`` for full batch.
        shuffle: reshuffle the training batches every epoch.
        seed: seed of the splits and the shuffling.
        standardize: z-score the features with training-split statistics.
        on_device: keep the data on the training device.
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        X_predict: Any = None,
        *,
        val_size: float | int | None = None,
        test_size: float | int | None = 0.2,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        standardize: bool = True,
        on_device: bool = True,
    ) -> None:
        super().__init__(
            X,
            y,
            X_predict=X_predict,
            val_size=val_size,
            test_size=test_size,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            standardize=standardize,
            on_device=on_device,
        )
