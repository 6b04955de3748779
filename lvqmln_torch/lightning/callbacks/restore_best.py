"""End the fit on the weights of the best monitored epoch."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from ...training.rules import BestTracker
from ...training.stopping import monitored_loss
from ._shadow import evaluation_state

__all__ = ["RestoreBest", "resolve_monitor"]


def resolve_monitor(monitor: str, trainer: pl.Trainer) -> str:
    """``"auto"`` means the validation loss when validation runs, else the training loss
    ([`monitored_loss`][lvqmln_torch.training.stopping.monitored_loss])."""
    if monitor != "auto":
        return monitor
    return monitored_loss("val_loss" in trainer.callback_metrics)


class RestoreBest(Callback):
    """Keep an in-memory copy of the weights of the epoch with the lowest monitored value and
    load it when the fit ends. With EMA or lookahead the copy holds the weights the model
    evaluates with (the EMA / slow weights).

    Args:
        monitor: a logged metric to minimise, or ``"auto"`` (``val_loss`` when validation
            runs, else ``train_loss``).
    """

    def __init__(self, monitor: str = "auto") -> None:
        self.monitor = monitor
        self.tracker = BestTracker()

    @property
    def best_score(self) -> float | None:
        return self.tracker.score

    @property
    def best_epoch(self) -> int | None:
        return self.tracker.epoch

    @property
    def best_state(self) -> dict[str, Tensor] | None:
        return self.tracker.state

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        key = resolve_monitor(self.monitor, trainer)
        if key not in trainer.callback_metrics:
            raise KeyError(
                f"RestoreBest monitors {key!r} but it was not logged; logged metrics: "
                f"{sorted(trainer.callback_metrics)}"
            )
        self.tracker.update(
            float(trainer.callback_metrics[key]),
            trainer.current_epoch,
            lambda: evaluation_state(trainer, pl_module),
        )

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.best_state is not None:
            with torch.no_grad():
                pl_module.load_state_dict(self.best_state)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tracker.score = state_dict["best_score"]
        self.tracker.epoch = state_dict["best_epoch"]
        self.tracker.state = state_dict["best_state"]
