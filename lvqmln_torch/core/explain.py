"""Explanations of a prototype network's decisions, on tensors: per prediction the winning
and the rival prototype with their distances and a certainty, the data samples nearest to
each prototype (exemplars), the projection of the prototypes onto training samples, and a
reject option. [`PrototypeExplanations`][lvqmln_torch.core.explain.PrototypeExplanations] adds them to
[`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork] (and so to [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]);
the estimator wraps them to NumPy with its original labels. No Lightning here.

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
    "PrototypeExplanations",
    "accuracy_rejection_curve",
    "check_k",
    "check_threshold",
    "checked_inputs",
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

_TARGET = Real(0.0, 1.0, low_open=True)


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
def _evaluating(network: Any) -> Iterator[None]:
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
    with _evaluating(network):
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
    target = _TARGET("target_accuracy", target_accuracy)
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


class PrototypeExplanations:
    """Explanations and the reject option, as methods of
    [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork]. Results are tensors on the network's
    device; labels are class indices (``classes_`` maps them to the original labels)."""

    #: ``(P,)`` indices of the training samples the prototypes were last projected onto
    #: (see [`project_prototypes`][lvqmln_torch.core.explain.PrototypeExplanations.project_prototypes]), ``None`` if they never were.
    prototype_sources: Tensor | None = None

    def explain(self, x: Any) -> dict[str, Tensor]:
        """Why each sample gets its label, computed in chunks on the network's device.

        Args:
            x: ``(n, d)`` or ``(n, C, H, W)`` inputs.

        Returns:
            ``(n,)`` tensors: ``label`` (class index of the winner), ``prototype`` (index of
            the nearest prototype), ``distance`` (its squared latent distance),
            ``rival_prototype`` (the nearest prototype of any other class), ``rival_label``,
            ``rival_distance`` and ``confidence`` (see [`relative_similarity`][lvqmln_torch.core.explain.relative_similarity]).

        Raises:
            NotFittedError: before the network is fitted.
            ValueError: for inputs of the wrong shape, empty or non-finite.
        """
        x = checked_inputs(self, x)
        parts = []
        with _evaluating(self):
            for start in range(0, len(x), CHUNK):
                chunk = x[start : start + CHUNK].to(self.prototypes)
                distances = self.distances(self.backbone(chunk))
                parts.append(self.head.winner_rival(distances, self.prototype_labels))
        winner, distance, rival, rival_distance = (torch.cat(p) for p in zip(*parts))
        return {
            "label": self.prototype_labels[winner],
            "prototype": winner,
            "distance": distance,
            "rival_prototype": rival,
            "rival_label": self.prototype_labels[rival],
            "rival_distance": rival_distance,
            "confidence": relative_similarity(distance, rival_distance),
        }

    def confidence(self, x: Any) -> Tensor:
        """``(n,)`` relative-similarity certainty of each prediction, in [0, 1] (the
        ``confidence`` of [`explain`][lvqmln_torch.core.explain.PrototypeExplanations.explain])."""
        return self.explain(x)["confidence"]

    def prototype_exemplars(self, x: Any, y: Any = None, k: int = 5) -> tuple[Tensor, Tensor]:
        """The ``k`` samples of ``x`` nearest to each prototype in latent space: exact (ties
        by sample index), in memory bounded by ``k`` and the number of prototypes, on the
        network's device.

        Args:
            x: ``(n, d)`` or ``(n, C, H, W)`` inputs.
            y: ``(n,)`` class indices: only samples of the prototype's own class count (a
                prototype with fewer than ``k`` gets index ``-1`` and distance ``inf``).
            k: exemplars per prototype, in ``[1, n]``.

        Returns:
            ``(indices (P, k), distances (P, k))``: row ``p`` lists the sample indices and
            squared latent distances of prototype ``p``'s exemplars, ascending.

        Raises:
            NotFittedError: before the network is fitted.
            ValueError: for a bad ``k``, bad labels or bad inputs.
        """
        x = checked_inputs(self, x)
        k = check_k(k, len(x))
        labels = None if y is None else checked_labels(self, y, len(x))
        distances, indices = nearest_samples(self, x, k, labels)
        return indices, distances

    @torch.no_grad()
    def project_prototypes(self, x: Any, y: Any) -> Tensor:
        """Replace each prototype by the latent code of its nearest sample of the same class
        in ``(x, y)`` (the "push" of ProtoPNet, Chen et al., NeurIPS 2019), so every
        prototype is a real, showable example; sets `prototype_sources`.

        Args:
            x: ``(n, d)`` or ``(n, C, H, W)`` training inputs.
            y: ``(n,)`` their class indices.

        Returns:
            ``(P,)`` indices of the chosen samples (CPU, int64).

        Raises:
            ValueError: when a prototype's class has no sample in ``y``, or for bad inputs.
        """
        x = checked_inputs(self, x)
        labels = checked_labels(self, y, len(x))
        _, indices = nearest_samples(self, x, 1, labels)
        sources = indices[:, 0].cpu()
        self.set_projection(x[sources], sources)
        return sources

    @torch.no_grad()
    def set_projection(self, samples: Tensor, sources: Tensor) -> None:
        """Set the prototypes to the latent codes of ``samples`` ``(P, …)`` (the training
        samples at indices ``sources``) and record ``sources``.

        Raises:
            ValueError: when a source is ``-1`` (no sample of that prototype's class).
        """
        missing = torch.nonzero(sources < 0)[:, 0].tolist()
        if missing:
            classes = self.prototype_labels[missing].tolist()
            raise ValueError(
                f"cannot project prototypes {missing} (classes {classes}): the data have no "
                "sample of their class"
            )
        with _evaluating(self):
            latent = self.backbone(samples.to(self.prototypes))
        self.prototypes.copy_(latent)
        self.prototype_sources = sources.detach().cpu().long().clone()

    def predict_with_reject(self, x: Any, threshold: float, reject_label: int = -1) -> Tensor:
        """``(n,)`` class indices, with ``reject_label`` where the confidence is below
        ``threshold``.

        Args:
            x: inputs as for [`explain`][lvqmln_torch.core.explain.PrototypeExplanations.explain].
            threshold: in [0, 1); 0 rejects nothing.
            reject_label: an integer that is not a class index.

        Raises:
            ValueError: for a threshold outside [0, 1) or a reject label that is a class.
        """
        threshold = check_threshold(threshold)
        k = self.head.n_classes if self.head is not None else 0
        reject_label = Integer(-(2**63), text=f"an integer outside [0, {k}) (not a class index)")(
            "reject_label", reject_label
        )
        if 0 <= reject_label < k:
            raise ValueError(
                f"reject_label must be an integer outside [0, {k}) (not a class index), "
                f"got {reject_label}"
            )
        info = self.explain(x)
        return torch.where(info["confidence"] < threshold, reject_label, info["label"])

    def accuracy_rejection_curve(self, x: Any, y: Any) -> dict[str, Tensor]:
        """Accuracy on the accepted samples against the rejection rate over all thresholds
        (see [`accuracy_rejection_curve`][lvqmln_torch.core.explain.accuracy_rejection_curve]); ``y`` holds ``(n,)`` class indices."""
        x = checked_inputs(self, x)
        y = checked_labels(self, y, len(x))
        info = self.explain(x)
        return accuracy_rejection_curve(info["confidence"], info["label"].cpu() == y)

    def rejection_threshold(self, x: Any, y: Any, target_accuracy: float) -> float:
        """The smallest threshold whose accuracy on the accepted samples of validation data
        ``(x, y)`` reaches ``target_accuracy`` in (0, 1]: use it with
        [`predict_with_reject`][lvqmln_torch.core.explain.PrototypeExplanations.predict_with_reject].

        Raises:
            ValueError: when no threshold reaches the target (the message gives the best).
        """
        _TARGET("target_accuracy", target_accuracy)
        return pick_threshold(self.accuracy_rejection_curve(x, y), target_accuracy)
