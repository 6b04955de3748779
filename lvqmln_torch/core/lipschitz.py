"""Upper bounds on the L2 Lipschitz constant of a backbone, ``‖f(x) − f(x')‖ ≤ L ‖x − x'‖``.

A chain of maps has at most the product of its parts' constants. The parts:

- a linear layer ``x ↦ W x + b``: its spectral norm ``σ_max(W)``, computed exactly (SVD);
- a 2-D convolution with zero padding (any padding up to ``k − 1``, any stride): at most the
  spectral norm of the *circular* convolution on a torus of ``(H + k_h − 1) × (W + k_w − 1)``
  pixels, of which it is a restriction (zero-embed the image, convolve circularly, crop and
  subsample: the embedding is an isometry, cropping and subsampling do not enlarge norms).
  That norm is the largest singular value of the ``c_out × c_in`` Fourier symbol of the kernel
  over the torus' frequencies (Sedghi, Gupta and Long, "The singular values of convolutional
  layers", ICLR 2019): a guaranteed upper bound, unlike plain power iteration, which
  approaches the norm from below. [`conv_power_iteration`][lvqmln_torch.core.lipschitz.conv_power_iteration]
  gives that lower estimate (via ``conv2d`` / ``conv_transpose2d``) to show how tight the bound is;
- activations: the supremum of their slope (tanh 1, sigmoid 1/4, ReLU 1, leaky ReLU
  ``max(1, |slope|)``, SELU ``scale · alpha`` ≈ 1.758, MaxMin 1);
- pooling: non-overlapping max-pooling 1; average pooling over a ``k_h × k_w`` window with
  stride ``s`` at most ``sqrt(⌈k_h/s_h⌉⌈k_w/s_w⌉ / (k_h k_w))``; the global mean over ``H·W``
  pixels ``1 / sqrt(H W)``;
- a standardisation ``(x − m) / s``: ``1 / min(s)``; batch normalisation in eval mode:
  ``max |γ| / sqrt(var + eps)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as torch_f

__all__ = [
    "ACTIVATION_LIPSCHITZ",
    "MaxMin",
    "activation_lipschitz",
    "conv_norm_bound",
    "conv_power_iteration",
    "conv_symbol_norm",
    "linear_norm",
    "pool_lipschitz",
    "sequential_bound",
]

# torch.nn.SELU's constants: its slope is scale·alpha·exp(x) for x < 0 (at most scale·alpha,
# approached at 0⁻) and scale for x > 0.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

#: The Lipschitz constant of each built-in activation, by name.
ACTIVATION_LIPSCHITZ = {
    "sigmoid": 0.25,
    "relu": 1.0,
    "tanh": 1.0,
    "leaky_relu": 1.0,
    "selu": _SELU_SCALE * _SELU_ALPHA,
    "maxmin": 1.0,
}


class MaxMin(nn.Module):
    """The MaxMin activation (GroupSort with groups of two; Anil, Lucas and Grosse, ICML 2019):
    the features (dim 1) split into two halves ``a``, ``b`` and become ``max(a, b), min(a, b)``
    (an odd last feature passes unchanged). Each pair is sorted, so the map is 1-Lipschitz and
    preserves the gradient's norm, unlike ReLU or tanh: the activation of Lipschitz-controlled
    backbones.

    Shapes:
        ``(n, F, …)`` → ``(n, F, …)``.
    """

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[1] // 2
        a, b, rest = x[:, :half], x[:, half : 2 * half], x[:, 2 * half :]
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b), rest], dim=1)


def activation_lipschitz(module: nn.Module) -> float:
    """The Lipschitz constant of an activation module.

    Raises:
        ValueError: for a module of unknown constant, naming the known ones.
    """
    if isinstance(module, nn.Sigmoid):
        return 0.25
    if isinstance(module, nn.Tanh | nn.ReLU | MaxMin | nn.Identity | nn.Flatten | nn.Dropout):
        return 1.0
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(float(module.negative_slope)))
    if isinstance(module, nn.SELU):
        return _SELU_SCALE * _SELU_ALPHA
    raise ValueError(
        f"no Lipschitz constant known for {type(module).__name__}; known: Sigmoid, Tanh, ReLU, "
        "LeakyReLU, SELU, MaxMin, Identity, Flatten, Dropout (give your backbone a "
        "lipschitz_bound() method)"
    )


def linear_norm(weight: Tensor) -> float:
    """The spectral norm ``σ_max`` of a ``(out, in)`` weight matrix, exactly (in float64): the
    root of the largest eigenvalue of the smaller Gram matrix (``W Wᵀ`` or ``Wᵀ W``), much
    faster than an SVD of ``W`` and as accurate for the largest singular value."""
    w = weight.detach().double().cpu()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return float(torch.linalg.eigvalsh(gram)[-1].clamp_min(0.0).sqrt())


def _check_conv(conv: nn.Conv2d) -> None:
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(
            "conv_norm_bound covers Conv2d with groups=1, dilation=1 and zero padding, got "
            f"groups={conv.groups}, dilation={conv.dilation}, padding_mode={conv.padding_mode!r}"
        )


def conv_symbol_norm(weight: Tensor, size: Sequence[int]) -> Tensor:
    """The largest singular value of the Fourier symbol of a ``(c_out, c_in, k_h, k_w)``
    kernel on a torus of ``size = (N, M)`` pixels: the exact spectral norm of the circular
    convolution there (differentiable: the CNN's spectral parametrisation divides by it)."""
    symbol = torch.fft.fft2(weight, s=tuple(int(s) for s in size))  # (c_out, c_in, N, M)
    return torch.linalg.matrix_norm(symbol.permute(2, 3, 0, 1), ord=2).amax()


def conv_norm_bound(conv: nn.Conv2d, input_hw: Sequence[int]) -> float:
    """An upper bound on the spectral norm of ``conv`` as a linear map on ``input_hw`` images
    (the bias does not count), see the module's docstring.

    Raises:
        ValueError: for grouped, dilated or non-zero-padded convolutions.
    """
    _check_conv(conv)
    (kh, kw), (h, w) = conv.kernel_size, input_hw
    padding = conv.padding
    if isinstance(padding, str):  # "same": PyTorch pads k − 1 in total per side pair
        padding = (0, 0) if padding == "valid" else ((kh - 1) // 2, (kw - 1) // 2)
    if padding[0] > kh - 1 or padding[1] > kw - 1:
        raise ValueError(f"conv_norm_bound needs padding <= kernel_size - 1, got {conv.padding}")
    with torch.no_grad():
        return float(conv_symbol_norm(conv.weight.double().cpu(), (h + kh - 1, w + kw - 1)))


def conv_power_iteration(
    conv: nn.Conv2d, input_hw: Sequence[int], iterations: int = 100, seed: int = 0
) -> float:
    """The power-iteration estimate of ``conv``'s spectral norm on ``input_hw`` images,
    alternating ``conv2d`` and ``conv_transpose2d`` (its adjoint): a *lower* estimate that
    approaches the norm from below; [`conv_norm_bound`][lvqmln_torch.core.lipschitz.conv_norm_bound]
    is the guaranteed upper bound."""
    weight = conv.weight.detach().double().cpu()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, conv.in_channels, *input_hw, dtype=torch.float64, generator=generator)
    sigma = 0.0
    for _ in range(iterations):
        x = (x / x.norm()).requires_grad_(True)
        y = torch_f.conv2d(x, weight, stride=conv.stride, padding=conv.padding)
        sigma = float(y.detach().norm())
        # The adjoint applied to y: the gradient of <conv(x), y> (a conv_transpose2d).
        (x,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
    return sigma


def pool_lipschitz(pool: nn.Module) -> float:
    """The Lipschitz constant of a ``MaxPool2d`` or ``AvgPool2d`` (see the module docstring).

    Raises:
        ValueError: for other modules or dilated pooling.
    """
    pair = nn.modules.utils._pair
    kh, kw = pair(pool.kernel_size)
    sh, sw = pair(pool.stride or pool.kernel_size)
    # How many windows one input pixel can fall into.
    overlap = math.ceil(kh / sh) * math.ceil(kw / sw)
    if isinstance(pool, nn.MaxPool2d):
        if pair(pool.dilation) != (1, 1):
            raise ValueError("pool_lipschitz covers undilated max-pooling only")
        return math.sqrt(overlap)
    if isinstance(pool, nn.AvgPool2d):
        return math.sqrt(overlap / (kh * kw))
    raise ValueError(f"pool_lipschitz covers MaxPool2d and AvgPool2d, not {type(pool).__name__}")


def _batchnorm_lipschitz(norm: nn.modules.batchnorm._BatchNorm) -> float:
    if norm.training or norm.running_var is None:
        raise ValueError("a batch norm layer has a Lipschitz constant in eval mode only")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach().double().abs()
    return float(scale.max())


def sequential_bound(modules: Sequence[nn.Module], input_shape: Sequence[int]) -> float:
    """An upper bound on the Lipschitz constant of the chain ``modules`` applied in order to
    inputs of per-sample ``input_shape``: a helper for a custom backbone's own
    ``lipschitz_bound()``. Covers ``Linear``, ``Conv2d``, the activations of
    [`activation_lipschitz`][lvqmln_torch.core.lipschitz.activation_lipschitz], ``MaxPool2d``,
    ``AvgPool2d``, ``BatchNorm1d/2d`` (eval mode) and nested ``nn.Sequential``.

    Raises:
        ValueError: for a module it does not cover.
    """
    bound = 1.0
    shape = tuple(int(s) for s in input_shape)
    for module in modules:
        if isinstance(module, nn.Sequential):
            bound *= sequential_bound(list(module), shape)
        elif isinstance(module, nn.Linear):
            bound *= linear_norm(module.weight)
        elif isinstance(module, nn.Conv2d):
            bound *= conv_norm_bound(module, shape[-2:])
        elif isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            bound *= pool_lipschitz(module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            bound *= _batchnorm_lipschitz(module)
        else:
            bound *= activation_lipschitz(module)
        with torch.no_grad():  # the next module's input shape
            probe = torch.zeros(1, *shape, dtype=next(module.parameters(), torch.zeros(0)).dtype)
            shape = tuple(module(probe).shape[1:])
    return bound
