"""Calibrated probabilities and conformal scores of a prototype network, on tensors.

Temperature scaling (Guo et al., "On calibration of modern neural networks", ICML 2017) on the
class-wise minimum squared distances ``D (n, k)``: probabilities ``softmax(−D / T)`` with one
temperature ``T`` fitted on held-out data by minimising the negative log-likelihood. The NLL
is convex in ``1 / T`` (a log-sum-exp of linear functions minus a linear one), so it has one
minimum along ``log T``: a bounded golden-section search over ``log T`` finds it, in float64
and deterministically (the same data give the same ``T`` on every machine). ``T`` rescales
every row by the same positive factor, so the predicted class never changes.

The prototype-native nonconformity score of a candidate class ``c`` is GLVQ's relative
distance ``μ_c = (d_c − d_¬c) / (d_c + d_¬c)`` (``d_c`` the nearest prototype of class ``c``,
``d_¬c`` the nearest of any other class), in [−1, 1]; negative only for the predicted class.
Conformal libraries (MAPIE, crepes) take it as their score: see ``docs/trust.md``.

The functions of a network at the end ([`calibrate`][lvqmln_torch.core.calibration.calibrate],
[`nonconformity_of`][lvqmln_torch.core.calibration.nonconformity_of], ...) are offered as
[`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork]'s methods of the same names
(``nonconformity`` for ``nonconformity_of``). No Lightning here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import functional as F

__all__ = [
    "DEFAULT_BOUNDS",
    "calibrate",
    "check_bounds",
    "class_distances",
    "fit_temperature",
    "nonconformity",
    "nonconformity_of",
    "reliability_bins",
    "set_temperature",
    "temperature_nll",
]

# The temperature is searched in [1e-4, 1e4]: squared latent distances of a sigmoid or tanh
# backbone lie in [0, 4·latent_dim], so this spans "one-hot" to "uniform" for any of them.
DEFAULT_BOUNDS = (1e-4, 1e4)
# Golden-section stops when the bracket of log T is this narrow (T to 0.01 %): ~25 evaluations.
_LOG_TOL = 1e-4
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def check_bounds(bounds: Any) -> tuple[float, float]:
    """``bounds`` as ``(low, high)`` floats with ``0 < low < high < inf``.

    Raises:
        ValueError: naming the valid range.
    """
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be a pair (low, high) of temperatures, got {bounds!r}"
        ) from None
    if not (0 < low < high < math.inf):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got ({low}, {high})")
    return low, high


def _check_pooled(pooled: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if pooled.dim() != 2 or pooled.shape[1] < 2:
        raise ValueError(
            f"class distances must have shape (n, k) with k >= 2, got {tuple(pooled.shape)}"
        )
    y = torch.as_tensor(y, device=pooled.device)
    if y.dim() != 1 or len(y) != len(pooled):
        raise ValueError(
            f"labels must have shape ({len(pooled)},) (one per sample), got {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be class indices (integers), got {y.dtype}")
    k = pooled.shape[1]
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        raise ValueError(
            f"labels must be class indices in [0, {k}), got values in "
            f"[{int(y.min())}, {int(y.max())}]"
        )
    if not bool(torch.isfinite(pooled).all()):
        raise ValueError("the class distances contain NaN or Inf values (a diverged model?)")
    return pooled.double(), y.long()


def temperature_nll(pooled: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Summed negative log-likelihood of ``softmax(−pooled / T)`` at the true classes.

    Args:
        pooled: ``(n, k)`` class-wise minimum squared distances.
        y: ``(n,)`` class indices.
        temperature: ``T > 0``.

    Returns:
        A 0-dim tensor in ``pooled``'s dtype, on its device.
    """
    logits = -pooled / temperature
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, y[:, None])[:, 0]).sum()


