"""In-memory data for LVQMLN as a Lightning ``LightningDataModule`` (the arrays' validation,
encoding, splits and batches are :class:`~lvqmln_torch.arrays.ArrayData`'s)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from typing_extensions import override

from .arrays import ArrayData, InMemoryBatches, encode_labels, validate_inputs

__all__ = ["ArrayDataModule", "InMemoryBatches", "encode_labels", "validate_inputs"]


class ArrayDataModule(ArrayData, pl.LightningDataModule):
    """Arrays in, in-memory batches out, as a ``LightningDataModule``: the tensors move to the
    training device in ``setup`` and the batches follow the trainer's epoch, rank and world
    size. The arguments are :class:`~lvqmln_torch.arrays.ArrayData`'s."""

    @override
    def setup(self, stage: str) -> None:
        trainer = self.trainer
        if self.on_device and trainer is not None:
            device = trainer.strategy.root_device
            if self._tensors["train"][0].device != device:
                self._to_tensors(device)

    def _loader(self, name: str, shuffle: bool) -> InMemoryBatches:
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
    def train_dataloader(self) -> InMemoryBatches:
        return self._loader("train", self.shuffle)

    @override
    def val_dataloader(self) -> InMemoryBatches | list:
        return self._loader("val", False) if self.has("val") else []

    @override
    def test_dataloader(self) -> InMemoryBatches:
        return self._loader("test", False)

    @override
    def predict_dataloader(self) -> InMemoryBatches:
        # Predictions are gathered per rank by the caller; never shard them.
        return self.loader("predict")

    @override
    def state_dict(self) -> dict[str, Any]:
        if not self.standardize:
            return {}
        return {"mean": torch.as_tensor(self.mean_), "scale": torch.as_tensor(self.scale_)}
