"""Lookahead (Zhang et al., 2019) around any optimizer, counted in optimizer steps."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor
from typing_extensions import override

from ._shadow import ShadowWeights
from .ema import ExponentialMovingAverage

__all__ = ["Lookahead"]


class Lookahead(ShadowWeights):
    """Every ``sync_period`` optimizer steps: ``slow ← slow + α (fast − slow)`` and the fast
    weights restart from the new slow ones (``optax.lookahead``). Validation runs on the slow
    weights and the fitted model ends on them, unless an :class:`ExponentialMovingAverage` is
    also present, which then decides (as upstream).

    Args:
        sync_period: optimizer steps between synchronisations (≥ 1).
        slow_step_size: α in (0, 1].
    """

    def __init__(self, sync_period: int = 6, slow_step_size: float = 0.5) -> None:
        super().__init__()
        if isinstance(sync_period, bool) or not isinstance(sync_period, int) or sync_period < 1:
            raise ValueError(f"lookahead sync_period must be an integer >= 1, got {sync_period!r}")
        if not 0.0 < slow_step_size <= 1.0:
            raise ValueError(f"lookahead slow_step_size must lie in (0, 1], got {slow_step_size!r}")
        self.sync_period = sync_period
        self.slow_step_size = float(slow_step_size)

    @override
    def evaluates(self, trainer: pl.Trainer) -> bool:
        return not any(isinstance(c, ExponentialMovingAverage) for c in trainer.callbacks)

    @override
    def after_optimizer_step(self, params: dict[str, Tensor], step: int) -> None:
        if step % self.sync_period:
            return
        with torch.no_grad():
            for name, slow in self.shadow.items():
                fast = params[name]
                slow.add_(fast.detach() - slow, alpha=self.slow_step_size)
                fast.copy_(slow)
