"""Distance, GLVQ loss, transfer functions and decisions, as upstream prosemble.core.*."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def squared_euclidean_distance_matrix(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pairwise squared Euclidean distances ``||x||^2 + ||y||^2 - 2 x.y^T``, clamped at 0.

    x: (n, d), y: (m, d) -> (n, m).
    """
    x_sq = jnp.sum(x**2, axis=1, keepdims=True)
    y_sq = jnp.sum(y**2, axis=1, keepdims=True).T
    d_sq = x_sq + y_sq - 2 * (x @ y.T)
    return jnp.maximum(d_sq, 0.0)


# --- transfer functions f(x, beta) -----------------------------------------------------


def identity(x: jax.Array, beta: float = 0.0) -> jax.Array:
    """Identity transfer (``beta`` ignored)."""
    return x


def sigmoid_beta(x: jax.Array, beta: float = 10.0) -> jax.Array:
    """``sigmoid(beta * x)``."""
    return jax.nn.sigmoid(beta * x)


def swish_beta(x: jax.Array, beta: float = 10.0) -> jax.Array:
    """``x * sigmoid(beta * x)``."""
    return x * jax.nn.sigmoid(beta * x)


TRANSFERS: dict[str, Callable[..., jax.Array]] = {
    "identity": identity,
    "sigmoid_beta": sigmoid_beta,
    "swish_beta": swish_beta,
}


def _get_transfer(transfer_fn: str | Callable | None) -> Callable[..., jax.Array]:
    if transfer_fn is None:
        return identity
    if callable(transfer_fn):
        return transfer_fn
    try:
        return TRANSFERS[transfer_fn]
    except KeyError:
        raise ValueError(
            f"Unknown transfer function: {transfer_fn!r}. Valid: {', '.join(TRANSFERS)}"
        ) from None


# --- GLVQ --------------------------------------------------------------------------------


def _get_dp_dm(
    distances: jax.Array, target_labels: jax.Array, prototype_labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """d+ (closest same-class) and d- (closest other-class) distances.

    distances (n, p), target_labels (n,), prototype_labels (p,) -> dp (n,), dm (n,).
    Empty masks give ``finfo(dtype).max``; ``jnp.min`` splits gradients evenly between ties.
    """
    same_class = target_labels[:, None] == prototype_labels[None, :]
    inf = jnp.finfo(distances.dtype).max
    dp = jnp.min(jnp.where(same_class, distances, inf), axis=1)
    dm = jnp.min(jnp.where(~same_class, distances, inf), axis=1)
    return dp, dm


def glvq_mu(
    distances: jax.Array, target_labels: jax.Array, prototype_labels: jax.Array
) -> jax.Array:
    """GLVQ relative distance ``mu = (d+ - d-) / (d+ + d- + 1e-10)``, shape (n,)."""
    dp, dm = _get_dp_dm(distances, target_labels, prototype_labels)
    return (dp - dm) / (dp + dm + 1e-10)


def glvq_loss_with_transfer(
    distances: jax.Array,
    target_labels: jax.Array,
    prototype_labels: jax.Array,
    transfer_fn: str | Callable = identity,
    margin: float = 0.0,
    beta: float = 10.0,
    sample_weight: jax.Array | None = None,
) -> jax.Array:
    """GLVQ loss ``mean_i f(mu_i + margin, beta)`` (scalar).

    distances (n, p), target_labels (n,), prototype_labels (p,), sample_weight (n,) or None.
    With sample weights w: ``sum(w * f) / sum(w)``. ``transfer_fn`` is a name in
    ``TRANSFERS`` or a callable ``f(x, beta)``.
    """
    f = _get_transfer(transfer_fn)
    values = f(glvq_mu(distances, target_labels, prototype_labels) + margin, beta)
    if sample_weight is None:
        return jnp.mean(values)
    return jnp.sum(sample_weight * values) / jnp.sum(sample_weight)


# --- decisions ---------------------------------------------------------------------------


def wtac(distances: jax.Array, prototype_labels: jax.Array) -> jax.Array:
    """Winner-takes-all: label of the nearest prototype (first index on ties), shape (n,)."""
    return prototype_labels[jnp.argmin(distances, axis=1)]


def stratified_min_pooling(
    distances: jax.Array, prototype_labels: jax.Array, n_classes: int
) -> jax.Array:
    """Per-class minimum distance: distances (n, p) -> (n, n_classes).

    Classes without prototypes get ``finfo(dtype).max``.
    """
    class_mask = prototype_labels[None, :] == jnp.arange(n_classes)[:, None]  # (K, p)
    inf = jnp.finfo(distances.dtype).max
    masked = jnp.where(class_mask[None, :, :], distances[:, None, :], inf)  # (n, K, p)
    return jnp.min(masked, axis=2)
