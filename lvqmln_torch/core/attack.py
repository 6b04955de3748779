"""A projected-gradient L2 attack on a prototype network: the empirical side of
[`certify`][lvqmln_torch.core.certify.certify]. A certified radius is a
proof that no perturbation below it changes the prediction; the attack searches for one that
does, so it finds none inside the radius, and its successes outside bound the true
robustness from above."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .explain import CHUNK, checked_inputs, checked_labels, evaluating

__all__ = ["pgd_l2_attack"]


def _margin_loss(network: Any, x: Tensor, y: Tensor) -> Tensor:
    """Per sample ``d_own − d_rival`` (positive once another class is nearer)."""
    distances = network.distances(network.backbone(x))
    own = network.prototype_labels[None, :] == y[:, None]
    big = torch.finfo(distances.dtype).max
    nearest_own = torch.where(own, distances, big).amin(dim=1)
    return nearest_own - torch.where(own, big, distances).amin(dim=1)


def _project(delta: Tensor, radius: Tensor) -> Tensor:
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-30)
    scale = torch.clamp(radius / norms, max=1.0)
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def pgd_l2_attack(
    network: Any,
    x: Any,
    y: Any,
    eps: float | Tensor,
    steps: int = 50,
    restarts: int = 3,
    step_size: float = 0.1,
    seed: int = 0,
) -> Tensor:
    """Search for adversarial examples inside L2 balls: projected gradient ascent on the
    margin ``d_own − d_rival`` with normalised steps of ``step_size · eps``, from the sample
    itself and ``restarts − 1`` random starts inside the ball; no input-range constraint.

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork].
        x: ``(n, …)`` inputs.
        y: ``(n,)`` class indices.
        eps: the radius, or ``(n,)`` radii per sample.
        steps: gradient steps per start.
        restarts: starts per sample (the first at the sample itself).
        step_size: the step length as a share of the radius.
        seed: seeds the random starts.

    Returns:
        ``(n,)`` booleans: whether a perturbation of norm ``≤ eps`` was found that the network
        does not classify as ``y`` (also where ``x`` itself is misclassified).
    """
    x = checked_inputs(network, x)
    y = checked_labels(network, y, len(x)).to(network.prototypes.device)
    radius = torch.as_tensor(eps, dtype=torch.float64).expand(len(x)).clone()
    generator = torch.Generator().manual_seed(int(seed))
    found = torch.zeros(len(x), dtype=torch.bool, device=network.prototypes.device)
    with evaluating(network), torch.inference_mode(False):
        for start in range(0, len(x), CHUNK):
            xs = x[start : start + CHUNK].to(network.prototypes).clone()
            ys = y[start : start + CHUNK]
            r = radius[start : start + CHUNK].to(xs)
            shape = (-1, *([1] * (xs.dim() - 1)))  # per-sample scalars against inputs
            for restart in range(restarts):
                noise = torch.randn(xs.shape, generator=generator, dtype=torch.float64).to(xs)
                draw = torch.rand(len(xs), generator=generator, dtype=torch.float64).to(xs)
                delta = _project(noise, r * draw) if restart else torch.zeros_like(xs)
                for _ in range(steps):
                    delta.requires_grad_(True)
                    loss = _margin_loss(network, xs + delta, ys).sum()
                    (grad,) = torch.autograd.grad(loss, delta)
                    with torch.no_grad():
                        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-30)
                        step = grad * (step_size * r / norms).view(shape)
                        delta = _project(delta + step, r)
                with torch.no_grad():
                    distances = network.distances(network.backbone(xs + delta))
                    predicted = network.head.labels(distances, network.prototype_labels)
                    found[start : start + CHUNK] |= predicted != ys
    return found.cpu()
