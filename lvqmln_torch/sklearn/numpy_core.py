"""The LVQMLN math of the MLP backbone in NumPy, with hand-derived gradients: the forward pass,
the squared Euclidean distances, the GLVQ loss and the gradients of the loss with respect to
every weight, bias and prototype.

It is the twin of [`lvqmln_torch.core.functional`][lvqmln_torch.core.functional] plus autograd, for problems so small that a
framework's per-operation dispatch (about 10 µs per torch operation and autograd node on a
small CPU) costs more than the arithmetic; [`lvqmln_torch.sklearn.numpy_engine`][lvqmln_torch.sklearn.numpy_engine] trains with it.
The gradients follow autograd's conventions exactly where a function is not differentiable:
``torch.amin`` splits the gradient evenly between tied minima, ``clamp_min(0)`` passes it
where the argument is ``>= 0``, ReLU and leaky ReLU take the right-hand derivative only for
positive inputs. The parity tests compare all of it with torch autograd and with the JAX
reference.

Layout: activations are kept *transposed*, ``(features, n)``, and distances as ``(p, n)``, so
every reduction over prototypes runs element-wise across samples (NumPy reduces short rows
slowly). Weights keep torch's ``nn.Linear`` layout, ``W (out, in)`` and ``b (out,)``. No torch
here: inputs and outputs are NumPy arrays of one floating dtype (float32 or float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "TRANSFERS",
    "GLVQTargets",
    "glvq_loss_and_grads",
    "glvq_targets",
    "mlp_backward",
    "mlp_forward",
]

Array = np.ndarray
Layer = tuple[Array, Array]  # (W (out, in), b (out,)), as nn.Linear stores them

# torch.nn.SELU's constants.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
_LEAKY_SLOPE = 0.01  # jax.nn.leaky_relu's default, which upstream (and our torch side) uses
_MU_EPS = 1e-10  # μ's denominator guard, as upstream


def _sigmoid(a: Array) -> Array:
    out = np.negative(a)
    np.exp(out, out=out)  # overflows to inf for very negative a: 1 / inf = 0, as it should
    out += 1
    return np.reciprocal(out, out=out)


def _selu(a: Array) -> Array:
    negative = np.expm1(np.minimum(a, 0))  # the minimum keeps exp from overflowing
    negative *= _SELU_ALPHA
    return _SELU_SCALE * np.where(a > 0, a, negative)


# name → (f(a), f'(a) written in terms of h = f(a)); every derivative here can be read off
# the output, so the forward pass keeps only the outputs.
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "sigmoid": (_sigmoid, lambda h: h * (1 - h)),
    "relu": (lambda a: np.maximum(a, 0), lambda h: (h > 0).astype(h.dtype)),
    "tanh": (np.tanh, lambda h: 1 - h * h),
    "leaky_relu": (
        lambda a: np.where(a > 0, a, a * _LEAKY_SLOPE),
        lambda h: np.where(h > 0, h.dtype.type(1), h.dtype.type(_LEAKY_SLOPE)),
    ),
    # For a <= 0: f = scale·alpha·(e^a − 1), so f' = scale·alpha·e^a = f + scale·alpha.
    "selu": (
        _selu,
        lambda h: np.where(h > 0, h.dtype.type(_SELU_SCALE), h + _SELU_SCALE * _SELU_ALPHA),
    ),
}
"""Activation name (``sigmoid``, ``relu``, ``tanh``, ``leaky_relu``, ``selu``) →
``(f(a), f'(a))``, the derivative written in terms of the output ``h = f(a)``."""


def mlp_forward(
    layers: Sequence[Layer], x_t: Array, activation: str, latent_activation: bool = True
) -> list[Array]:
    """The MLP backbone ``x → act(x Wᵀ + b) → …`` (the last activation only with
    ``latent_activation``), as [`MLPBackbone`][lvqmln_torch.core.backbones.MLPBackbone] computes it.

    Args:
        layers: ``[(W (out, in), b (out,)), …]``.
        x_t: ``(in_features, n)`` transposed inputs ``xᵀ``; C-contiguous is fastest (BLAS
            multiplies a transposed view about 3x slower at these sizes).
        activation: a name in [`ACTIVATIONS`][lvqmln_torch.sklearn.numpy_core.ACTIVATIONS].
        latent_activation: apply the activation after the last layer too.

    Returns:
        ``[xᵀ, h₁ᵀ, …, zᵀ]``: the transposed input and every layer's output ``(width, n)``;
        the last entry is the latent code ``zᵀ (latent_dim, n)``.
    """
    act = ACTIVATIONS[activation][0]
    outputs = [x_t]
    last = len(layers) - 1
    for i, (weight, bias) in enumerate(layers):
        h = weight @ outputs[-1]
        h += bias[:, None]
        outputs.append(act(h) if i < last or latent_activation else h)
    return outputs


def mlp_backward(
    layers: Sequence[Layer],
    outputs: Sequence[Array],
    grad_latent: Array,
    activation: str,
    latent_activation: bool,
    grads: Sequence[Layer],
) -> None:
    """Backpropagate ``∂L/∂zᵀ`` through the MLP and write ``∂L/∂W``, ``∂L/∂b`` into ``grads``.

    Args:
        layers: the weights of [`mlp_forward`][lvqmln_torch.sklearn.numpy_core.mlp_forward].
        outputs: what [`mlp_forward`][lvqmln_torch.sklearn.numpy_core.mlp_forward] returned.
        grad_latent: ``(latent_dim, n)`` gradient of the loss with respect to ``zᵀ``.
        activation: the activation name.
        latent_activation: as in the forward pass.
        grads: ``[(∂W (out, in), ∂b (out,)), …]``, written in place.
    """
    derivative = ACTIVATIONS[activation][1]
    grad = grad_latent
    for i in range(len(layers) - 1, -1, -1):
        if i < len(layers) - 1 or latent_activation:
            grad = grad * derivative(outputs[i + 1])
        grad_weight, grad_bias = grads[i]
        np.matmul(grad, outputs[i].T, out=grad_weight)
        np.sum(grad, axis=1, out=grad_bias)
        if i > 0:
            grad = layers[i][0].T @ grad


TRANSFERS: dict[str, tuple[Callable[[Array, float], Array], Callable[[Array, float], Array]]] = {
    "identity": (lambda x, beta: x, lambda x, beta: np.ones_like(x)),
    "sigmoid_beta": (
        lambda x, beta: _sigmoid(beta * x),
        lambda x, beta: (lambda s: beta * s * (1 - s))(_sigmoid(beta * x)),
    ),
    "swish_beta": (
        lambda x, beta: x * _sigmoid(beta * x),
        lambda x, beta: (lambda s: s + beta * x * s * (1 - s))(_sigmoid(beta * x)),
    ),
}
"""Transfer name (``identity``, ``sigmoid_beta``, ``swish_beta``) → ``(f(x, β), f'(x, β))``."""


@dataclass(frozen=True)
class GLVQTargets:
    """What the loss needs of a batch's labels, prepared once per batch.

    Attributes:
        same_class: ``(p, n)`` whether prototype j has sample i's class.
        other_class: ``(p, n)`` its negation.
        sample_grad: ``(n,)`` ∂loss/∂fᵢ: ``1/n``, or ``wᵢ / Σw`` with sample weights.
        weights: the ``(n,)`` sample weights in the working dtype, or ``None``.
    """

    same_class: Array
    other_class: Array
    sample_grad: Array
    weights: Array | None


def glvq_targets(
    y: Array, prototype_labels: Array, sample_weight: Array | None, dtype: np.dtype
) -> GLVQTargets:
    """Masks and loss weights of a batch with labels ``y (n,)``, prototypes labelled
    ``prototype_labels (p,)`` and optional ``sample_weight (n,)``."""
    same = prototype_labels[:, None] == y[None, :]
    if sample_weight is None:
        grad = np.full(len(y), 1.0 / len(y), dtype=dtype)
        weights = None
    else:
        weights = np.asarray(sample_weight, dtype=dtype)
        grad = weights / weights.sum()
    return GLVQTargets(same, ~same, grad, weights)


def _masked_min(distances: Array, mask: Array, fill: float) -> tuple[Array, Array]:
    """Per-sample minimum over the masked prototypes ``(n,)`` and the ``(p, n)`` masked array
    (``fill`` where the mask is off), as ``functional._masked_min`` computes it."""
    masked = np.where(mask, distances, fill)
    return masked.min(axis=0), masked


def _tie_split(masked: Array, minimum: Array, grad: Array) -> Array:
    """``torch.amin``'s gradient: ``grad (n,)`` shared evenly by the entries equal to the
    minimum of their column, ``(p, n)``."""
    hits = masked == minimum[None, :]
    share = hits.astype(grad.dtype)
    share *= grad / hits.sum(axis=0, dtype=grad.dtype)
    return share


def glvq_loss_and_grads(
    latent: Array,
    prototypes: Array,
    targets: GLVQTargets,
    transfer: str = "identity",
    beta: float = 10.0,
    margin: float = 0.0,
    need_latent_grad: bool = True,
    need_prototype_grad: bool = True,
) -> tuple[float, bool, Array | None, Array | None]:
    """The GLVQ loss of a batch and its gradients.

    Distances ``‖z‖² + ‖w‖² − 2 z·w`` clamped at 0, ``μ = (d⁺ − d⁻) / (d⁺ + d⁻ + 1e-10)``,
    loss ``mean f(μ + margin, β)`` (or the weighted mean), exactly as
    [`lvqmln_torch.core.functional.glvq_loss`][lvqmln_torch.core.functional.glvq_loss] on the output of
    [`squared_euclidean_distance`][lvqmln_torch.core.functional.squared_euclidean_distance].

    Args:
        latent: ``(latent_dim, n)`` transposed latent codes ``zᵀ``.
        prototypes: ``(p, latent_dim)``.
        targets: the batch's [`GLVQTargets`][lvqmln_torch.sklearn.numpy_core.GLVQTargets].
        transfer: a name in [`TRANSFERS`][lvqmln_torch.sklearn.numpy_core.TRANSFERS].
        beta: transfer steepness.
        margin: added to μ before the transfer.
        need_latent_grad: compute ``∂L/∂zᵀ`` (not needed when the backbone is frozen).
        need_prototype_grad: compute ``∂L/∂W`` (not needed when the prototypes are frozen).

    Returns:
        ``(loss, distances_finite, ∂L/∂zᵀ (latent_dim, n) or None, ∂L/∂W (p, latent_dim) or
        None)``; the loss is a 0-d array of the working dtype.
    """
    dtype = latent.dtype
    fill = np.finfo(dtype).max
    # addmm(‖z‖² + ‖w‖², z, Wᵀ, alpha=−2) in the (p, n) layout.
    distances = (prototypes * prototypes).sum(axis=1)[:, None] + (latent * latent).sum(axis=0)
    distances -= 2 * (prototypes @ latent)
    finite = bool(np.isfinite(distances).all())
    passes = distances >= 0  # clamp_min(0) lets the gradient through where the input >= 0
    np.maximum(distances, 0, out=distances)

    d_plus, masked_plus = _masked_min(distances, targets.same_class, fill)
    d_minus, masked_minus = _masked_min(distances, targets.other_class, fill)
    denominator = d_plus + d_minus + _MU_EPS
    mu = (d_plus - d_minus) / denominator
    f, f_prime = TRANSFERS[transfer]
    shifted = mu + margin
    values = f(shifted, beta)
    if targets.weights is None:
        loss = values.sum() / len(values)
    else:
        loss = (targets.weights * values).sum() / targets.weights.sum()
    if not (need_latent_grad or need_prototype_grad):
        return loss, finite, None, None

    grad_mu = targets.sample_grad * f_prime(shifted, beta)
    # μ = a / s with a = d⁺ − d⁻ and s = d⁺ + d⁻ + ε: ∂μ/∂a = 1/s, ∂μ/∂s = −μ/s.
    grad_a = grad_mu / denominator
    grad_s = -grad_mu * mu / denominator
    grad_d = _tie_split(masked_plus, d_plus, grad_a + grad_s)
    grad_d += _tie_split(masked_minus, d_minus, grad_s - grad_a)
    grad_d *= passes

    grad_latent = grad_prototypes = None
    if need_latent_grad:  # ∂/∂z of ‖z‖² − 2 z·w
        grad_latent = latent * grad_d.sum(axis=0)
        grad_latent -= prototypes.T @ grad_d
        grad_latent *= 2
    if need_prototype_grad:  # ∂/∂w of ‖w‖² − 2 z·w
        grad_prototypes = prototypes * grad_d.sum(axis=1)[:, None]
        grad_prototypes -= grad_d @ latent.T
        grad_prototypes *= 2
    return loss, finite, grad_latent, grad_prototypes
