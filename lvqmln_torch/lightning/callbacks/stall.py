"""Warn when training stalls (flat loss, chance-level accuracy)."""

from __future__ import annotations

import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ...training.rules import STALL_DEFAULTS, StallRule, TrainingStallWarning
from ..user_data import unpack

__all__ = ["StallDetection"]


class StallDetection(Callback):
    """Warn once, with a [`TrainingStallWarning`][lvqmln_torch.training.rules.TrainingStallWarning] naming the likely
    causes, when training stalls ([`StallRule`][lvqmln_torch.training.rules.StallRule]): after ``after``
    epochs and ``min_steps`` optimizer steps, and at the end of the fit, a training accuracy no
    better than predicting the largest class and a flat training loss. [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] adds it by default;
    silence it with ``warnings.filterwarnings("ignore", category=TrainingStallWarning)``.

    The largest class's share is counted from the labels of the first training epoch's
    batches (on each rank); the module logs ``train_loss`` and ``train_acc``. The arguments
    and their defaults are [`STALL_DEFAULTS`][lvqmln_torch.training.rules.STALL_DEFAULTS]' (where
    each is explained).
    """

    def __init__(
        self,
        after: int = STALL_DEFAULTS["after"],
        tolerance: float = STALL_DEFAULTS["tolerance"],
        flat: float = STALL_DEFAULTS["flat"],
        min_steps: int = STALL_DEFAULTS["min_steps"],
    ) -> None:
        self.rule = StallRule(after=after, tolerance=tolerance, flat=flat, min_steps=min_steps)
        self._counts: torch.Tensor | None = None

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.current_epoch != 0 or self.rule.epochs:
            return
        y = unpack(batch)[1].reshape(-1)
        counts = torch.bincount(y, minlength=pl_module.head.n_classes)
        self._counts = counts if self._counts is None else self._counts + counts

    def _check(self, trainer: pl.Trainer) -> None:
        metrics = trainer.callback_metrics
        if self._counts is None or "train_acc" not in metrics:
            return
        counts = self._counts.double()
        message = self.rule.check(float(metrics["train_acc"]), float(counts.max() / counts.sum()))
        if message is not None and trainer.is_global_zero:
            # stacklevel 1: the warning comes from lvqmln_torch (the estimator shows those).
            warnings.warn(message, TrainingStallWarning, stacklevel=1)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "train_loss" not in trainer.callback_metrics:
            return
        self.rule.record(float(trainer.callback_metrics["train_loss"]), trainer.global_step)
        if self.rule.due(last=False):
            self._check(trainer)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rule.due(last=True):
            self._check(trainer)
