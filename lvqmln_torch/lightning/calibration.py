"""Temperature scaling and conformal scores of the LightningModule on DataLoaders, and its
logged calibration metric (``val_ece``), as functions of the module: the
[`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] methods of the same names call these. The math is
``lvqmln_torch.core.calibration``'s
([`fit_temperature`][lvqmln_torch.core.calibration.fit_temperature],
[`nonconformity`][lvqmln_torch.core.calibration.nonconformity])."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassCalibrationError

from ..core.calibration import DEFAULT_BOUNDS, fit_temperature, nonconformity
from .user_data import unpack

__all__ = [
    "ECE_BINS",
    "calibrate",
    "calibration_error_metric",
    "class_distances_of",
    "nonconformity_from",
    "track_calibration",
]

# 15 equal-width bins: the usual ECE (Guo et al. 2017), as in benchmarks/calibration.py.
ECE_BINS = 15


def calibration_error_metric(n_classes: int) -> MulticlassCalibrationError:
    """The top-label expected calibration error (L1, ``ECE_BINS`` = 15
    bins) logged as ``val_ece``; its inputs are not re-validated each step (no host sync)."""
    return MulticlassCalibrationError(
        num_classes=int(n_classes), n_bins=ECE_BINS, norm="l1", validate_args=False
    )


def _is_loader(data: Any) -> bool:
    """A DataLoader or any iterable of batches, as opposed to an array or tensor of inputs."""
    return not (torch.is_tensor(data) or hasattr(data, "__array__")) and isinstance(data, Iterable)


def class_distances_of(model: Any, loader: Iterable[Any]) -> tuple[Tensor, Tensor]:
    """The class-wise minimum squared distances and labels of every batch of a loader.

    Args:
        model: a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] (or any fitted
            [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork]).
        loader: yields ``(x, y)``, ``(x, y, sample_weight)`` or ``{"x", "y"}`` batches with
            class indices ``y`` (see [`unpack`][lvqmln_torch.lightning.user_data.unpack]).

    Returns:
        ``(pooled (n, k), y (n,))`` on the model's device.

    Raises:
        ValueError: for a loader without a batch, or a malformed batch.
    """
    pooled, labels = [], []
    device = model.prototypes.device
    for batch in loader:
        x, y, _ = unpack(batch)  # sample weights play no part: T calibrates the data as they are
        pooled.append(model.class_distances(x))
        labels.append(torch.as_tensor(y).to(device))
    if not pooled:
        raise ValueError("the calibration loader yields no batch")
    return torch.cat(pooled), torch.cat(labels)


def track_calibration(module: Any, stats: Any, distances: Tensor, y: Tensor) -> None:
    """In a validation step: add the batch's probabilities (at the current temperature) to
    the module's ``val_ece``, and hand it to ``module.log`` on the epoch's first batch (as the
    loss and accuracy: Lightning computes and resets it at the epoch's end).

    Args:
        module: the [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] in its step.
        stats: the step's [`EpochStats`][lvqmln_torch.lightning.metrics.EpochStats] (only
            the module's ``val_stats`` count).
        distances: ``(n, P)`` squared latent distances of the batch.
        y: ``(n,)`` its class indices.
    """
    if stats is not module.val_stats:
        return
    probabilities = module.head.probabilities(distances.detach(), module.prototype_labels)
    module.val_ece.update(probabilities, y)
    if stats.update_count == 1:
        module.log("val_ece", module.val_ece, on_step=False, on_epoch=True)


def calibrate(
    module: Any,
    data: Any,
    y: Any = None,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> float:
    """Fit a module's temperature on held-out data (never the training data) and keep it in
    its ``head.temperature`` buffer (saved in checkpoints, exported). Labels are unchanged.

    Args:
        module: a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].
        data: a DataLoader (or iterable) of ``(x, y[, w])`` batches, or ``(n, …)`` inputs.
        y: ``(n,)`` class indices when ``data`` holds inputs; ``None`` for a loader.
        bounds: ``(low, high)`` limits of the temperature.
        reduce: sums a 0-dim tensor over processes when every process holds a shard
            (the [`TemperatureCalibration`][lvqmln_torch.lightning.callbacks.TemperatureCalibration]
            callback passes the strategy's).

    Returns:
        The fitted temperature.

    Raises:
        ValueError: for labels given with a loader or missing without one, labels outside
            ``[0, n_classes)``, or no data.
    """
    if _is_loader(data):
        if y is not None:
            raise ValueError("calibrate(loader) reads the labels from the batches: drop y")
        pooled, labels = class_distances_of(module, data)
    elif y is None:
        raise ValueError("calibrate(x, y) needs the labels y of the inputs x")
    else:
        pooled, labels = module.class_distances(data), torch.as_tensor(y)
    temperature = fit_temperature(pooled, labels, bounds, reduce)
    module.set_temperature(temperature)
    return temperature


def nonconformity_from(module: Any, loader: Iterable[Any]) -> tuple[Tensor, Tensor]:
    """The prototype-native nonconformity scores μ of every class for every sample of a
    loader, with the samples' labels: ``scores[arange(n), y]`` calibrates a conformal
    predictor (crepes' ``ConformalClassifier.fit``), ``scores`` of new data give its sets.

    Args:
        module: a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].
        loader: yields ``(x, y[, w])`` or ``{"x", "y"}`` batches.

    Returns:
        ``(scores (n, k), y (n,))`` on the module's device.

    Raises:
        ValueError: for a loader without a batch, or a malformed batch.
    """
    pooled, labels = class_distances_of(module, loader)
    return nonconformity(pooled), labels
