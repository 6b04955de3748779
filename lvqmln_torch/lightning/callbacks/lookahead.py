"""Lookahead (Zhang et al., 2019) around any optimizer, counted in optimizer steps."""

from __future__ import annotations

from torch import Tensor
from typing_extensions import override

from ...core.validation import LOOKAHEAD_DEFAULTS
from ...training.rules import LookaheadRule
from ._shadow import ShadowWeights

__all__ = ["Lookahead"]


class Lookahead(ShadowWeights):
    """Every ``sync_period`` optimizer steps: ``slow ← slow + α (fast − slow)`` and the fast
    weights restart from the new slow ones (``optax.lookahead``;
    [`LookaheadRule`][lvqmln_torch.training.rules.LookaheadRule]). Validation runs on the slow weights and the
    fitted model ends on them, unless an [`ExponentialMovingAverage`][lvqmln_torch.lightning.callbacks.ema.ExponentialMovingAverage] is also present,
    which then decides (as upstream).

    Args:
        sync_period: optimizer steps between synchronisations (≥ 1).
        slow_step_size: α in (0, 1].

    The defaults are [`LOOKAHEAD_DEFAULTS`][lvqmln_torch.core.validation.LOOKAHEAD_DEFAULTS].
    """

    def __init__(
        self,
        sync_period: int = LOOKAHEAD_DEFAULTS["sync_period"],
        slow_step_size: float = LOOKAHEAD_DEFAULTS["slow_step_size"],
    ) -> None:
        super().__init__()
        self.rule = LookaheadRule(sync_period=sync_period, slow_step_size=slow_step_size)
        self.sync_period = self.rule.sync_period
        self.slow_step_size = self.rule.slow_step_size

    @override
    def after_optimizer_step(self, params: dict[str, Tensor], step: int) -> None:
        self.rule.after_step(self.shadow, params, step)
