"""The callbacks the LightningModule brings to every fit (its ``configure_callbacks``): stall
detection and one callback per shadow-weight rule of its hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.callbacks import Callback

from ...training.rules import LookaheadRule, shadow_rules
from ._state_key import not_attached
from .ema import ExponentialMovingAverage
from .lookahead import Lookahead
from .stall import StallDetection

__all__ = ["default_callbacks"]


def default_callbacks(hparams: Mapping[str, Any], attached: list[Callback]) -> list[Callback]:
    """The module's own callbacks not yet on the Trainer.

    A [`StallDetection`][lvqmln_torch.lightning.callbacks.StallDetection] with the default
    settings unless the user attached one (any settings: it is kept, not replaced); an
    [`ExponentialMovingAverage`][lvqmln_torch.lightning.callbacks.ExponentialMovingAverage]
    for ``ema_decay`` and a [`Lookahead`][lvqmln_torch.lightning.callbacks.Lookahead] for
    ``lookahead``, in the order
    [`shadow_rules`][lvqmln_torch.training.rules.shadow_rules] decides. Callbacks the
    Trainer already holds with the same ``state_key`` are left out (left by an earlier
    ``fit``, ``validate``, ``test`` or ``predict``, or passed with the same settings), so
    Lightning replaces nothing and reports no override.

    Args:
        hparams: the module's hyperparameters (``ema_decay``, ``lookahead``).
        attached: the Trainer's callbacks (empty without a Trainer).

    Returns:
        The callbacks for ``configure_callbacks`` to return.
    """
    stall = any(isinstance(c, StallDetection) for c in attached)
    callbacks: list[Callback] = [] if stall else [StallDetection()]
    for rule in shadow_rules(hparams["ema_decay"], hparams["lookahead"]):
        if isinstance(rule, LookaheadRule):
            callbacks.append(Lookahead(rule.sync_period, rule.slow_step_size))
        else:
            callbacks.append(ExponentialMovingAverage(rule.decay))
    return not_attached(callbacks, attached)
