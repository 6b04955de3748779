"""The module's epoch metrics: one accumulator per stage, updated once per step, logged as two
values (loss and accuracy) by [`log_epoch_metrics`][lvqmln_torch.lightning.metrics.log_epoch_metrics]."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from typing_extensions import override

__all__ = ["STAGES", "EpochStats", "EpochValue", "attach_epoch_stats", "log_epoch_metrics"]

STAGES = ("train", "val", "test")  # the stages with epoch metrics, in registration order


class EpochStats(Metric):
    """Sums of one stage's epoch: the weighted loss, its weight, correct predictions and
    samples, as four scalar states summed across ranks when computed (one collective).

    One [`add`][lvqmln_torch.lightning.metrics.EpochStats.add] per step costs a handful of in-place adds on the device and never waits
    for it. The epoch loss is the per-sample (weighted) mean, ``Σ loss_b · W_b / Σ W_b`` with
    ``W_b`` the batch's weight (its size when unweighted): the arithmetic of
    [`EpochMean`][lvqmln_torch.training.rules.EpochMean], so stopping rules compare the same numbers on
    both engines.

    Attributes:
        loss: the epoch loss, an [`EpochValue`][lvqmln_torch.lightning.metrics.EpochValue] to hand to ``self.log``.
        accuracy: the fraction of samples whose nearest prototype has their class.
    """

    full_state_update = False

    def __init__(self) -> None:
        # no cache: add() bypasses the wrapper that would invalidate it
        super().__init__(compute_with_cache=False)
        for name in ("loss_total", "weight", "correct", "count", "finite_steps"):
            self.add_state(name, torch.zeros(()), dist_reduce_fx="sum")
        # Not submodules (the module registers them itself; they hold no state).
        object.__setattr__(self, "loss", EpochValue(self, 0))
        object.__setattr__(self, "accuracy", EpochValue(self, 1))
        object.__setattr__(self, "_steps", 0)  # a plain int: no Module.__setattr__ per step

    @property
    @override
    def update_count(self) -> int:
        return self._steps

    @property
    @override
    def update_called(self) -> bool:
        return self._steps > 0

    @override
    def update(self, loss: Tensor, weight: Tensor | int, correct: Tensor, count: int) -> None:
        """Add one step (torchmetrics' entry point; see [`add`][lvqmln_torch.lightning.metrics.EpochStats.add])."""
        self.add(loss, weight, correct, count)

    def add(self, loss: Tensor, weight: Tensor | int, correct: Tensor, count: int) -> None:
        """Add one step: [`update`][lvqmln_torch.lightning.metrics.EpochStats.update] without torchmetrics' per-call wrapper (about 15 µs of
        Python a step, mostly ``nn.Module.__setattr__``).

        Args:
            loss: ``()`` the batch's (weighted) mean loss.
            weight: the batch's total sample weight, or its size when unweighted.
            correct: ``()`` number of correctly classified samples.
            count: the batch's size.
        """
        object.__setattr__(self, "_steps", self._steps + 1)
        # rounded as EpochMean rounds: the loss to the state's dtype, then the product
        self.loss_total.add_(loss.to(self.loss_total.dtype) * weight)
        self.weight.add_(weight)
        self.correct.add_(correct)
        self.count.add_(count)
        # the steps before the total first turned non-finite (it stays so): locates a NaN
        # without reading the device in every step
        self.finite_steps.add_(torch.isfinite(self.loss_total))

    @override
    def reset(self) -> None:
        super().reset()
        object.__setattr__(self, "_steps", 0)

    @override
    def compute(self) -> tuple[Tensor, Tensor]:
        """``(epoch loss, accuracy)`` as scalars."""
        return self.loss_total / self.weight, self.correct / self.count


class EpochValue(Metric):
    """One value of an [`EpochStats`][lvqmln_torch.lightning.metrics.EpochStats] (its loss or its accuracy), for ``self.log``: it
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


def attach_epoch_stats(module: Any) -> None:
    """Give a module one [`EpochStats`][lvqmln_torch.lightning.metrics.EpochStats] per stage
    (``train_stats``, ``val_stats``, ``test_stats``) and their logged values as attributes
    (``train_loss``, ..., ``test_acc``): Lightning finds a logged metric by its attribute."""
    for stage in STAGES:
        setattr(module, f"{stage}_stats", EpochStats())
    for name, value in (("loss", "loss"), ("acc", "accuracy")):
        for stage in STAGES:
            setattr(module, f"{stage}_{name}", getattr(getattr(module, f"{stage}_stats"), value))


def log_epoch_metrics(module: Any, stage: str, prog_bar: bool) -> None:
    """Hand a stage's loss and accuracy (``{stage}_loss``, ``{stage}_acc``) to ``module.log``
    (per epoch).

    The sums accumulate in every step and Lightning computes and resets them at the epoch's
    end, so registering them once per epoch logs the same values as once per step, while each
    ``self.log`` call costs Lightning about a millisecond of Python. Logged on the first update
    after a reset: an epoch's first batch, or a run resumed mid-epoch.

    Args:
        module: the [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] in its step; its
            ``{stage}_stats`` are an [`EpochStats`][lvqmln_torch.lightning.metrics.EpochStats].
        stage: ``"train"``, ``"val"`` or ``"test"``.
        prog_bar: show both on the progress bar.
    """
    stats = getattr(module, f"{stage}_stats")
    if stats.update_count == 1:
        for name, value in (("loss", stats.loss), ("acc", stats.accuracy)):
            module.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, prog_bar=prog_bar)
