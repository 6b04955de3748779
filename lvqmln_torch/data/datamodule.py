"""Array data for LVQMLN as a Lightning ``LightningDataModule`` (the arrays' validation,
encoding, splits and batches are [`ArrayData`][lvqmln_torch.data.arrays.ArrayData]'s)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from .arrays import ArrayData
from .batches import InMemoryBatches, MappedBatches

__all__ = ["SPLIT_AND_BATCH_ARGUMENTS", "ArrayDataModule", "split_and_batch_arguments"]

#: The split and batching arguments of [`ArrayData`][lvqmln_torch.data.arrays.ArrayData] that the
#: DataModules over a named source (built-in data sets, CSV files) take and pass on unchanged.
#: Their signatures list them (LightningCLI reads a class's options from its signature); their
#: meaning is documented once, in ``ArrayData``.
SPLIT_AND_BATCH_ARGUMENTS = (
    "val_size",
    "test_size",
    "batch_size",
    "shuffle",
    "seed",
    "standardize",
    "on_device",
)


def split_and_batch_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The [`SPLIT_AND_BATCH_ARGUMENTS`][lvqmln_torch.data.datamodule.SPLIT_AND_BATCH_ARGUMENTS]
    among ``values`` (a constructor's ``locals()``), to pass on to ``ArrayDataModule``."""
    return {name: values[name] for name in SPLIT_AND_BATCH_ARGUMENTS}


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
