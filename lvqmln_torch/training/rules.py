"""Training rules as small objects without Lightning: the epoch mean of the loss, early
stopping, loss convergence, best-epoch tracking, the EMA and lookahead updates and which of
them the model evaluates with, and the detection of a stalled training. The Lightning callbacks ([`lvqmln_torch.lightning.callbacks`][lvqmln_torch.lightning.callbacks]) and the
estimator's numpy engine ([`lvqmln_torch.sklearn.numpy_engine`][lvqmln_torch.sklearn.numpy_engine]) both run these, so the two paths
decide alike by construction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.validation import Integer, Real, check_lookahead

__all__ = [
    "STALL_DEFAULTS",
    "BestTracker",
    "ConvergenceRule",
    "EMARule",
    "EpochMean",
    "LookaheadRule",
    "PatienceRule",
    "ShadowRule",
    "StallRule",
    "TrainingStallWarning",
    "evaluating_rule",
    "nonfinite_loss_error",
    "shadow_rules",
]

EMA_DECAY = Real(0.0, 1.0, low_open=True, high_open=True, none=True)

STALL_DEFAULTS: dict[str, Any] = {"after": 5, "tolerance": 0.02, "flat": 0.01, "min_steps": 50}
"""The settings of the stall detection and their defaults, for
[`StallRule`][lvqmln_torch.training.rules.StallRule] and
[`StallDetection`][lvqmln_torch.lightning.callbacks.StallDetection]: ``after``, the fewest
epochs before the first check; ``tolerance``, the accuracy above the largest class's share that
still counts as chance; ``flat``, the largest change of the epoch loss that counts as flat;
``min_steps``, the fewest optimizer steps before the first check."""


class EpochMean:
    """The epoch loss: float32 sums of ``loss_b · weight_b`` and ``weight_b`` over the batches,
    the arithmetic of the module's [`EpochStats`][lvqmln_torch.lightning.metrics.EpochStats] (so stopping
    rules compare the same numbers on both paths)."""

    def __init__(self) -> None:
        self.total = np.float32(0.0)
        self.weight = np.float32(0.0)

    def update(self, loss: Any, weight: Any) -> None:
        weight = np.float32(weight)
        self.total += np.float32(loss) * weight
        self.weight += weight

    def compute(self) -> float:
        return float(self.total / self.weight)


class PatienceRule:
    """Early stopping: stop after ``patience`` epochs without the monitored value improving on
    the best by more than ``min_delta``, or at once when it is not finite. Compared in float32,
    as Lightning's ``EarlyStopping(mode="min")`` compares its tensors.

    Args:
        patience: epochs without improvement to wait (>= 1).
        min_delta: the smallest improvement that counts (>= 0).
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = Integer(1)("patience", patience)
        self.min_delta = np.float32(Real(0.0)("min_delta", min_delta))
        self.best = np.float32(np.inf)
        self.wait = 0

    def update(self, current: float) -> bool:
        """Record this epoch's value; whether to stop."""
        current32 = np.float32(current)
        if not np.isfinite(current32):
            return True
        if current32 + self.min_delta < self.best:
            self.best, self.wait = current32, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": float(self.best), "wait": self.wait}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.wait = np.float32(state["best"]), int(state["wait"])


class ConvergenceRule:
    """Converged when the monitored value changes by less than ``epsilon`` between two
    consecutive epochs (upstream's ``epsilon``).

    Args:
        epsilon: the threshold (>= 0).
    """

    def __init__(self, epsilon: float) -> None:
        self.epsilon = Real(0.0)("epsilon", epsilon)
        self.previous: float | None = None

    def update(self, current: float) -> bool:
        """Record this epoch's value; whether it converged."""
        done = self.previous is not None and abs(current - self.previous) < self.epsilon
        self.previous = current
        return done


class BestTracker:
    """The lowest monitored value so far and a snapshot taken when it was reached."""

    def __init__(self) -> None:
        self.score: float | None = None
        self.epoch: int | None = None
        self.state: Any = None

    def update(self, score: float, epoch: int, snapshot: Callable[[], Any]) -> bool:
        """Record ``score``; on a new best, keep ``snapshot()``. Returns whether it was one."""
        if self.score is not None and not score < self.score:
            return False
        self.score, self.epoch, self.state = score, epoch, snapshot()
        return True


class ShadowRule(ABC):
    """A shadow copy of trainable tensors updated after every optimizer step."""

    @abstractmethod
    def after_step(
        self, shadow: Mapping[str, Tensor], params: Mapping[str, Tensor], step: int
    ) -> None:
        """Update ``shadow`` in place after optimizer step ``step`` (1-based) from ``params``."""


class EMARule(ShadowRule):
    """``ema ← decay · ema + (1 − decay) · θ`` after every optimizer step (no bias correction,
    the arithmetic of ``optax.incremental_update(new, old, step_size=1 - decay)``).

    Args:
        decay: in (0, 1).
    """

    def __init__(self, decay: float) -> None:
        if decay is None:
            raise ValueError("ema_decay must be a number in (0, 1), got None")
        self.decay = EMA_DECAY("ema_decay", decay)

    def after_step(
        self, shadow: Mapping[str, Tensor], params: Mapping[str, Tensor], step: int
    ) -> None:
        names = list(shadow)
        step_size = 1.0 - self.decay
        with torch.no_grad():
            torch._foreach_mul_([shadow[n] for n in names], 1.0 - step_size)
            torch._foreach_add_(
                [shadow[n] for n in names], [params[n].detach() for n in names], alpha=step_size
            )


