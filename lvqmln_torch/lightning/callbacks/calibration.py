"""Fit the temperature of the probabilities on the validation data when the fit ends."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from ...core.calibration import DEFAULT_BOUNDS, check_bounds

__all__ = ["TemperatureCalibration"]


def _loaders(trainer: pl.Trainer) -> list[Any]:
    loaders = trainer.val_dataloaders
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


class _Chain:
    """The batches of several loaders, one after the other."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders

    def __iter__(self):
        for loader in self.loaders:
            yield from loader


class TemperatureCalibration(Callback):
    """Temperature scaling at the end of ``Trainer.fit``: fit ``T`` on every batch of the
    validation loaders (see [`calibrate`][lvqmln_torch.lightning.calibration.calibrate])
    on the weights the fit ends with (after [`RestoreBest`][lvqmln_torch.lightning.callbacks.RestoreBest],
    EMA and projection: it moves itself behind the other callbacks when the fit starts). Under
    DDP every rank reads its shard and all get the same ``T``.

    The temperature is a buffer of the module: save a checkpoint or export after the fit to
    keep it (checkpoints written during the fit hold ``T = 1``). The validation data must be
    held out from training; a temperature fitted on them makes ``val_ece`` an in-sample figure
    from then on.

    Args:
        bounds: ``(low, high)`` limits of the temperature.

    Raises:
        ValueError: when the fit has no validation data (when training starts).
    """

    def __init__(self, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> None:
        self.bounds = check_bounds(bounds)
        self.temperature: float | None = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Last among the callbacks that may change the final weights in on_fit_end
        # (RestoreBest, PrototypeProjection), before the checkpoint callbacks, which Lightning
        # keeps last. A new list: Lightning is iterating over the old one now.
        others = [c for c in trainer.callbacks if c is not self]
        plain = [c for c in others if not isinstance(c, Checkpoint)]
        trainer.callbacks = [*plain, self, *(c for c in others if isinstance(c, Checkpoint))]

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop = trainer.fit_loop.epoch_loop.val_loop
        try:
            loop.setup_data()  # what the sanity check does; a no-op when it ran
            missing = loop.skip
        except MisconfigurationException:  # no val_dataloader anywhere
            missing = True
        if missing:
            raise ValueError(
                "TemperatureCalibration fits the temperature on the validation data, but this "
                "fit has none: give Trainer.fit val_dataloaders (or the datamodule a "
                "val_dataloader with batches) and keep limit_val_batches > 0"
            )

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = _loaders(trainer)
        # The strategy moved the module to the CPU at teardown; calibrate on its device.
        device = pl_module.device
        pl_module.to(trainer.strategy.root_device)
        try:
            pl_module.calibrate(
                _Chain(loaders),
                bounds=self.bounds,
                reduce=lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
            )
            self.temperature = pl_module.temperature
        finally:
            pl_module.to(device)
