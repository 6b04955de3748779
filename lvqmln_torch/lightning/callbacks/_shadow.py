"""Shared machinery of callbacks that keep a shadow copy of the trainable weights (EMA, the
slow weights of lookahead): per-optimizer-step updates, evaluation on the shadow weights,
ending on them, and checkpoints that resume exactly."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from typing_extensions import override

from ...training.rules import ShadowRule, evaluating_rule
from ._state_key import KeyedState

__all__ = ["ShadowWeights", "evaluation_state"]


def _fitting(trainer: pl.Trainer) -> bool:
    return trainer.state.fn == TrainerFn.FITTING


def _trainable(pl_module: pl.LightningModule) -> dict[str, Tensor]:
    # Frozen tensors are never shadowed: they stay bit-identical.
    return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}


class ShadowWeights(KeyedState, ABC):
    """Base class: a shadow copy of every trainable parameter, initialised from the weights the
    first training step starts from and updated after every optimizer step by
    `after_optimizer_step`.

    While it is the *evaluating* shadow (see `evaluates`), validation runs on the shadow
    weights, the fitted model ends on them, and a checkpoint's ``state_dict`` holds them (the
    raw weights travel in the callback state, so resuming continues exactly).
    """

    rule: ShadowRule

    def __init__(self) -> None:
        self.shadow: dict[str, Tensor] | None = None
        self._raw_from_checkpoint: dict[str, Tensor] | None = None
        self._last_step = -1
        self._swapped = False

    # -- subclass API
    @abstractmethod
    def after_optimizer_step(self, params: dict[str, Tensor], step: int) -> None:
        """Update ``self.shadow`` after optimizer step ``step`` (1-based) from ``params``."""

    def evaluates(self, trainer: pl.Trainer) -> bool:
        """Whether this shadow is the one used for evaluation and the final weights (see
        [`evaluating_rule`][lvqmln_torch.training.rules.evaluating_rule])."""
        shadows = [c.rule for c in trainer.callbacks if isinstance(c, ShadowWeights)]
        return evaluating_rule(shadows) is self.rule

    # -- state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"shadow": self.shadow, "last_step": self._last_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shadow = state_dict["shadow"]
        self._last_step = state_dict["last_step"]

    # -- training
    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        params = _trainable(pl_module)
        if self.shadow is None:
            self.shadow = {n: p.detach().clone() for n, p in params.items()}
            self._last_step = trainer.global_step
        else:
            self.shadow = {n: s.to(params[n]) for n, s in self.shadow.items()}

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self._last_step:  # an optimizer step happened
            self._last_step = trainer.global_step
            self.after_optimizer_step(_trainable(pl_module), trainer.global_step)

    # -- evaluation on the shadow weights
    def _swap(self, pl_module: pl.LightningModule) -> None:
        params = _trainable(pl_module)
        with torch.no_grad():
            for name, shadow in self.shadow.items():
                raw = params[name].detach().clone()
                params[name].copy_(shadow)
                shadow.copy_(raw)
        self._swapped = not self._swapped

    @override
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        # trainer.training is False inside fit's validation loop: ask for the fit stage.
        if self.shadow is not None and _fitting(trainer) and self.evaluates(trainer):
            self._swap(pl_module)

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self._swap(pl_module)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        if self.shadow is not None and self.evaluates(trainer):
            params = _trainable(pl_module)
            with torch.no_grad():
                for name, shadow in self.shadow.items():
                    params[name].copy_(shadow)

    # -- checkpoints: the state_dict holds the shadow weights, the raw ones ride along
    @override
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.shadow is None or not self.evaluates(trainer) or not _fitting(trainer):
            return
        state = checkpoint["state_dict"]
        checkpoint.setdefault("raw_weights", {})
        for name, shadow in self.shadow.items():
            # While swapped (saved during validation) the module holds the shadow weights.
            evaluated, raw = (state[name], shadow) if self._swapped else (shadow, state[name])
            checkpoint["raw_weights"][name] = raw.detach().clone()
            state[name] = evaluated.detach().clone()

    @override
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        raw = checkpoint.get("raw_weights")
        if raw and self.evaluates(trainer):
            params = dict(pl_module.named_parameters())
            with torch.no_grad():
                for name, value in raw.items():
                    params[name].copy_(value)


def evaluation_state(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Tensor]:
    """A detached copy of the module's state with the evaluating shadow weights in place: the
    weights the model would end on if training stopped now."""
    state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
    for callback in trainer.callbacks:
        active = isinstance(callback, ShadowWeights) and callback.shadow is not None
        if active and callback.evaluates(trainer):
            source = callback.shadow if not callback._swapped else _trainable(pl_module)
            for name, value in source.items():
                state[name] = value.detach().clone()
    return state
