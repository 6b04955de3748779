"""Early stopping on the monitored epoch loss."""

from __future__ import annotations

from typing import Any

from typing_extensions import override

from ...training.rules import PatienceRule
from ._stopping import RuleStopping

__all__ = ["PatienceStopping"]


class PatienceStopping(RuleStopping):
    """Stop after ``patience`` epochs without the monitored value improving by more than
    ``min_delta`` (or at once when it is not finite): [`PatienceRule`][lvqmln_torch.training.rules.PatienceRule],
    the decision Lightning's ``EarlyStopping(mode="min")`` takes, checked once per epoch after
    validation (so it monitors ``val_loss`` or ``train_loss`` alike).

    Args:
        patience: epochs without improvement to wait (≥ 1).
        min_delta: the smallest improvement that counts (≥ 0).
        monitor: a logged metric or ``"auto"`` (``val_loss`` when validation runs, else
            ``train_loss``).
    """

    state_settings = ("monitor", "patience", "min_delta")

    def __init__(self, patience: int, min_delta: float = 0.0, monitor: str = "auto") -> None:
        super().__init__(PatienceRule(patience, min_delta), monitor)
        self.patience, self.min_delta = self.rule.patience, float(self.rule.min_delta)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**self.rule.state_dict(), "stopped_epoch": self.stopped_epoch}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.load_state_dict(state_dict)
        self.stopped_epoch = state_dict["stopped_epoch"]
