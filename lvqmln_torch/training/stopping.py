"""Which stopping rules a fit runs and what each monitors, decided once for both of the
estimator's engines (the Lightning callbacks and the numpy engine's rules) and for
[`RestoreBest`][lvqmln_torch.lightning.callbacks.RestoreBest]'s ``monitor="auto"``."""

from __future__ import annotations

from dataclasses import dataclass

from .rules import BestTracker, ConvergenceRule, PatienceRule

__all__ = ["StoppingPlan", "monitored_loss"]


def monitored_loss(validates: bool) -> str:
    """The loss that early stopping and best-epoch tracking monitor: the validation loss when
    validation runs, else the training loss."""
    return "val_loss" if validates else "train_loss"


@dataclass(frozen=True)
class StoppingPlan:
    """The estimator's stopping rules: early stopping on the monitored loss with ``patience``
    (``epsilon`` its minimum improvement), else convergence of the training loss with
    ``epsilon`` alone; and, with ``restore_best``, ending on the best monitored epoch.

    Args:
        patience: epochs without improvement before stopping, or ``None``.
        epsilon: with ``patience`` the minimum improvement; alone the convergence threshold.
        restore_best: end on the weights of the epoch with the best monitored loss.
        validates: whether validation runs (the monitored loss is then ``val_loss``).
    """

    patience: int | None
    epsilon: float | None
    restore_best: bool
    validates: bool

    @property
    def monitor(self) -> str:
        """``"val_loss"`` or ``"train_loss"`` (see [`monitored_loss`][lvqmln_torch.training.stopping.monitored_loss])."""
        return monitored_loss(self.validates)

    @property
    def min_delta(self) -> float:
        """Early stopping's minimum improvement."""
        return self.epsilon or 0.0

    @property
    def converges(self) -> bool:
        """Whether the convergence rule runs (on the training loss): ``epsilon`` without
        ``patience``."""
        return self.patience is None and self.epsilon is not None

    def patience_rule(self) -> PatienceRule | None:
        """Early stopping on [`monitor`][lvqmln_torch.training.stopping.StoppingPlan.monitor], if any."""
        return PatienceRule(self.patience, self.min_delta) if self.patience is not None else None

    def convergence_rule(self) -> ConvergenceRule | None:
        """Convergence of the training loss, if any."""
        return ConvergenceRule(self.epsilon) if self.converges else None

    def best_tracker(self) -> BestTracker | None:
        """Tracking of the best monitored epoch, with ``restore_best``."""
        return BestTracker() if self.restore_best else None
