"""The convolutional backbone: convolutions, a head that turns their feature maps into one
vector, optional dense layers and a linear layer to the latent space.

The class defaults are upstream's (prosemble) reference architecture, which the parity tests
run: ReLU everywhere, ``head="mean"`` (global average pooling), raw inputs. ``LVQMLN(backbone=
"cnn")`` and the estimator build ours (see
[`CNN_DEFAULTS`][lvqmln_torch.sklearn.params.CNN_DEFAULTS] and ``docs/images.md``):
``head="pooled"``, two ReLU convolutions of 32 and 64 channels each followed by a 2×2
max-pool, a dense ReLU layer of 128 units, a linear layer to the latent space and tanh there,
on standardised pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .layers import get_activation, glorot_weight_, positive_int
from .lipschitz import activation_lipschitz, conv_norm_bound, linear_norm, pool_lipschitz
from .lipschitz_control import CNN_LIPSCHITZ_MODES, check_lipschitz_mode, constrain

__all__ = ["CNN_HEADS", "CNNBackbone"]

CNN_HEADS = ("pooled", "flatten", "mean")
"""How the CNN turns its feature maps into one vector: ``"pooled"`` (a 2×2 max-pool after
every convolution, then flatten), ``"flatten"`` (convolutions at full resolution, one 2×2
max-pool, flatten) or ``"mean"`` (global average pooling: upstream's)."""


def _halving_pool(height: int, width: int) -> tuple[nn.MaxPool2d, int, int]:
    """A non-overlapping 2×2 max-pool (a window of 1 along a side of 1 pixel) and the size
    of its output."""
    window = (min(2, height), min(2, width))
    return nn.MaxPool2d(window), height // window[0], width // window[1]


class CNNBackbone(nn.Module):
    """Convolutional backbone: per layer a convolution (stride 1, SAME padding), its bias and
    ``conv_activation`` (with ``head="pooled"`` then a 2×2 max-pool); the head's pooling;
    the dense layers (``hidden_sizes``, each with ``conv_activation``); a linear layer to
    ``latent_dim`` and ``activation``.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        channels: output channels of each conv layer.
        kernel_sizes: kernel size of each conv layer (same length as ``channels``).
        latent_dim: latent dimension.
        activation: the latent codes' activation, one of
            [`ACTIVATIONS`][lvqmln_torch.core.layers.ACTIVATIONS].
        latent_activation: apply ``activation`` after the last linear layer.
        generator: optional generator for a reproducible initialisation.
        head: one of [`CNN_HEADS`][lvqmln_torch.core.cnn.CNN_HEADS].
        standardize: subtract one global mean and divide by one global standard deviation
            of the pixels (scalar buffers ``input_mean`` and ``input_std``, in the
            ``state_dict``), measured by
            [`set_input_statistics`][lvqmln_torch.core.cnn.CNNBackbone.set_input_statistics]
            on the sample the prototypes are initialised from; 0 and 1 until then.
        lipschitz: ``None`` (free weights) or ``"spectral"``: every convolution and linear
            layer normalised to norm 1 on each forward pass (see
            [`constrain`][lvqmln_torch.core.lipschitz_control.constrain]).
        conv_activation: the activation after the convolutions and dense layers; ``None``:
            ``activation``.
        hidden_sizes: widths of the dense layers between the pooled features and the last
            linear layer (may be empty).

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
        conv_activation: str | None = None,
        hidden_sizes: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.lipschitz = check_lipschitz_mode(
            lipschitz, CNN_LIPSCHITZ_MODES, " for the CNN ('orthogonal' is the MLP's)"
        )
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        for dim in input_shape:
            positive_int("input_shape entries", dim)
        if len(channels) != len(kernel_sizes):
            raise ValueError(
                f"channels and kernel_sizes must have the same length, got {len(channels)} "
                f"and {len(kernel_sizes)}"
            )
        if head not in CNN_HEADS:
            raise ValueError(f"Unknown CNN head {head!r}. Valid heads: {', '.join(CNN_HEADS)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent_dim = positive_int("latent_dim", latent_dim)
        self.activation = get_activation(activation)
        self.conv_activation = get_activation(conv_activation or activation)
        self.latent_activation = latent_activation
        self.head_kind = head
        self.standardize = bool(standardize)
        if self.standardize:
            self.register_buffer("input_mean", torch.tensor(0.0))
            self.register_buffer("input_std", torch.tensor(1.0))
        c_in, height, width = self.input_shape
        convs, pools, self.conv_input_hw = [], [], []
        for c_out, k in zip(channels, kernel_sizes):
            c_out = positive_int("channels entries", c_out)
            k = positive_int("kernel_sizes entries", k)
            convs.append(nn.Conv2d(c_in, c_out, kernel_size=k, stride=1, padding="same"))
            self.conv_input_hw.append((height, width))
            if head == "pooled":
                pool, height, width = _halving_pool(height, width)
                pools.append(pool)
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.conv_pools = nn.ModuleList(pools)  # empty unless head="pooled"
        self.pool: nn.Module | None = None
        if head == "flatten":
            self.pool, height, width = _halving_pool(height, width)
        self.pooled_hw = (height, width)
        features = c_in if head == "mean" else c_in * height * width
        dense = []
        for size in hidden_sizes:
            dense.append(nn.Linear(features, positive_int("hidden_sizes entries", size)))
            features = dense[-1].out_features
        self.dense = nn.ModuleList(dense)
        self.head = nn.Linear(features, self.latent_dim)
        self.reset_parameters(generator)
        for conv, hw in zip(self.convs, self.conv_input_hw):
            constrain(conv, self.lipschitz, hw)
        for layer in [*self.dense, self.head]:
            constrain(layer, self.lipschitz)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Pickled before the pooled head and dense layers: convolutions at full resolution
        # with the latent activation after them, no dense layers.
        if "conv_activation" not in self._modules:
            self.conv_activation = type(self.activation)()
            self.conv_pools, self.dense = nn.ModuleList(), nn.ModuleList()
            _, height, width = self.input_shape
            self.conv_input_hw = [(height, width)] * len(self.convs)
            if self.pool is not None:
                height, width = _halving_pool(height, width)[1:]
            self.pooled_hw = (height, width)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform kernels with fan_in = k·k·c_in, fan_out = k·k·c_out, Glorot-uniform
        dense weights; zero biases."""
        for conv in self.convs:
            k = conv.kernel_size[0] * conv.kernel_size[1]
            glorot_weight_(conv, k * conv.in_channels, k * conv.out_channels, generator)
            nn.init.zeros_(conv.bias)
        for layer in [*self.dense, self.head]:
            glorot_weight_(layer, layer.in_features, layer.out_features, generator)
            nn.init.zeros_(layer.bias)

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
        for i, conv in enumerate(self.convs):
            x = self.conv_activation(conv(x))
            if self.conv_pools:
                x = self.conv_pools[i](x)
        if self.head_kind == "mean":
            x = x.mean(dim=(2, 3))
        else:
            x = (self.pool(x) if self.pool is not None else x).flatten(1)
        for layer in self.dense:
            x = self.conv_activation(layer(x))
        x = self.head(x)
        return self.activation(x) if self.latent_activation else x

    def _chain_bound(
        self, conv_norm: Callable[[nn.Conv2d, tuple[int, int]], float], norm: Callable
    ) -> float:
        """The product of the parts' Lipschitz constants, with ``conv_norm(conv, hw)`` and
        ``norm(linear)`` the layers' norms: ``1 / input_std`` (with ``standardize``), each
        convolution times ``conv_activation``'s constant, the poolings (max-pooling 1, the
        global mean ``1 / sqrt(H W)``), each dense layer times ``conv_activation``'s
        constant, the last linear layer and ``activation`` (with ``latent_activation``)."""
        hidden = activation_lipschitz(self.conv_activation)
        bound = 1.0 / float(self.input_std) if self.standardize else 1.0
        for conv, hw in zip(self.convs, self.conv_input_hw):
            bound *= conv_norm(conv, hw) * hidden
        for pool in [*self.conv_pools, *([self.pool] if self.pool is not None else [])]:
            bound *= pool_lipschitz(pool)
        if self.head_kind == "mean":
            bound *= (self.pooled_hw[0] * self.pooled_hw[1]) ** -0.5
        for layer in self.dense:
            bound *= norm(layer) * hidden
        bound *= norm(self.head)
        return bound * activation_lipschitz(self.activation) if self.latent_activation else bound

    def lipschitz_bound(self) -> float:
        """An upper bound on the L2 Lipschitz constant: the product of every part's constant
        (convolutions bounded on the images they see, linear layers' spectral norms exact;
        see ``lvqmln_torch.core.lipschitz``)."""
        return self._chain_bound(conv_norm_bound, lambda layer: linear_norm(layer.weight))

    def nominal_lipschitz(self) -> float | None:
        """The bound that ``lipschitz="spectral"`` promises (every convolution and linear layer
        of norm 1), cheap enough for every training step; ``None`` without it.
        [`lipschitz_bound`][lvqmln_torch.core.cnn.CNNBackbone.lipschitz_bound] is the exact
        bound that certificates use."""
        if self.lipschitz is None:
            return None
        return self._chain_bound(lambda conv, hw: 1.0, lambda layer: 1.0)
