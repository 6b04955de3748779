"""Backbones that map inputs to the latent space where the prototypes live.

Both follow the upstream (prosemble) reference: Glorot-uniform weights, zero biases and the
activation applied after every layer, the last one included (``latent_activation=True``).
The CNN also has our head and input standardisation, which the module uses by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .lipschitz import (
    MaxMin,
    activation_lipschitz,
    conv_norm_bound,
    linear_norm,
    pool_lipschitz,
)
from .lipschitz_control import (
    CNN_LIPSCHITZ_MODES,
    LIPSCHITZ_MODES,
    check_lipschitz_mode,
    constrain,
    set_weight,
)
from .validation import Integer

__all__ = [
    "ACTIVATIONS",
    "CNN_HEADS",
    "CNNBackbone",
    "IdentityBackbone",
    "MLPBackbone",
    "get_activation",
    "glorot_uniform_",
]

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


def _glorot_weight(
    layer: nn.Module, fan_in: int, fan_out: int, generator: torch.Generator | None
) -> None:
    """Glorot-uniform ``layer.weight``, through its Lipschitz parametrisation if it has one."""
    weight = torch.empty_like(layer.weight)
    set_weight(layer, glorot_uniform_(weight, fan_in, fan_out, generator))


_POSITIVE_INT = Integer(1, text="a positive integer")


def _positive_int(name: str, value: object) -> int:
    return _POSITIVE_INT(name, value)


class MLPBackbone(nn.Module):
    """Fully connected backbone: layer sizes ``[in_features, *hidden_sizes, latent_dim]``.

    Each layer computes ``act(x @ W + b)``; with ``latent_activation=False`` the last layer
    stays linear (ours, not upstream).

    Args:
        in_features: input dimension ``d``.
        hidden_sizes: widths of the hidden layers (may be empty).
        latent_dim: latent dimension.
        activation: one of [`ACTIVATIONS`][lvqmln_torch.core.backbones.ACTIVATIONS].
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
        sizes = [_positive_int("in_features", in_features)]
        sizes += [_positive_int("hidden_sizes entries", h) for h in hidden_sizes]
        sizes.append(_positive_int("latent_dim", latent_dim))
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
            _glorot_weight(layer, layer.in_features, layer.out_features, generator)
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
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.latent_activation:
                x = self.activation(x)
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


CNN_HEADS = ("flatten", "mean")


