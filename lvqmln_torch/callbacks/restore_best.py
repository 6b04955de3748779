"""End the fit on the weights of the best monitored epoch."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from ._shadow import evaluation_state

__all__ = ["RestoreBest", "resolve_monitor"]


def resolve_monitor(monitor: str, trainer: pl.Trainer) -> str:
    """``"auto"`` means the validation loss when validation runs, else the training loss."""
    if monitor != "auto":
        return monitor
    return "val_loss" if "val_loss" in trainer.callback_metrics else "train_loss"


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
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, Tensor] | None = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        key = resolve_monitor(self.monitor, trainer)
        if key not in trainer.callback_metrics:
            raise KeyError(
                f"RestoreBest monitors {key!r} but it was not logged; logged metrics: "
                f"{sorted(trainer.callback_metrics)}"
            )
        score = float(trainer.callback_metrics[key])
        if self.best_score is None or score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.best_state = evaluation_state(trainer, pl_module)

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
        self.best_score = state_dict["best_score"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_state = state_dict["best_state"]
