"""The module's epoch metrics: one accumulator per stage, updated once per step, logged as two
values (loss and accuracy)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from typing_extensions import override

__all__ = ["EpochStats", "EpochValue"]


class EpochStats(Metric):
    """Sums of one stage's epoch: the weighted loss, its weight, correct predictions and
    samples, as four scalar states summed across ranks when computed (one collective).

    One ``update`` per step costs a handful of in-place adds on the device and never waits
    for it. The epoch loss is the per-sample (weighted) mean, ``Σ loss_b · W_b / Σ W_b`` with
    ``W_b`` the batch's weight (its size when unweighted): the arithmetic of
    :class:`~lvqmln_torch.rules.EpochMean`, so stopping rules compare the same numbers on
    both engines.

    Attributes:
        loss: the epoch loss, an :class:`EpochValue` to hand to ``self.log``.
        accuracy: the fraction of samples whose nearest prototype has their class.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("loss_total", "weight", "correct", "count"):
            self.add_state(name, torch.zeros(()), dist_reduce_fx="sum")
        # Not submodules (the module registers them itself; they hold no state).
        object.__setattr__(self, "loss", EpochValue(self, 0))
        object.__setattr__(self, "accuracy", EpochValue(self, 1))

    @override
    def update(
        self,
        loss: Tensor,
        weight: Tensor | int,
        correct: Tensor,
        count: int,
    ) -> None:
        """Add one step.

        Args:
            loss: ``()`` the batch's (weighted) mean loss.
            weight: the batch's total sample weight, or its size when unweighted.
            correct: ``()`` number of correctly classified samples.
            count: the batch's size.
        """
        # rounded as EpochMean rounds: the loss to the state's dtype, then the product
        self.loss_total.add_(loss.to(self.loss_total.dtype) * weight)
        self.weight.add_(weight)
        self.correct.add_(correct)
        self.count.add_(count)

    @override
    def compute(self) -> tuple[Tensor, Tensor]:
        """``(epoch loss, accuracy)`` as scalars."""
        return self.loss_total / self.weight, self.correct / self.count


class EpochValue(Metric):
    """One value of an :class:`EpochStats` (its loss or its accuracy), for ``self.log``: it
    holds no state of its own, computes (and so syncs) through its parent, and resetting it
    resets the parent."""

    def __init__(self, parent: EpochStats, index: int) -> None:
        # no cache: the parent may have been updated since the last compute
        super().__init__(compute_with_cache=False)
        object.__setattr__(self, "_parent", parent)  # not a submodule (see EpochStats)
        self._index = index

    @property
    @override
    def update_called(self) -> bool:
        return self._parent.update_called

    @override
    def update(self) -> None:
        raise TypeError("update the EpochStats this value belongs to")

    @override
    def compute(self) -> Tensor:
        return self._parent.compute()[self._index]

    @override
    def reset(self) -> None:
        super().reset()
        self._parent.reset()