class CNNBackbone(nn.Module):
    """Convolutional backbone: conv (stride 1, SAME padding) + bias + act per layer, a head to
    ``latent_dim`` and the activation.

    The class defaults are upstream's reference architecture (the parity tests run it):
    ``head="mean"`` (global average pooling over H and W, then a linear layer) and raw inputs.
    ``LVQMLN(backbone="cnn")`` and the estimator build ours instead (see
    [`CNN_DEFAULTS`][lvqmln_torch.sklearn.params.CNN_DEFAULTS] and ``docs/images.md``):
    ``head="flatten"`` (a 2×2 max-pool, then a linear layer over every pooled pixel and
    channel) and ``standardize=True``, which keeps the spatial layout that global averaging
    throws away and makes the network independent of the pixel scale.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        channels: output channels of each conv layer.
        kernel_sizes: kernel size of each conv layer (same length as ``channels``).
        latent_dim: latent dimension.
        activation: one of [`ACTIVATIONS`][lvqmln_torch.core.backbones.ACTIVATIONS].
        latent_activation: apply the activation after the linear head.
        generator: optional generator for a reproducible initialisation.
        head: ``"mean"`` (global average pooling) or ``"flatten"`` (2×2 max-pooling, a
            window of 1 along a side of 1 pixel, then flatten).
        standardize: subtract one global mean and divide by one global standard deviation
            of the pixels (scalar buffers ``input_mean`` and ``input_std``, in the
            ``state_dict``), measured by [`set_input_statistics`][lvqmln_torch.core.backbones.CNNBackbone.set_input_statistics] on the sample the
            prototypes are initialised from; 0 and 1 until then.
        lipschitz: ``None`` (free weights) or ``"spectral"``: every convolution and the head
            normalised to norm 1 on each forward pass (see
            [`constrain`][lvqmln_torch.core.lipschitz_control.constrain]).

    Shapes:
        ``(n, C, H, W)`` → ``(n, latent_dim)``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int] = (16, 32),
        kernel_sizes: Sequence[int] = (3, 3),
        latent_dim: int = 2,
        activation: str = "relu",
        latent_activation: bool = True,
        generator: torch.Generator | None = None,
        head: str = "mean",
        standardize: bool = False,
        lipschitz: str | None = None,
    ) -> None:
        super().__init__()
        self.lipschitz = check_lipschitz_mode(
            lipschitz, CNN_LIPSCHITZ_MODES, " for the CNN ('orthogonal' is the MLP's)"
        )
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        for dim in input_shape:
            _positive_int("input_shape entries", dim)
        if len(channels) != len(kernel_sizes):
            raise ValueError(
                f"channels and kernel_sizes must have the same length, got {len(channels)} "
                f"and {len(kernel_sizes)}"
            )
        if head not in CNN_HEADS:
            raise ValueError(f"Unknown CNN head {head!r}. Valid heads: {', '.join(CNN_HEADS)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.activation = get_activation(activation)
        self.latent_activation = latent_activation
        self.head_kind = head
        self.standardize = bool(standardize)
        if self.standardize:
            self.register_buffer("input_mean", torch.tensor(0.0))
            self.register_buffer("input_std", torch.tensor(1.0))
        c_in, height, width = self.input_shape
        convs = []
        for c_out, k in zip(channels, kernel_sizes):
            c_out = _positive_int("channels entries", c_out)
            k = _positive_int("kernel_sizes entries", k)
            convs.append(nn.Conv2d(c_in, c_out, kernel_size=k, stride=1, padding="same"))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        if head == "flatten":
            window = (min(2, height), min(2, width))
            self.pool: nn.Module | None = nn.MaxPool2d(window)
            features = c_in * (height // window[0]) * (width // window[1])
        else:
            self.pool, features = None, c_in
        self.head = nn.Linear(features, self.latent_dim)
        self.reset_parameters(generator)
        for conv in self.convs:  # stride 1, SAME padding: every conv sees H × W
            constrain(conv, self.lipschitz, (height, width))
        constrain(self.head, self.lipschitz)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform kernels with fan_in = k·k·c_in, fan_out = k·k·c_out; zero biases."""
        for conv in self.convs:
            k = conv.kernel_size[0] * conv.kernel_size[1]
            _glorot_weight(conv, k * conv.in_channels, k * conv.out_channels, generator)
            nn.init.zeros_(conv.bias)
        _glorot_weight(self.head, self.head.in_features, self.head.out_features, generator)
        nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def set_input_statistics(self, x: Tensor, chunk: int = 65536) -> None:
        """Measure the global pixel mean and standard deviation of ``x`` ``(n, C, H, W)`` (in
        float64, ``chunk`` samples at a time) into ``input_mean`` / ``input_std``; a constant
        input keeps the standard deviation 1. Does nothing without ``standardize``."""
        if not self.standardize or len(x) == 0:
            return
        total = squares = torch.zeros((), dtype=torch.float64)
        count = 0
        for i in range(0, len(x), chunk):
            part = torch.as_tensor(x[i : i + chunk]).to(torch.float64).cpu()
            total = total + part.sum()
            squares = squares + (part * part).sum()
            count += part.numel()
        mean = total / count
        std = torch.sqrt(torch.clamp(squares / count - mean * mean, min=0.0))
        self.input_mean.fill_(float(mean))
        self.input_std.fill_(float(std) if float(std) > 1e-12 * max(1.0, abs(float(mean))) else 1.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"CNNBackbone expects images of shape (n, {', '.join(map(str, self.input_shape))}),"
                f" got {tuple(x.shape)}"
            )
        if self.standardize:
            x = (x - self.input_mean) / self.input_std
        for conv in self.convs:
            x = self.activation(conv(x))
        x = self.pool(x).flatten(1) if self.pool is not None else x.mean(dim=(2, 3))
        x = self.head(x)
        return self.activation(x) if self.latent_activation else x

    def lipschitz_bound(self) -> float:
        """An upper bound on the L2 Lipschitz constant: ``1 / input_std`` (with
        ``standardize``), each convolution's bound on H × W images times the activation's
        constant, the pooling (max-pooling 1, the global mean ``1 / sqrt(H W)``), the head's
        spectral norm and the latent activation (see
        ``lvqmln_torch.core.lipschitz``)."""
        _, height, width = self.input_shape
        act = activation_lipschitz(self.activation)
        bound = 1.0 / float(self.input_std) if self.standardize else 1.0
        for conv in self.convs:
            bound *= conv_norm_bound(conv, (height, width)) * act
        bound *= pool_lipschitz(self.pool) if self.pool is not None else (height * width) ** -0.5
        bound *= linear_norm(self.head.weight)
        return bound * act if self.latent_activation else bound

    def nominal_lipschitz(self) -> float | None:
        """The bound that ``lipschitz="spectral"`` promises (convolutions and head of norm 1),
        cheap enough for every training step; ``None`` without it. [`lipschitz_bound`][lvqmln_torch.core.backbones.CNNBackbone.lipschitz_bound]
        is the exact bound that certificates use."""
        if self.lipschitz is None:
            return None
        _, height, width = self.input_shape
        act = activation_lipschitz(self.activation)
        bound = 1.0 / float(self.input_std) if self.standardize else 1.0
        bound *= act ** (len(self.convs) + (1 if self.latent_activation else 0))
        return bound * (
            pool_lipschitz(self.pool) if self.pool is not None else (height * width) ** -0.5
        )


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
        self.in_features = self.latent_dim = _positive_int("in_features", in_features)

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
