"""Exponential moving average of the weights, per optimizer step, without bias correction."""

from __future__ import annotations

from torch import Tensor
from typing_extensions import override

from ...training.rules import EMARule
from ._shadow import ShadowWeights

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(ShadowWeights):
    """``ema ← decay · ema + (1 − decay) · θ`` after every optimizer step, starting from the
    initial weights (no bias correction, as upstream; [`EMARule`][lvqmln_torch.training.rules.EMARule]).
    Validation runs on the EMA weights and the fitted model ends on them; frozen parameters are
    left alone (bit-identical).

    Args:
        decay: in (0, 1); typical values 0.99 – 0.9999.

    Why not Lightning's ``EMAWeightAveraging``: it also averages frozen parameters and integer
    buffers (frozen weights then drift by rounding), starts from the weights after the first
    step rather than the initial ones, and cannot be pickled under ``ddp_spawn``.
    """

    state_settings = ("decay",)

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        self.rule = EMARule(decay)
        self.decay = self.rule.decay

    @override
    def after_optimizer_step(self, params: dict[str, Tensor], step: int) -> None:
        self.rule.after_step(self.shadow, params, step)