class LookaheadRule(ShadowRule):
    """Every ``sync_period`` optimizer steps: ``slow ← slow + α (fast − slow)`` and the fast
    weights restart from the new slow ones (``optax.lookahead``).

    Args:
        **settings: ``sync_period`` (optimizer steps between synchronisations, >= 1) and
            ``slow_step_size`` (α in (0, 1]); missing ones take
            [`LOOKAHEAD_DEFAULTS`][lvqmln_torch.core.validation.LOOKAHEAD_DEFAULTS].

    Raises:
        ValueError: for an unknown setting or a value out of range.
    """

    def __init__(self, **settings: Any) -> None:
        settings = check_lookahead("lookahead", settings)
        self.sync_period = settings["sync_period"]
        self.slow_step_size = settings["slow_step_size"]

    def after_step(
        self, shadow: Mapping[str, Tensor], params: Mapping[str, Tensor], step: int
    ) -> None:
        if step % self.sync_period:
            return
        with torch.no_grad():
            for name, slow in shadow.items():
                fast = params[name]
                slow.add_(fast.detach() - slow, alpha=self.slow_step_size)
                fast.copy_(slow)


def shadow_rules(ema_decay: float | None, lookahead: Mapping[str, Any] | None) -> list[ShadowRule]:
    """The shadow rules of a configuration, in the order they run: lookahead, then EMA."""
    rules: list[ShadowRule] = []
    if lookahead is not None:
        rules.append(LookaheadRule(**lookahead))
    if ema_decay is not None:
        rules.append(EMARule(ema_decay))
    return rules


def evaluating_rule(rules: Sequence[ShadowRule]) -> ShadowRule | None:
    """The rule whose shadow the model evaluates with and ends on: an EMA when there is one
    (as upstream), else lookahead's slow weights, else none (the raw weights)."""
    for kind in (EMARule, LookaheadRule):
        for rule in rules:
            if isinstance(rule, kind):
                return rule
    return None


def nonfinite_loss_error(step: int, epoch: int) -> FloatingPointError:
    """The error for a training loss that became NaN or Inf at optimizer ``step``."""
    return FloatingPointError(
        f"the training loss became non-finite (NaN or Inf) at optimizer step {step} "
        f"(epoch {epoch}); lower the learning rate, check the inputs for extreme values, or "
        "use a wider precision"
    )


class TrainingStallWarning(UserWarning):
    """Training stalled: the loss is flat and the model no better than guessing one class."""


class StallRule:
    """Detects a stalled training: once, when at least ``after`` epochs and ``min_steps``
    optimizer steps are done (so a full-batch fit is not judged after its first few steps),
    and again at the end of a fit of at least 3 epochs, the training accuracy is at most the
    largest class's share plus ``tolerance`` (what predicting one class for every sample
    scores) and the epoch loss moved by less than ``flat`` since the epoch before. It fires
    once.

    The typical cause is latent collapse: the untrained backbone maps every input to almost
    the same code, the prototypes initialised from those codes are almost equal, and the first
    optimizer steps push every code away from every prototype alike, so μ ≈ 0 for every sample
    (the loss flat at the transfer of 0), with no gradient to recover from.

    Args:
        **settings: the keys of [`STALL_DEFAULTS`][lvqmln_torch.training.rules.STALL_DEFAULTS]
            (missing ones take its values).

    Raises:
        ValueError: for an unknown setting or a value out of range.
    """

    def __init__(self, **settings: Any) -> None:
        unknown = sorted(set(settings) - set(STALL_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown stall settings {unknown}; valid: {', '.join(STALL_DEFAULTS)}"
            )
        settings = {**STALL_DEFAULTS, **settings}
        self.after = Integer(1)("after", settings["after"])
        self.tolerance = Real(0.0)("tolerance", settings["tolerance"])
        self.flat = Real(0.0)("flat", settings["flat"])
        self.min_steps = Integer(0)("min_steps", settings["min_steps"])
        self.previous: float | None = None
        self.change: float | None = None
        self.epochs = 0
        self.steps = 0
        self.early_checked = False
        self.fired = False

    def record(self, loss: float, steps: int) -> None:
        """Record one epoch's loss (every epoch) and the optimizer steps done so far."""
        if self.previous is not None:
            self.change = abs(float(loss) - self.previous)
        self.previous = float(loss)
        self.epochs += 1
        self.steps = int(steps)

    def due(self, last: bool) -> bool:
        """Whether to check after the epoch just recorded (``last``: the fit's final epoch)."""
        if self.fired or self.change is None:
            return False
        if last:
            return self.epochs >= 3
        if self.early_checked or self.epochs < self.after or self.steps < self.min_steps:
            return False
        self.early_checked = True
        return True

    def check(self, accuracy: float, majority: float) -> str | None:
        """The warning's message when training stalled (once), else ``None``.

        Args:
            accuracy: the training accuracy of the epoch just recorded.
            majority: the largest class's share of the training samples.
        """
        if self.fired or self.change is None:
            return None
        if not (accuracy <= majority + self.tolerance and self.change < self.flat):
            return None
        self.fired = True
        return (
            f"training looks stalled after {self.epochs} epochs: training accuracy "
            f"{accuracy:.3f} (predicting the largest class scores {majority:.3f}) and the loss "
            f"flat at {self.previous:.4g} (changed by {self.change:.2g} in the last epoch). "
            "Likely causes: latent collapse (the untrained backbone maps every input to almost "
            "the same latent code, so the prototypes start almost equal and μ ≈ 0 for every "
            "sample); the input scale (standardise the inputs, or keep the CNN's "
            "standardize_input=True); the latent activation (for the CNN keep tanh, its "
            "default: relu and sigmoid latent codes collapse); a backbone learning rate too high (lower bb_lr). "
            "See docs/images.md."
        )
