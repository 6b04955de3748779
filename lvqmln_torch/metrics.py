"""The module's epoch metrics."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric
from typing_extensions import override

__all__ = ["WeightedMean"]


class WeightedMean(MeanMetric):
    """``MeanMetric`` that honours its weights without a NaN check (no host sync per step):
    torchmetrics (1.9) replaces the weights by ones when ``nan_strategy="disable"``, which made
    epoch losses the plain mean of the batch means instead of the per-sample mean. The same
    arithmetic as :class:`~lvqmln_torch.rules.EpochMean`."""

    def __init__(self) -> None:
        super().__init__(nan_strategy="disable")

    @override
    def update(self, value: Tensor | float, weight: Tensor | float = 1.0) -> None:
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weight = torch.as_tensor(weight, dtype=self.dtype, device=self.device)
        weight = torch.broadcast_to(weight, value.shape)
        self.mean_value += (value * weight).sum()
        self.weight += weight.sum()
