"""What the backbones' layers share: the activations by name and the reference (Glorot-uniform)
initialisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .lipschitz import MaxMin
from .lipschitz_control import set_weight
from .validation import Integer

__all__ = ["ACTIVATIONS", "get_activation", "glorot_uniform_", "glorot_weight_", "positive_int"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    # jax.nn.leaky_relu's default slope, which upstream uses.
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.01),
    "selu": nn.SELU,
    # 1-Lipschitz and gradient-norm preserving: for Lipschitz-controlled backbones.
    "maxmin": MaxMin,
}
"""Activation name → a factory of a fresh module (the names upstream accepts)."""


def get_activation(name: str) -> nn.Module:
    """A fresh activation module by name.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}. Valid activations: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


def glorot_uniform_(
    tensor: Tensor, fan_in: int, fan_out: int, generator: torch.Generator | None = None
) -> Tensor:
    """Fill ``tensor`` in place from U(±sqrt(6 / (fan_in + fan_out))), the reference init."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-limit, limit, generator=generator)


def glorot_weight_(
    layer: nn.Module, fan_in: int, fan_out: int, generator: torch.Generator | None
) -> None:
    """Glorot-uniform ``layer.weight``, through its Lipschitz parametrisation if it has one."""
    weight = torch.empty_like(layer.weight)
    set_weight(layer, glorot_uniform_(weight, fan_in, fan_out, generator))


positive_int = Integer(1, text="a positive integer")
"""``positive_int(name, value)``: ``value`` as an int ≥ 1, or a ValueError naming ``name``."""