def fit_temperature(
    pooled: Tensor,
    y: Tensor,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> float:
    """The temperature that minimises the NLL of ``softmax(−pooled / T)`` on ``(pooled, y)``.

    A bounded golden-section search over ``log T`` in float64 (the NLL has one minimum
    there), keeping ``T = 1`` when that is at least as good. Warns when the NLL at a bound is
    as low as at the fitted ``T`` (it never rises towards that bound): the calibration data
    are separated with a margin (too few, or training samples) or carry no signal.

    Args:
        pooled: ``(n, k)`` class-wise minimum squared distances of held-out samples.
        y: ``(n,)`` their class indices.
        bounds: ``(low, high)`` limits of ``T``.
        reduce: sums a 0-dim tensor over processes (``trainer.strategy.reduce`` with
            ``"sum"``): every process holds a shard of the data and gets the same ``T``.

    Returns:
        ``T`` as a float.

    Raises:
        ValueError: for bad shapes, labels outside ``[0, k)``, non-finite distances, no
            samples at all, or invalid bounds.
    """
    low, high = check_bounds(bounds)
    pooled, y = _check_pooled(pooled, y)
    total = reduce or (lambda t: t)
    count = float(total(pooled.new_tensor(float(len(y)))))
    if count == 0:
        raise ValueError("no samples to fit the temperature on (the calibration data are empty)")
    cache: dict[float, float] = {}

    def f(u: float) -> float:
        if u not in cache:
            cache[u] = float(total(temperature_nll(pooled, y, math.exp(u))))
        return cache[u]

    a, b = math.log(low), math.log(high)
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    while b - a > _LOG_TOL:
        # On a tie move left: the flat region of the NLL is the large-T end (all ≈ log k).
        if f(c) <= f(d):
            b, d = d, c
            c = b - _INV_PHI * (b - a)
        else:
            a, c = c, d
            d = a + _INV_PHI * (b - a)
    best = min(cache, key=lambda u: (cache[u], abs(u)))  # ties: the T nearest to 1
    if low <= 1.0 <= high and f(0.0) <= cache[best]:
        best = 0.0
    # No rise of the NLL towards a bound: separable data (towards low) or no signal (high).
    if min(f(math.log(low)), f(math.log(high))) <= cache[best]:
        warnings.warn(
            f"the NLL of the fitted temperature {math.exp(best):.3g} is no lower than at a "
            f"bound of {(low, high)}: "
            "the calibration data are separated with a margin (use held-out samples, not "
            "training ones, and more of them) or the model carries no signal",
            stacklevel=2,
        )
    return math.exp(best)


def nonconformity(pooled: Tensor) -> Tensor:
    """GLVQ's relative distance ``μ_c = (d_c − d_¬c) / (d_c + d_¬c)`` of every class.

    Args:
        pooled: ``(n, k)`` class-wise minimum squared distances, ``k >= 2``.

    Returns:
        ``(n, k)`` scores in [−1, 1] (higher: the class fits the sample worse); per row only
        the nearest class can be negative. Equals ``glvq_mu`` of that class as target.
    """
    two = pooled.topk(2, dim=1, largest=False).values  # (n, 2): nearest and second class
    nearest = pooled.argmin(dim=1, keepdim=True)
    columns = torch.arange(pooled.shape[1], device=pooled.device)[None, :]
    other = torch.where(columns == nearest, two[:, 1:2], two[:, 0:1])
    return (pooled - other) / (pooled + other + F._MU_EPS)


def reliability_bins(probabilities: Tensor, y: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Top-label reliability statistics on ``n_bins`` equal-width confidence bins, binned as
    torchmetrics' ``MulticlassCalibrationError`` bins them (its ECE is ``ece`` here).

    Args:
        probabilities: ``(n, k)`` class probabilities.
        y: ``(n,)`` true class indices.
        n_bins: number of bins in [0, 1].

    Returns:
        float64 CPU tensors: ``edges (n_bins + 1,)``; per bin ``confidence``, ``accuracy``
        (mean top probability and accuracy, NaN for an empty bin) and ``count``
        ``(n_bins,)``; ``ece`` (0-dim): ``Σ_b count_b / n · |accuracy_b − confidence_b|``.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    probabilities = torch.as_tensor(probabilities).detach().double().cpu()
    y = torch.as_tensor(y).detach().cpu()
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == y).double()
    edges = torch.linspace(0, 1, int(n_bins) + 1, dtype=torch.float64)
    # Bin b holds confidences in (edge_b, edge_{b+1}] (0 in the first): torchmetrics' rule.
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, int(n_bins) - 1)
    count = torch.bincount(index, minlength=int(n_bins)).double()
    conf_sum = torch.zeros(int(n_bins), dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(int(n_bins), dtype=torch.float64).index_add_(0, index, correct)
    safe = count.clamp_min(1)
    empty = count == 0
    mean_conf = torch.where(empty, torch.nan, conf_sum / safe)
    mean_acc = torch.where(empty, torch.nan, acc_sum / safe)
    ece = ((acc_sum - conf_sum).abs() / max(len(y), 1)).sum()
    return {
        "edges": edges,
        "confidence": mean_conf,
        "accuracy": mean_acc,
        "count": count,
        "ece": ece,
    }


def set_temperature(network: Any, temperature: float) -> None:
    """Set the temperature ``T`` of a network's probabilities (device and dtype kept).

    Args:
        network: a built [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        temperature: ``T``.

    Raises:
        ValueError: unless ``0 < T < inf``.
    """
    value = float(temperature)
    if not (0 < value < math.inf):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    network.head.temperature.fill_(value)


def class_distances(network: Any, x: Any) -> Tensor:
    """Squared distance from each sample to the nearest prototype of each class, computed in
    chunks in eval and inference mode.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, …)`` inputs (array or tensor).

    Returns:
        ``(n, k)`` distances (float32 or wider) on the network's device.
    """
    return network.inference(
        x,
        lambda b: F.stratified_min_pooling(
            network.distances(network.backbone(b)), network.prototype_labels, network.head.n_classes
        ),
    )


def nonconformity_of(network: Any, x: Any, y: Any = None) -> Tensor:
    """The prototype-native nonconformity score μ of a network's inputs (see
    [`nonconformity`][lvqmln_torch.core.calibration.nonconformity]).

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, …)`` inputs.
        y: optional ``(n,)`` class indices.

    Returns:
        ``(n, k)`` scores of every class, or ``(n,)`` scores of the classes ``y``.

    Raises:
        ValueError: for labels of the wrong shape or outside ``[0, k)``.
    """
    scores = nonconformity(class_distances(network, x))
    if y is None:
        return scores
    _, y = _check_pooled(scores, y)
    return scores.gather(1, y[:, None])[:, 0]


def calibrate(network: Any, x: Any, y: Any, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> float:
    """Fit a network's temperature on held-out samples (never the training ones) and keep it in
    its ``head.temperature`` buffer: probabilities change, predictions do not.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, …)`` held-out inputs.
        y: ``(n,)`` their class indices.
        bounds: ``(low, high)`` limits of ``T``.

    Returns:
        The fitted ``T``.

    Raises:
        ValueError: see [`fit_temperature`][lvqmln_torch.core.calibration.fit_temperature].
    """
    temperature = fit_temperature(class_distances(network, x), torch.as_tensor(y), bounds)
    set_temperature(network, temperature)
    return temperature
