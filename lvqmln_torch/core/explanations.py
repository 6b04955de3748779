"""The explanations and the reject option of a fitted
[`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork], as functions of the network:
per prediction the winning and the rival prototype with their distances and a certainty, the
data samples nearest to each prototype (exemplars), the projection of the prototypes onto
training samples, and rejection by certainty. The network's methods of the same names call
these. Results are tensors on the network's device; labels are class indices (``classes_``
maps them to the original labels).

The certainty is the relative similarity of Fischer, Hammer and Wersing ("Efficient rejection
strategies for prototype-based classification", Neurocomputing 2015):
``(d_rival − d_winner) / (d_rival + d_winner)`` on squared latent distances, in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .certify import backbone_lipschitz, input_radius, latent_radius
from .explain import (
    CHUNK,
    TARGET_ACCURACY,
    accuracy_rejection_curve,
    check_k,
    check_threshold,
    checked_inputs,
    checked_labels,
    evaluating,
    nearest_samples,
    pick_threshold,
    relative_similarity,
)
from .validation import Integer

__all__ = [
    "explain",
    "predict_with_reject",
    "project_prototypes",
    "prototype_exemplars",
    "rejection_curve",
    "rejection_threshold",
    "set_projection",
]


def explain(network: Any, x: Any) -> dict[str, Tensor]:
    """Why each sample gets its label, computed in chunks on the network's device.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, d)`` or ``(n, C, H, W)`` inputs.

    Returns:
        ``(n,)`` tensors: ``label`` (class index of the winner), ``prototype`` (index of the
        nearest prototype), ``distance`` (its squared latent distance), ``rival_prototype``
        (the nearest prototype of any other class), ``rival_label``, ``rival_distance`` and
        ``confidence`` (see [`relative_similarity`][lvqmln_torch.core.explain.relative_similarity]);
        when the backbone has a ``lipschitz_bound()``, also ``radius``: the certified L2
        radius of each prediction in input units (float64; see
        [`certify`][lvqmln_torch.core.certify.certify]). Without one the key is absent.

    Raises:
        NotFittedError: before the network is fitted.
        ValueError: for inputs of the wrong shape, empty or non-finite.
    """
    x = checked_inputs(network, x)
    labels = network.prototype_labels
    certifiable = callable(getattr(network.backbone, "lipschitz_bound", None))
    parts, radii = [], []
    with evaluating(network):
        lipschitz = backbone_lipschitz(network.backbone) if certifiable else None
        for start in range(0, len(x), CHUNK):
            z = network.backbone(x[start : start + CHUNK].to(network.prototypes))
            parts.append(network.head.winner_rival(network.distances(z), labels))
            if certifiable:  # the latent radius of the prediction itself
                radii.append(
                    latent_radius(z, network.prototypes, labels, None, labels[parts[-1][0]])
                )
    winner, distance, rival, rival_distance = (torch.cat(p) for p in zip(*parts))
    out = {
        "label": labels[winner],
        "prototype": winner,
        "distance": distance,
        "rival_prototype": rival,
        "rival_label": labels[rival],
        "rival_distance": rival_distance,
        "confidence": relative_similarity(distance, rival_distance),
    }
    if certifiable:
        out["radius"] = input_radius(torch.cat(radii), lipschitz)
    return out


def prototype_exemplars(network: Any, x: Any, y: Any = None, k: int = 5) -> tuple[Tensor, Tensor]:
    """The ``k`` samples of ``x`` nearest to each prototype in latent space: exact (ties by
    sample index), in memory bounded by ``k`` and the number of prototypes, on the network's
    device.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, d)`` or ``(n, C, H, W)`` inputs.
        y: ``(n,)`` class indices: only samples of the prototype's own class count (a
            prototype with fewer than ``k`` gets index ``-1`` and distance ``inf``).
        k: exemplars per prototype, in ``[1, n]``.

    Returns:
        ``(indices (P, k), distances (P, k))``: row ``p`` lists the sample indices and squared
        latent distances of prototype ``p``'s exemplars, ascending.

    Raises:
        NotFittedError: before the network is fitted.
        ValueError: for a bad ``k``, bad labels or bad inputs.
    """
    x = checked_inputs(network, x)
    k = check_k(k, len(x))
    labels = None if y is None else checked_labels(network, y, len(x))
    distances, indices = nearest_samples(network, x, k, labels)
    return indices, distances


@torch.no_grad()
def project_prototypes(network: Any, x: Any, y: Any) -> Tensor:
    """Replace each prototype by the latent code of its nearest sample of the same class in
    ``(x, y)`` (the "push" of ProtoPNet, Chen et al., NeurIPS 2019), so every prototype is a
    real, showable example; sets the network's ``prototype_sources``.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, d)`` or ``(n, C, H, W)`` training inputs.
        y: ``(n,)`` their class indices.

    Returns:
        ``(P,)`` indices of the chosen samples (CPU, int64).

    Raises:
        ValueError: when a prototype's class has no sample in ``y``, or for bad inputs.
    """
    x = checked_inputs(network, x)
    labels = checked_labels(network, y, len(x))
    _, indices = nearest_samples(network, x, 1, labels)
    sources = indices[:, 0].cpu()
    set_projection(network, x[sources], sources)
    return sources


@torch.no_grad()
def set_projection(network: Any, samples: Tensor, sources: Tensor) -> None:
    """Set the prototypes to the latent codes of ``samples`` ``(P, …)`` (the training samples
    at indices ``sources``) and record ``sources`` as the network's ``prototype_sources``.

    Raises:
        ValueError: when a source is ``-1`` (no sample of that prototype's class).
    """
    missing = torch.nonzero(sources < 0)[:, 0].tolist()
    if missing:
        classes = network.prototype_labels[missing].tolist()
        raise ValueError(
            f"cannot project prototypes {missing} (classes {classes}): the data have no "
            "sample of their class"
        )
    with evaluating(network):
        latent = network.backbone(samples.to(network.prototypes))
    network.prototypes.copy_(latent)
    network.prototype_sources = sources.detach().cpu().long().clone()


def predict_with_reject(network: Any, x: Any, threshold: float, reject_label: int = -1) -> Tensor:
    """``(n,)`` class indices, with ``reject_label`` where the confidence is below
    ``threshold``.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: inputs as for [`explain`][lvqmln_torch.core.explanations.explain].
        threshold: in [0, 1); 0 rejects nothing.
        reject_label: an integer that is not a class index.

    Raises:
        ValueError: for a threshold outside [0, 1) or a reject label that is a class.
    """
    threshold = check_threshold(threshold)
    k = network.head.n_classes if network.head is not None else 0
    valid = f"an integer outside [0, {k}) (not a class index)"
    reject_label = Integer(-(2**63), text=valid)("reject_label", reject_label)
    if 0 <= reject_label < k:
        raise ValueError(f"reject_label must be {valid}, got {reject_label}")
    info = explain(network, x)
    return torch.where(info["confidence"] < threshold, reject_label, info["label"])


def rejection_curve(network: Any, x: Any, y: Any) -> dict[str, Tensor]:
    """Accuracy on the accepted samples of ``(x, y)`` (``y``: ``(n,)`` class indices) against
    the rejection rate over all thresholds (see
    [`accuracy_rejection_curve`][lvqmln_torch.core.explain.accuracy_rejection_curve])."""
    x = checked_inputs(network, x)
    y = checked_labels(network, y, len(x))
    info = explain(network, x)
    return accuracy_rejection_curve(info["confidence"], info["label"].cpu() == y)


def rejection_threshold(network: Any, x: Any, y: Any, target_accuracy: float) -> float:
    """The smallest threshold whose accuracy on the accepted samples of validation data
    ``(x, y)`` reaches ``target_accuracy`` in (0, 1]: use it with
    [`predict_with_reject`][lvqmln_torch.core.explanations.predict_with_reject].

    Raises:
        ValueError: when no threshold reaches the target (the message gives the best).
    """
    TARGET_ACCURACY("target_accuracy", target_accuracy)
    return pick_threshold(rejection_curve(network, x, y), target_accuracy)
