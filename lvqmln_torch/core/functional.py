"""Pure functions of LVQMLN: distances, the GLVQ classifier function μ, the loss, transfers,
winner-takes-all competition and per-class pooling.

Every function is stateless and differentiable where it makes sense; the modules in this
package are thin wrappers around them. Shapes use ``n`` samples, ``p`` prototypes, ``d``
latent dimensions and ``k`` classes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "TRANSFERS",
    "get_transfer",
    "glvq_loss",
    "glvq_mu",
    "identity",
    "sigmoid_beta",
    "squared_euclidean_distance",
    "stratified_min_pooling",
    "swish_beta",
    "wtac",
]

TransferFn = Callable[[Tensor, float], Tensor]

# μ's denominator guard, as upstream.
_MU_EPS = 1e-10


def _check_rank(name: str, tensor: Tensor, rank: int) -> None:
    if tensor.dim() != rank:
        raise ValueError(
            f"{name} must be a {rank}-D tensor, got shape {tuple(tensor.shape)} ({tensor.dim()}-D)"
        )


def squared_euclidean_distance(x: Tensor, prototypes: Tensor) -> Tensor:
    """Squared Euclidean distances by the matmul expansion ‖x‖² + ‖w‖² − 2x·w, clamped at 0.

    Args:
        x: ``(n, d)`` latent codes.
        prototypes: ``(p, d)`` prototypes.

    Returns:
        ``(n, p)`` squared distances (no square root), never negative.
    """
    _check_rank("x", x, 2)
    _check_rank("prototypes", prototypes, 2)
    if x.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} features but prototypes have {prototypes.shape[1]}; "
            "they must live in the same latent space"
        )
    x_sq = (x * x).sum(dim=1, keepdim=True)
    w_sq = (prototypes * prototypes).sum(dim=1)
    # addmm fuses the −2x·wᵀ product with the broadcast sum: one kernel on GPU.
    distances = torch.addmm(x_sq + w_sq, x, prototypes.T, beta=1.0, alpha=-2.0)
    return distances.clamp_min(0.0)


def _masked_min(distances: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Minimum over ``dim`` of the entries where ``mask`` holds; the dtype's max where none does.

    ``torch.amin`` splits the gradient evenly between exact ties, as ``jnp.min`` does, so
    identical prototype copies receive identical updates.
    """
    fill = torch.finfo(distances.dtype).max
    return torch.amin(torch.where(mask, distances, distances.new_full((), fill)), dim=dim)


def _check_prototype_labels(distances: Tensor, prototype_labels: Tensor) -> None:
    _check_rank("distances", distances, 2)
    _check_rank("prototype_labels", prototype_labels, 1)
    if prototype_labels.shape[0] != distances.shape[1]:
        raise ValueError(
            f"prototype_labels has {prototype_labels.shape[0]} entries but distances has "
            f"{distances.shape[1]} columns"
        )


def _check_labels(distances: Tensor, targets: Tensor, prototype_labels: Tensor) -> None:
    _check_rank("distances", distances, 2)
    _check_rank("targets", targets, 1)
    _check_rank("prototype_labels", prototype_labels, 1)
    if targets.shape[0] != distances.shape[0]:
        raise ValueError(
            f"targets has {targets.shape[0]} entries but distances has {distances.shape[0]} rows"
        )
    if prototype_labels.shape[0] != distances.shape[1]:
        raise ValueError(
            f"prototype_labels has {prototype_labels.shape[0]} entries but distances has "
            f"{distances.shape[1]} columns"
        )


def glvq_mu(distances: Tensor, targets: Tensor, prototype_labels: Tensor) -> Tensor:
    """The GLVQ classifier function μ = (d⁺ − d⁻) / (d⁺ + d⁻ + 1e-10).

    Args:
        distances: ``(n, p)`` distances from samples to prototypes.
        targets: ``(n,)`` class indices of the samples.
        prototype_labels: ``(p,)`` class indices of the prototypes.

    Returns:
        ``(n,)`` values in [−1, 1]; negative means correctly classified.
    """
    _check_labels(distances, targets, prototype_labels)
    same_class = targets[:, None] == prototype_labels[None, :]
    d_plus = _masked_min(distances, same_class, dim=1)
    d_minus = _masked_min(distances, ~same_class, dim=1)
    return (d_plus - d_minus) / (d_plus + d_minus + _MU_EPS)


