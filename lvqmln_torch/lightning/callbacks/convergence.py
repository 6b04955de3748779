"""Stop when the epoch loss has converged."""

from __future__ import annotations

from typing import Any

from typing_extensions import override

from ...training.rules import ConvergenceRule
from ._stopping import RuleStopping

__all__ = ["LossConvergence"]


class LossConvergence(RuleStopping):
    """Stop training when the monitored epoch loss changes by less than ``epsilon`` between
    two consecutive epochs (upstream's ``epsilon``; [`ConvergenceRule`][lvqmln_torch.training.rules.ConvergenceRule]).

    Args:
        epsilon: the threshold (≥ 0).
        monitor: a logged metric or ``"auto"`` (``val_loss`` when validation runs, else
            ``train_loss``).
    """

    state_settings = ("monitor", "epsilon")

    def __init__(self, epsilon: float = 1e-6, monitor: str = "train_loss") -> None:
        super().__init__(ConvergenceRule(epsilon), monitor)
        self.epsilon = self.rule.epsilon

    @property
    def previous(self) -> float | None:
        return self.rule.previous

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.rule.previous, "stopped_epoch": self.stopped_epoch}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.previous = state_dict["previous"]
        self.stopped_epoch = state_dict["stopped_epoch"]
