"""Certified robustness of nearest-prototype decisions in a backbone's latent space.

With squared Euclidean distances ``d_k = ‖z − w_k‖²``, winner ``w_i`` (class ``c``) and any
prototype ``w_j`` of another class, ``d_j − d_i = 2 z·(w_i − w_j) + ‖w_j‖² − ‖w_i‖²`` is
linear in ``z``: the two prototypes tie on the bisecting hyperplane, at distance
``(d_j − d_i) / (2 ‖w_i − w_j‖)`` from ``z``. The label cannot change before ``z`` reaches one of
those hyperplanes, so their nearest is a certified latent radius (Voráček and Hein, "Provably
adversarially robust nearest prototype classifiers", ICML 2022); with one prototype per class
the decision regions are the polytopes the hyperplanes bound, and it is the exact distance to
the decision boundary. A backbone with ``‖f(x) − f(x')‖ ≤ L ‖x − x'‖`` turns it into a certified
L2 radius in input space: the latent radius over ``L`` (see
[`sequential_bound`][lvqmln_torch.core.lipschitz.sequential_bound] and ``lipschitz_bound()`` of the backbones).

A radius ``r`` certifies that no perturbation of L2 norm below ``r`` changes the prediction;
the certified accuracy at ``ε`` is the share of samples predicted correctly with ``r ≥ ε``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .explain import CHUNK, checked_inputs, checked_labels, evaluating
from .validation import Real

__all__ = [
    "add_robust_term",
    "backbone_lipschitz",
    "certified_accuracy",
    "certify",
    "certify_latent",
    "check_eps",
    "input_radius",
    "latent_radius",
    "lipschitz_bound",
    "radii_and_predictions",
    "robust_hinge",
    "signed_margin",
]


def backbone_lipschitz(backbone: nn.Module) -> float:
    """The backbone's ``lipschitz_bound()``: an upper bound on its L2 Lipschitz constant.

    Raises:
        TypeError: for a backbone without a ``lipschitz_bound()`` method.
        ValueError: when it returns a negative or non-finite value.
    """
    method = getattr(backbone, "lipschitz_bound", None)
    if not callable(method):
        raise TypeError(
            f"cannot certify: the backbone {type(backbone).__name__} has no lipschitz_bound() "
            "method. The built-in 'mlp', 'cnn' and 'identity' backbones have one; give your "
            "own backbone a lipschitz_bound() -> float returning an upper bound on its L2 "
            "Lipschitz constant (lvqmln_torch.core.lipschitz.sequential_bound computes one for "
            "chains of Linear, Conv2d, pooling and activation layers), or use certify_latent"
        )
    bound = float(method())
    if not bound >= 0.0 or bound == float("inf"):
        raise ValueError(f"the backbone's lipschitz_bound() returned {bound}; it must be finite")
    return bound


def _wide(t: Tensor) -> Tensor:
    # float64 where the device has it (MPS does not): the margins difference distances.
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


def signed_margin(z: Tensor, prototypes: Tensor, prototype_labels: Tensor, y: Tensor) -> Tensor:
    """The signed latent distance to the nearest bisector between the nearest prototype of
    class ``y`` and any prototype of another class: ``min_j (d_j − d_i) / (2 ‖w_i − w_j‖)``, ``i``
    the nearest prototype of class ``y``, ``j`` over the other classes' prototypes. Positive
    where ``y`` is predicted (with that margin), negative or 0 where it is not;
    differentiable (the robust objective's margin), in the inputs' dtype.

    Args:
        z: ``(n, latent_dim)`` latent codes.
        prototypes: ``(P, latent_dim)``.
        prototype_labels: ``(P,)`` class indices.
        y: ``(n,)`` class indices.

    Returns:
        ``(n,)`` margins (``inf`` where no prototype of another class exists).
    """
    y = y.to(prototype_labels.device)
    squares = (prototypes * prototypes).sum(dim=1)
    # d_k − ‖z‖²: the part of the distances that differs between prototypes.
    partial = squares[None, :] - 2.0 * (z @ prototypes.T)
    own = prototype_labels[None, :] == y[:, None]
    inf = partial.new_tensor(float("inf"))
    winner = torch.where(own, partial, inf).argmin(dim=1)
    # ‖w_i − w_j‖² for the winners' rows only: (n, P), never (P, P, latent_dim).
    won = prototypes.index_select(0, winner)
    gaps = squares[winner][:, None] + squares[None, :] - 2.0 * (won @ prototypes.T)
    gap = gaps.clamp_min(torch.finfo(z.dtype).tiny).sqrt()
    numerator = partial - partial.gather(1, winner[:, None])
    return torch.where(own, inf, numerator / (2.0 * gap)).amin(dim=1)


def latent_radius(
    z: Tensor,
    prototypes: Tensor,
    prototype_labels: Tensor,
    y: Tensor | None = None,
    predicted: Tensor | None = None,
) -> Tensor:
    """Certified L2 radii in latent space (computed in float64; no gradient).

    Args:
        z: ``(n, latent_dim)`` latent codes.
        prototypes: ``(P, latent_dim)``.
        prototype_labels: ``(P,)`` class indices.
        y: optional ``(n,)`` class indices: 0 where the prediction is not ``y``.
        predicted: optional ``(n,)`` predicted classes (the network's, from its own
            distances); by default the nearest prototype's class in float64. Where a near tie
            makes them differ, the radius is 0.

    Returns:
        ``(n,)`` radii ≥ 0: no latent perturbation of smaller norm changes the prediction.
    """
    with torch.no_grad():
        z, prototypes = _wide(z), _wide(prototypes)
        if predicted is None:
            partial = (prototypes * prototypes).sum(dim=1)[None, :] - 2.0 * (z @ prototypes.T)
            predicted = prototype_labels[partial.argmin(dim=1)]  # first index on ties, as wtac
        predicted = predicted.to(prototype_labels.device)
        margin = signed_margin(z, prototypes, prototype_labels, predicted).clamp_min(0.0)
        if y is not None:
            margin = torch.where(predicted == y.to(predicted.device), margin, 0.0)
        return margin


def robust_hinge(
    z: Tensor,
    prototypes: Tensor,
    prototype_labels: Tensor,
    y: Tensor,
    eps: float,
    lipschitz: float,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """The robust objective: the (weighted) mean of ``max(0, ε − margin / L)`` with the
    [`signed_margin`][lvqmln_torch.core.certify.signed_margin] of the true class, so that
    training pushes every sample's certified input radius to ``ε`` (Voráček and Hein 2022).

    Args:
        z: ``(n, latent_dim)`` latent codes (with gradient).
        prototypes: ``(P, latent_dim)``.
        prototype_labels: ``(P,)`` class indices.
        y: ``(n,)`` class indices.
        eps: the training radius ``ε`` in input space.
        lipschitz: the backbone's Lipschitz bound ``L`` (a constant for this step).
        sample_weight: optional ``(n,)`` non-negative weights.

    Returns:
        A scalar tensor.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        margin = signed_margin(z.to(dtype), prototypes.to(dtype), prototype_labels, y)
    # L = 0 (a constant backbone): every correct prediction is certified at any radius.
    margin = margin / max(lipschitz, 1e-30)
    values = torch.relu(eps - margin)
    if sample_weight is None:
        return values.mean()
    sample_weight = sample_weight.to(values.dtype)
    return (sample_weight * values).sum() / sample_weight.sum()


def add_robust_term(
    network: Any, loss: Tensor, z: Tensor, y: Tensor, sample_weight: Tensor | None
) -> Tensor:
    """``loss`` plus ``robust_weight`` times the [`robust_hinge`][lvqmln_torch.core.certify.robust_hinge]
    at ``robust_eps`` (the network's hyperparameters; ``loss`` itself when ``robust_eps`` is
    0 or absent), with the backbone's current Lipschitz bound as ``L`` (its
    ``nominal_lipschitz()`` when it has one: the bound a Lipschitz parametrisation promises).

    Args:
        network: a network with ``hparams``, ``backbone``, ``prototypes``, ``prototype_labels``.
        loss: the scalar GLVQ loss.
        z: ``(n, latent_dim)`` latent codes of the batch.
        y: ``(n,)`` class indices.
        sample_weight: optional ``(n,)`` weights.
    """
    hparams = getattr(network, "hparams", {})
    eps = float(hparams.get("robust_eps") or 0.0)
    if eps <= 0.0:
        return loss
    # A Lipschitz-controlled backbone's promised bound (cheap), else the exact one.
    nominal = getattr(network.backbone, "nominal_lipschitz", None)
    lipschitz = nominal() if callable(nominal) else None
    if lipschitz is None:
        with torch.no_grad():
            lipschitz = backbone_lipschitz(network.backbone)
    hinge = robust_hinge(
        z, network.prototypes, network.prototype_labels, y, eps, lipschitz, sample_weight
    )
    return loss + float(hparams.get("robust_weight", 1.0)) * hinge


def check_eps(eps: Any) -> Tensor:
    """``eps`` (a number or a sequence of them, each ≥ 0) as a 1-D float64 tensor.

    Raises:
        ValueError: for an empty, negative or non-finite ``eps``.
    """
    values = [eps] if isinstance(eps, int | float) or getattr(eps, "ndim", 1) == 0 else eps
    check = Real(0.0)
    values = [check("eps", float(v)) for v in values]
    if not values:
        raise ValueError("eps must hold at least one radius, got an empty sequence")
    return torch.tensor(values, dtype=torch.float64)


def lipschitz_bound(network: Any) -> float:
    """The backbone's upper bound on its L2 Lipschitz constant (see
    [`backbone_lipschitz`][lvqmln_torch.core.certify.backbone_lipschitz])."""
    with evaluating(network):  # a batch norm has a constant in eval mode only
        return backbone_lipschitz(network.backbone)


def certify_latent(network: Any, z: Any, y: Any = None) -> Tensor:
    """Certified L2 radii around latent codes of a fitted
    [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].

    Args:
        z: ``(n, latent_dim)`` latent codes.
        y: optional ``(n,)`` class indices: the radius is 0 where the prediction is wrong.

    Returns:
        ``(n,)`` radii (float64; float32 on MPS), on the network's device.
    """
    network.check_fitted()
    z = torch.as_tensor(z).to(network.prototypes.device)
    if z.dim() != 2 or z.shape[1] != network.prototypes.shape[1]:
        raise ValueError(
            f"z must have shape (n, {network.prototypes.shape[1]}) (latent codes), got "
            f"{tuple(z.shape)}"
        )
    labels = None if y is None else checked_labels(network, y, len(z))
    parts = []
    with evaluating(network):
        for i in range(0, len(z), CHUNK):
            chunk = z[i : i + CHUNK].to(network.prototypes.dtype)
            part = None if labels is None else labels[i : i + CHUNK]
            winners = network.head.labels(network.distances(chunk), network.prototype_labels)
            parts.append(
                latent_radius(chunk, network.prototypes, network.prototype_labels, part, winners)
            )
    return torch.cat(parts)


def radii_and_predictions(network: Any, x: Any, y: Any = None) -> tuple[Tensor, Tensor]:
    """``(radii (n,), predicted class indices (n,))`` of inputs (see [`certify`][lvqmln_torch.core.certify.certify])."""
    x = checked_inputs(network, x)
    labels = None if y is None else checked_labels(network, y, len(x))
    lipschitz = network.lipschitz_bound()
    radii, predicted = [], []
    with evaluating(network):
        for i in range(0, len(x), CHUNK):
            z = network.backbone(x[i : i + CHUNK].to(network.prototypes))
            part = None if labels is None else labels[i : i + CHUNK]
            winners = network.head.labels(network.distances(z), network.prototype_labels)
            radii.append(
                latent_radius(z, network.prototypes, network.prototype_labels, part, winners)
            )
            predicted.append(winners)
    return input_radius(torch.cat(radii), lipschitz), torch.cat(predicted)


def input_radius(latent: Tensor, lipschitz: float) -> Tensor:
    """Certified input radii from ``(n,)`` latent radii and the backbone's Lipschitz bound:
    ``latent / L`` (with ``L = 0``, a constant backbone, a correct prediction is certified at
    any radius: ``inf``)."""
    return latent / lipschitz if lipschitz > 0 else torch.where(latent > 0, torch.inf, 0.0)


def certify(network: Any, x: Any, y: Any = None) -> Tensor:
    """Certified L2 radii in input space: the latent radius over the backbone's Lipschitz
    bound, computed in chunks on the network's device.

    Args:
        x: ``(n, d)`` or ``(n, C, H, W)`` inputs.
        y: optional ``(n,)`` class indices: the radius is 0 where the prediction is wrong.

    Returns:
        ``(n,)`` radii (float64; float32 on MPS): no perturbation of smaller L2 norm
        changes the prediction.

    Raises:
        NotFittedError: before the network is fitted.
        TypeError: for a backbone without ``lipschitz_bound()``.
        ValueError: for bad inputs or labels.
    """
    return radii_and_predictions(network, x, y)[0]


def certified_accuracy(network: Any, x: Any, y: Any, eps: float | Sequence[float]) -> Tensor:
    """The share of samples predicted correctly with a certified radius ≥ ``ε``.

    Args:
        x: ``(n, d)`` or ``(n, C, H, W)`` inputs.
        y: ``(n,)`` class indices.
        eps: one radius or a sequence of radii (L2, input units).

    Returns:
        ``(len(eps),)`` float64 accuracies, on the CPU.
    """
    eps = check_eps(eps)
    radius, predicted = radii_and_predictions(network, x, y)
    correct = (predicted.cpu() == checked_labels(network, y, len(radius)))[None, :]
    return (correct & (radius.cpu().double()[None, :] >= eps[:, None])).double().mean(dim=1)
