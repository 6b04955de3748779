"""Exponential moving average of the weights, per optimizer step, without bias correction."""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import override

from ._shadow import ShadowWeights

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(ShadowWeights):
    """``ema ← decay · ema + (1 − decay) · θ`` after every optimizer step, starting from the
    initial weights (no bias correction, as upstream). Validation runs on the EMA weights and
    the fitted model ends on them; frozen parameters are left alone (bit-identical).

    Args:
        decay: in (0, 1); typical values 0.99 – 0.9999.

    Why not Lightning's ``EMAWeightAveraging``: it also averages frozen parameters and integer
    buffers (frozen weights then drift by rounding), starts from the weights after the first
    step rather than the initial ones, and cannot be pickled under ``ddp_spawn``.
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay!r}")
        self.decay = float(decay)

    @override
    def after_optimizer_step(self, params: dict[str, Tensor], step: int) -> None:
        names = list(self.shadow)
        shadow = [self.shadow[n] for n in names]
        current = [params[n].detach() for n in names]
        # Same arithmetic as optax.incremental_update(new, old, step_size=1 - decay).
        step_size = 1.0 - self.decay
        with torch.no_grad():
            torch._foreach_mul_(shadow, 1.0 - step_size)
            torch._foreach_add_(shadow, current, alpha=step_size)
