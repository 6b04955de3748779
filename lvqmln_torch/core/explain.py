"""The math of explaining a prototype network's decisions, on tensors: the certainty of a
prediction, the exact search for the data samples nearest to each prototype (exemplars), the
accuracy-rejection curve and the checks of the explanations' inputs.
[`lvqmln_torch.core.explanations`][lvqmln_torch.core.explanations] applies them to a
[`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork]; the estimator wraps them to
NumPy with its original labels. No Lightning here.

The certainty is the relative similarity of Fischer, Hammer and Wersing ("Efficient rejection
strategies for prototype-based classification", Neurocomputing 2015):
``(d_rival − d_winner) / (d_rival + d_winner)`` on squared latent distances, in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .validation import Integer, Real

__all__ = [
    "CHUNK",
    "accuracy_rejection_curve",
    "check_k",
    "check_threshold",
    "checked_inputs",
    "evaluating",
    "checked_labels",
    "merge_nearest",
    "nearest_samples",
    "pick_threshold",
    "relative_similarity",
    "select_smallest",
]

# Inputs pass the backbone this many at a time (here and in PrototypeNetwork's inference).
CHUNK = 65536
# Exemplar search: at most this many (sample, prototype) distances exist at once.
MAX_DISTANCES = 1 << 24

TARGET_ACCURACY = Real(0.0, 1.0, low_open=True)


def check_threshold(threshold: Any) -> float:
    """A rejection threshold as a float in [0, 1).

    Raises:
        ValueError: naming the valid range.
    """
    return Real(0.0, 1.0, high_open=True)("threshold", threshold)


def relative_similarity(distance: Tensor, rival_distance: Tensor) -> Tensor:
    """``(d_r − d_w) / (d_r + d_w)`` per sample, in [0, 1]; 0 where both are 0, 1 where there
    is no rival (``d_r`` infinite or the dtype's max).

    Args:
        distance: ``(n,)`` squared distance to the winning prototype.
        rival_distance: ``(n,)`` squared distance to the nearest prototype of another class.
    """
    total = rival_distance + distance
    ratio = (rival_distance - distance) / torch.where(total > 0, total, 1)
    ratio = torch.where(torch.isinf(total), 1, ratio)  # no rival: overflowed sum
    return torch.where(total > 0, ratio, 0).clamp(0, 1)


def select_smallest(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per row of ``values (P, m)`` the ``k`` smallest entries (``k <= m``), ties broken by
    position: ``(values (P, k), positions (P, k))`` sorted by (value, position). Deterministic
    on every device (``torch.topk`` alone orders ties arbitrarily)."""
    kth = torch.topk(values, k, dim=1, largest=False, sorted=True).values[:, -1:]
    below = values < kth  # fewer than k per row
    tied = values == kth
    chosen = below | (tied & (tied.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))
    positions = chosen.nonzero()[:, 1].view(len(values), k)  # ascending within each row
    picked = values.gather(1, positions)
    order = picked.argsort(dim=1, stable=True)  # stable: equal values stay by position
    return picked.gather(1, order), positions.gather(1, order)


def merge_nearest(distances: Tensor, indices: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest of candidate lists ``(P, m)`` (distances and sample indices, any
    order), sorted by (distance, index)."""
    order = indices.argsort(dim=1, stable=True)
    picked, positions = select_smallest(distances.gather(1, order), k)
    return picked, indices.gather(1, order).gather(1, positions)


@contextmanager
def evaluating(network: Any) -> Iterator[None]:
    """Eval and inference mode for the block; the training mode is restored after it."""
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        network.train(was_training)


def checked_inputs(network: Any, x: Any) -> Tensor:
    """``x`` as a floating tensor, checked against the fitted network, left where it is and
    in its dtype: chunks move to the network's device and dtype one at a time.

    Raises:
        NotFittedError: before the network is fitted.
        ValueError: for inputs of the wrong shape, empty or non-finite.
    """
    network.check_fitted()
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(network.prototypes.dtype)
    network.check_inputs(x)
    return x


def checked_labels(network: Any, y: Any, n: int) -> Tensor:
    """``y`` as ``(n,)`` class indices (int64, on the CPU).

    Raises:
        ValueError: for a wrong length or shape, or values outside ``[0, n_classes)``.
    """
    k = network.head.n_classes
    valid = f"class indices in [0, {k}) (the positions of the labels in classes_)"
    try:
        y = torch.as_tensor(y).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"y must hold {valid}, got {np.asarray(y).dtype} values") from None
    if y.dim() != 1 or len(y) != n:
        raise ValueError(f"y must have shape ({n},) (one label per sample), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"y must hold {valid}, got {y.dtype} values")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"y must hold {valid}, got values in [{int(y.min())}, {int(y.max())}]")
    return y.long()


def check_k(k: Any, n: int) -> int:
    """``k`` as an int in ``[1, n]``.

    Raises:
        ValueError: naming the valid range.
    """
    k = Integer(1, text=f"an integer in [1, {n}] (the number of samples)")("k", k)
    if k > n:
        raise ValueError(f"k must be an integer in [1, {n}] (the number of samples), got {k}")
    return k


def nearest_samples(
    network: Any, x: Tensor, k: int, y: Tensor | None = None, offset: int = 0
) -> tuple[Tensor, Tensor]:
    """Per prototype the ``k`` samples of ``x`` nearest in latent space, exactly (ties by
    index), streamed in chunks with a running top-k: memory grows with ``k`` and the number
    of prototypes, never with ``len(x)``. With ``y`` only samples of the prototype's class
    count; a prototype with fewer than ``k`` of them gets index ``-1`` and distance ``inf``.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, …)`` checked inputs ([`checked_inputs`][lvqmln_torch.core.explain.checked_inputs]).
        k: candidates per prototype, ``>= 1``.
        y: ``(n,)`` class indices, or ``None``.
        offset: added to the sample indices (the position of ``x`` in a larger data set).

    Returns:
        ``(distances (P, k), indices (P, k))`` on the network's device, sorted ascending by
        squared distance, then index.
    """
    labels = network.prototype_labels
    n_prototypes = len(labels)
    device = labels.device
    dtype = torch.promote_types(network.prototypes.dtype, torch.float32)
    best = torch.full((n_prototypes, k), float("inf"), dtype=dtype, device=device)
    best_index = torch.full((n_prototypes, k), -1, dtype=torch.long, device=device)
    size = max(1, min(CHUNK, MAX_DISTANCES // max(n_prototypes, 1)))
    with evaluating(network):
        for start in range(0, len(x), size):
            chunk = x[start : start + size].to(network.prototypes)
            d = network.distances(network.backbone(chunk)).T  # (P, m)
            d = torch.nan_to_num(d, nan=float("inf"), posinf=float("inf"))  # diverged: never chosen
            if y is not None:
                other = y[start : start + size].to(device)[None, :] != labels[:, None]
                d = d.masked_fill(other, float("inf"))
            values, positions = select_smallest(d, min(k, d.shape[1]))
            best, best_index = merge_nearest(
                torch.cat([best, values], dim=1),
                torch.cat([best_index, positions + (offset + start)], dim=1),
                k,
            )
    return best, torch.where(torch.isinf(best), -1, best_index)


def accuracy_rejection_curve(confidence: Tensor, correct: Tensor) -> dict[str, Tensor]:
    """Accuracy on the accepted samples against the rejection rate, for every threshold that
    changes the accepted set: 0 and each distinct confidence below 1 (a sample is rejected
    when its confidence is below the threshold, so every threshold accepts a sample).

    Args:
        confidence: ``(n,)`` certainties in [0, 1].
        correct: ``(n,)`` whether each prediction is right.

    Returns:
        ``{"threshold", "rejection_rate", "accuracy"}``: float64 arrays, thresholds ascending
        (the rejection rate is non-decreasing in the threshold).
    """
    confidence = confidence.double().cpu()
    ordered, order = confidence.sort(stable=True)
    hits = torch.cat([torch.zeros(1, dtype=torch.float64), correct.cpu()[order].double().cumsum(0)])
    thresholds = torch.unique(torch.cat([confidence.new_zeros(1), ordered]))
    thresholds = thresholds[thresholds < 1]
    rejected = torch.searchsorted(ordered, thresholds, side="left")
    n = len(ordered)
    return {
        "threshold": thresholds,
        "rejection_rate": rejected.double() / n,
        "accuracy": (hits[-1] - hits[rejected]) / (n - rejected).double(),
    }


def pick_threshold(curve: dict[str, Any], target_accuracy: float) -> float:
    """The smallest threshold of an accuracy-rejection curve whose accuracy on the accepted
    samples reaches ``target_accuracy`` (the least rejection that does).

    Raises:
        ValueError: for a target outside (0, 1], or one no threshold reaches.
    """
    target = TARGET_ACCURACY("target_accuracy", target_accuracy)
    accuracy = torch.as_tensor(curve["accuracy"])
    reached = torch.nonzero(accuracy >= target - 1e-12)
    if len(reached) == 0:
        best = int(accuracy.argmax())
        raise ValueError(
            f"no threshold reaches target_accuracy={target:g} on these data: the highest "
            f"accuracy is {float(accuracy[best]):.4f} (threshold "
            f"{float(curve['threshold'][best]):.4f}, rejecting "
            f"{100 * float(curve['rejection_rate'][best]):.1f}% of the samples)"
        )
    return float(curve["threshold"][int(reached[0])])
