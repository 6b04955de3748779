"""Shared machinery of the callbacks that stop training by a rule of [`lvqmln_torch.training.rules`][lvqmln_torch.training.rules]."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from typing_extensions import override

from ._state_key import KeyedState
from .restore_best import resolve_monitor

__all__ = ["RuleStopping"]


class RuleStopping(KeyedState):
    """Once per epoch (after validation), feed the monitored value to ``rule.update`` and stop
    when it says so on any rank.

    Args:
        rule: an object with ``update(value) -> bool``.
        monitor: a logged metric or ``"auto"`` (``val_loss`` when validation runs, else
            ``train_loss``).
    """

    def __init__(self, rule: Any, monitor: str) -> None:
        self.rule = rule
        self.monitor = monitor
        self.stopped_epoch: int | None = None

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        key = resolve_monitor(self.monitor, trainer)
        stop = self.rule.update(float(trainer.callback_metrics[key]))
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
