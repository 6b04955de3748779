"""Linear layers trained through oneDNN on the CPU: ``act(x @ Wᵀ + b)`` as one autograd node.

A training step of the MLP backbone is mostly matrix products. On the CPU PyTorch runs
``nn.Linear`` through MKL's ``sgemm``, which on non-Intel x86 processors takes a generic code
path; oneDNN (bundled with every x86 PyTorch build) picks its kernels from the instruction set
instead, and can add the bias and apply a sigmoid or tanh in the same pass. On a 2-core AMD
EPYC (Zen 4) the forward products of a 784 → 512 → 256 → 64 MLP at batch 1024 ran 7-16 %
faster through oneDNN than through MKL (``benchmarks/step_anatomy.py`` times the products and
the whole step both ways). The backward pass computes the gradient of the layer's input
through oneDNN as well and the weight gradient through ``torch.mm`` (oneDNN is slower on that
transposed product).

[`MLPBackbone`][lvqmln_torch.core.backbones.MLPBackbone] takes this path for the layers whose
product is large enough to repay oneDNN's per-call setup
([`FUSED_MIN_MACS`][lvqmln_torch.core.fused_linear.FUSED_MIN_MACS]), and only where it cannot
change what a user sees: in training mode with gradients on, float32 on the CPU, outside
autocast, tracing and compilation, on layers without hooks, and when oneDNN is enabled
(``torch.backends.mkldnn.enabled``, PyTorch's own switch: set it to ``False`` to train
through ``nn.Linear``). Inference, export and explanations always run ``nn.Linear``. Results
equal ``nn.Linear``'s up to float32 rounding (another summation order), and the backward is
differentiable again (``create_graph=True`` computes it with plain torch operations).
ReLU is not fused: oneDNN's maps NaN to 0, which would hide a diverging run.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FUSED_ACTIVATIONS",
    "FUSED_MIN_MACS",
    "fused_linear",
    "fused_path_available",
    "use_fused_path",
    "worth_fusing",
]

FUSED_ACTIVATIONS: dict[type, str] = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
"""Activation modules applied inside oneDNN's product (the name is oneDNN's post-op); any
other activation runs as its own torch operation after the fused product."""

FUSED_MIN_MACS = 1 << 24
"""A layer takes the oneDNN path from this many multiply-adds per product (batch x inputs x
outputs, about 16.8 million) up. A oneDNN call costs about 20 µs of setup (against 4 µs for
``nn.functional.linear`` on a 64 x 4 input) and the autograd node some more, so small layers
ran about twice as slow through it (a 64 x 32 -> 8 layer's forward and backward: 180 against
82 µs), while the whole step of figure 3's MLP (batch 1024, layers of 411, 134 and 16.8 million
multiply-adds) ran 3 % faster with all three fused (16.50 against 17.03 ms per step, six
alternating rounds on a 2-core AMD EPYC; 16.74 ms with only the two largest) and an MNIST-sized
one at batch 128 (51, 16.8 and 2.1 million) as fast as through ``nn.Linear``, within the
machine's noise."""

_ACTIVATION_BACKWARD = {
    "sigmoid": torch.ops.aten.sigmoid_backward,  # grad · y (1 − y)
    "tanh": torch.ops.aten.tanh_backward,  # grad · (1 − y²)
}


def _linear_op() -> Any:
    return torch.ops.mkldnn._linear_pointwise


@functools.cache
def fused_path_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear operator and it computes what
    ``nn.Linear`` computes (checked once, on a small product with a sigmoid)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        x, weight = torch.randn(8, 5, generator=generator), torch.randn(3, 5, generator=generator)
        bias = torch.randn(3, generator=generator)
        out = _linear_op()(x, weight, bias, "sigmoid", [], "")
        expected = torch.sigmoid(nn.functional.linear(x, weight, bias))
        return out.shape == expected.shape and bool(torch.allclose(out, expected, atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False  # no such operator in this build: MLPBackbone trains through nn.Linear


def _tracing() -> bool:
    compiling = getattr(torch.compiler, "is_compiling", None)
    return (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or (compiling is not None and compiling())
    )


def _has_hooks(module: nn.Module) -> bool:
    hooks = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or getattr(hooks, "_global_forward_hooks", None)
        or getattr(hooks, "_global_forward_pre_hooks", None)
    )


def use_fused_path(module: nn.Module, x: Tensor, layers: Sequence[nn.Linear]) -> bool:
    """Whether ``module`` (in training mode) should run ``layers`` (``nn.Linear``) on ``x``
    through [`fused_linear`][lvqmln_torch.core.fused_linear.fused_linear] (the conditions are in
    the module docstring)."""
    if not (module.training and torch.is_grad_enabled()):
        return False
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2 or x.shape[0] == 0:
        return False
    if not any(worth_fusing(x.shape[0], layer) for layer in layers):
        return False
    if not torch.backends.mkldnn.enabled or torch.is_autocast_enabled("cpu") or _tracing():
        return False
    if _has_hooks(module) or any(_has_hooks(layer) for layer in layers):
        return False
    # The parameters, not layer.weight: a parametrised weight is computed anew at each access
    # (a spectral norm's power iteration would step twice).
    if any(p.dtype != torch.float32 or p.device != x.device for p in module.parameters()):
        return False
    return fused_path_available()


def worth_fusing(batch: int, layer: nn.Linear) -> bool:
    """Whether a layer's product at this batch size is large enough for the oneDNN path (see
    [`FUSED_MIN_MACS`][lvqmln_torch.core.fused_linear.FUSED_MIN_MACS])."""
    return batch * layer.in_features * layer.out_features >= FUSED_MIN_MACS


class _FusedLinear(torch.autograd.Function):
    """``post_op(x @ weightᵀ + bias)`` through oneDNN, with its analytic backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, post_op: str) -> Tensor:
        out = _linear_op()(x.contiguous(), weight, bias, post_op, [], "")
        ctx.post_op = post_op
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, out = ctx.saved_tensors
        if ctx.post_op != "none":
            grad = _ACTIVATION_BACKWARD[ctx.post_op](grad, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: differentiable operations only
                grad_x = grad @ weight
            else:
                grad_x = _linear_op()(grad.contiguous(), weight.T, None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_weight = grad.T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=0)
        return grad_x, grad_weight, grad_bias, None


def fused_linear(x: Tensor, layer: nn.Linear, activation: nn.Module | None) -> Tensor:
    """``activation(layer(x))`` through oneDNN (see the module docstring).

    Args:
        x: ``(n, layer.in_features)`` float32 CPU input.
        layer: the linear layer (its ``weight`` may be parametrised).
        activation: applied to the product; ``None`` for none. Sigmoid and tanh run inside
            oneDNN's product (see [`FUSED_ACTIVATIONS`][lvqmln_torch.core.fused_linear.FUSED_ACTIVATIONS]), any other as its own
            operation.

    Returns:
        ``(n, layer.out_features)``.
    """
    post_op = FUSED_ACTIVATIONS.get(type(activation), "none")
    out = _FusedLinear.apply(x, layer.weight, layer.bias, post_op)
    if activation is not None and post_op == "none":
        out = activation(out)
    return out
