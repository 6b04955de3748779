"""The backbones that map inputs to the latent space where the prototypes live: the MLP, the
CNN ([`CNNBackbone`][lvqmln_torch.core.cnn.CNNBackbone], in its own module) and the identity
(the shallow GLVQ).

The MLP follows the upstream (prosemble) reference: Glorot-uniform weights, zero biases and
the activation applied after every layer, the last one included (``latent_activation=True``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .cnn import CNN_HEADS, CNNBackbone
from .fused_linear import fused_linear, use_fused_path, worth_fusing
from .layers import ACTIVATIONS, get_activation, glorot_uniform_, glorot_weight_, positive_int
from .lipschitz import activation_lipschitz, linear_norm
from .lipschitz_control import LIPSCHITZ_MODES, check_lipschitz_mode, constrain

__all__ = [
    "ACTIVATIONS",
    "CNN_HEADS",
    "CNNBackbone",
    "IdentityBackbone",
    "MLPBackbone",
    "get_activation",
    "glorot_uniform_",
]


class MLPBackbone(nn.Module):
    """Fully connected backbone: layer sizes ``[in_features, *hidden_sizes, latent_dim]``.

    Each layer computes ``act(x @ W + b)``; with ``latent_activation=False`` the last layer
    stays linear (ours, not upstream).

    Args:
        in_features: input dimension ``d``.
        hidden_sizes: widths of the hidden layers (may be empty).
        latent_dim: latent dimension.
        activation: one of [`ACTIVATIONS`][lvqmln_torch.core.layers.ACTIVATIONS].
        latent_activation: apply the activation after the last layer too.
        generator: optional generator for a reproducible initialisation.
        lipschitz: ``None`` (free weights), ``"spectral"`` (each weight divided by its
            spectral norm) or ``"orthogonal"`` (orthogonal weights): each layer then has
            norm 1 and the backbone's Lipschitz constant is the activations' (see
            [`constrain`][lvqmln_torch.core.lipschitz_control.constrain]).

    Shapes:
        ``(n, in_features)`` → ``(n, latent_dim)``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int] = (10,),
        latent_dim: int = 2,
        activation: str = "sigmoid",
        latent_activation: bool = True,
        generator: torch.Generator | None = None,
        lipschitz: str | None = None,
    ) -> None:
        super().__init__()
        self.lipschitz = check_lipschitz_mode(lipschitz, LIPSCHITZ_MODES)
        sizes = [positive_int("in_features", in_features)]
        sizes += [positive_int("hidden_sizes entries", h) for h in hidden_sizes]
        sizes.append(positive_int("latent_dim", latent_dim))
        self.in_features = sizes[0]
        self.latent_dim = sizes[-1]
        self.activation = get_activation(activation)
        self.latent_activation = latent_activation
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.reset_parameters(generator)
        for layer in self.layers:
            constrain(layer, self.lipschitz)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform weights, zero biases (the reference initialisation)."""
        for layer in self.layers:
            glorot_weight_(layer, layer.in_features, layer.out_features, generator)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"MLPBackbone expects 2-D input (n, {self.in_features}), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLPBackbone expects {self.in_features} features, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        last = len(self.layers) - 1
        fused = use_fused_path(self, x, self.layers)  # training on the CPU: oneDNN
        for i, layer in enumerate(self.layers):
            activation = self.activation if i < last or self.latent_activation else None
            if fused and worth_fusing(x.shape[0], layer):
                x = fused_linear(x, layer, activation)
                continue
            x = layer(x)
            if activation is not None:
                x = activation(x)
        return x

    def lipschitz_bound(self) -> float:
        """An upper bound on the L2 Lipschitz constant: the product of the layers' spectral
        norms (exact) and the activation's constant per application (see
        ``lvqmln_torch.core.lipschitz``)."""
        applied = len(self.layers) - (0 if self.latent_activation else 1)
        bound = activation_lipschitz(self.activation) ** applied
        for layer in self.layers:
            bound *= linear_norm(layer.weight)
        return bound

    def nominal_lipschitz(self) -> float | None:
        """The bound that the ``lipschitz`` parametrisation promises (layers of norm 1: the
        activations' constants alone), cheap enough for every training step; ``None``
        without one. [`lipschitz_bound`][lvqmln_torch.core.backbones.MLPBackbone.lipschitz_bound]
        is the exact bound that certificates use."""
        if self.lipschitz is None:
            return None
        applied = len(self.layers) - (0 if self.latent_activation else 1)
        return activation_lipschitz(self.activation) ** applied


class IdentityBackbone(nn.Module):
    """No backbone: the latent space is the input space, so the prototypes live among the
    inputs and the model is the shallow GLVQ (Sato and Yamada 1996) of the robustness
    literature, with Lipschitz constant 1.

    Args:
        in_features: input dimension ``d`` (the latent dimension).

    Shapes:
        ``(n, in_features)`` → ``(n, in_features)``.
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = self.latent_dim = positive_int("in_features", in_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"IdentityBackbone expects 2-D input (n, {self.in_features}), got shape "
                f"{tuple(x.shape)}"
            )
        return x

    def lipschitz_bound(self) -> float:
        """1: the identity."""
        return 1.0

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}"
