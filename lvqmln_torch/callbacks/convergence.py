"""Stop when the epoch loss has converged."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..rules import ConvergenceRule
from .restore_best import resolve_monitor

__all__ = ["LossConvergence"]


class LossConvergence(Callback):
    """Stop training when the monitored epoch loss changes by less than ``epsilon`` between
    two consecutive epochs (upstream's ``epsilon``; :class:`~lvqmln_torch.rules.ConvergenceRule`).

    Args:
        epsilon: the threshold (≥ 0).
        monitor: a logged metric or ``"auto"`` (``val_loss`` when validation runs, else
            ``train_loss``).
    """

    def __init__(self, epsilon: float = 1e-6, monitor: str = "train_loss") -> None:
        self.rule = ConvergenceRule(epsilon)
        self.epsilon = self.rule.epsilon
        self.monitor = monitor
        self.stopped_epoch: int | None = None

    @property
    def previous(self) -> float | None:
        return self.rule.previous

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        key = resolve_monitor(self.monitor, trainer)
        converged = self.rule.update(float(trainer.callback_metrics[key]))
        if trainer.strategy.reduce_boolean_decision(converged, all=False):
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.rule.previous, "stopped_epoch": self.stopped_epoch}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.previous = state_dict["previous"]
        self.stopped_epoch = state_dict["stopped_epoch"]