def identity(x: Tensor, beta: float = 0.0) -> Tensor:
    """Identity transfer ``f(x) = x``; ``beta`` is ignored."""
    return x


def sigmoid_beta(x: Tensor, beta: float = 10.0) -> Tensor:
    """Sigmoid transfer ``f(x) = 1 / (1 + exp(−βx))``."""
    return torch.sigmoid(beta * x)


def swish_beta(x: Tensor, beta: float = 10.0) -> Tensor:
    """Swish transfer ``f(x) = x · sigmoid(βx)``."""
    return x * torch.sigmoid(beta * x)


TRANSFERS: dict[str, TransferFn] = {
    "identity": identity,
    "sigmoid_beta": sigmoid_beta,
    "swish_beta": swish_beta,
}


def get_transfer(transfer: str | TransferFn | None) -> TransferFn:
    """Resolve a transfer by name (or pass a callable ``f(x, beta)`` through).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if transfer is None:
        return identity
    if callable(transfer):
        return transfer
    if transfer not in TRANSFERS:
        raise ValueError(
            f"Unknown transfer {transfer!r}. Valid transfers: {', '.join(TRANSFERS)}, "
            "or a callable f(x, beta)"
        )
    return TRANSFERS[transfer]


def glvq_loss(
    distances: Tensor,
    targets: Tensor,
    prototype_labels: Tensor,
    transfer: str | TransferFn | None = "identity",
    beta: float = 10.0,
    margin: float = 0.0,
    sample_weight: Tensor | None = None,
) -> Tensor:
    """GLVQ loss: the (weighted) mean of ``f(μ + margin, β)``.

    Args:
        distances: ``(n, p)`` distances from samples to prototypes.
        targets: ``(n,)`` class indices of the samples.
        prototype_labels: ``(p,)`` class indices of the prototypes.
        transfer: ``"identity"``, ``"sigmoid_beta"``, ``"swish_beta"`` or a callable.
        beta: steepness of the transfer (ignored by identity).
        margin: added to μ before the transfer.
        sample_weight: optional ``(n,)`` non-negative weights; the loss becomes
            ``Σ wᵢ fᵢ / Σ wᵢ``.

    Returns:
        A scalar tensor.
    """
    transfer_fn = get_transfer(transfer)
    values = transfer_fn(glvq_mu(distances, targets, prototype_labels) + margin, beta)
    if sample_weight is None:
        return values.mean()
    _check_rank("sample_weight", sample_weight, 1)
    if sample_weight.shape[0] != values.shape[0]:
        raise ValueError(
            f"sample_weight has {sample_weight.shape[0]} entries but there are "
            f"{values.shape[0]} samples"
        )
    sample_weight = sample_weight.to(values.dtype)
    return (sample_weight * values).sum() / sample_weight.sum()


def wtac(distances: Tensor, prototype_labels: Tensor) -> Tensor:
    """Winner-takes-all competition: the label of the nearest prototype.

    Args:
        distances: ``(n, p)`` distances.
        prototype_labels: ``(p,)`` labels of the prototypes.

    Returns:
        ``(n,)`` labels; on exact ties the prototype with the lowest index wins.
    """
    _check_prototype_labels(distances, prototype_labels)
    return prototype_labels[torch.argmin(distances, dim=1)]


def stratified_min_pooling(distances: Tensor, prototype_labels: Tensor, n_classes: int) -> Tensor:
    """Per-class minimum distance.

    Args:
        distances: ``(n, p)`` distances.
        prototype_labels: ``(p,)`` class indices of the prototypes, in ``[0, n_classes)``.
        n_classes: number of classes ``k``.

    Returns:
        ``(n, k)`` minimum distance to each class; the dtype's max for a class that has no
        prototype.
    """
    _check_prototype_labels(distances, prototype_labels)
    classes = torch.arange(n_classes, device=prototype_labels.device)
    class_mask = prototype_labels[None, :] == classes[:, None]  # (k, p)
    return _masked_min(distances[:, None, :], class_mask[None, :, :], dim=2)
