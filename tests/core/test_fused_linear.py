"""The MLP's oneDNN training path (issue 22): taken exactly where it cannot change what a user
sees, and computing what ``nn.Linear`` computes (values and gradients, first and second order,
with every activation and Lipschitz parametrisation, NaN included) up to float32 rounding."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from lvqmln_torch.core import fused_linear as fused_module
from lvqmln_torch.core.backbones import MLPBackbone
from lvqmln_torch.core.fused_linear import fused_linear, fused_path_available, use_fused_path

needs_onednn = pytest.mark.skipif(
    not fused_path_available(), reason="this PyTorch build has no usable oneDNN linear"
)
FUSED = "_FusedLinearBackward"


@pytest.fixture(autouse=True)
def fuse_small_layers(monkeypatch, request):
    """The tests' layers are small: fuse them whatever their size (but in the size test)."""
    if "size" not in request.node.name:
        monkeypatch.setattr(fused_module, "FUSED_MIN_MACS", 0)


@contextlib.contextmanager
def onednn(enabled: bool):
    """PyTorch's own oneDNN switch, restored afterwards."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def _backbone(activation="sigmoid", latent_activation=True, lipschitz=None):
    return MLPBackbone(
        7,
        (6, 5),
        3,
        activation=activation,
        latent_activation=latent_activation,
        lipschitz=lipschitz,
        generator=torch.Generator().manual_seed(0),
    ).train()


def _inputs(n=9):
    return torch.randn(n, 7, generator=torch.Generator().manual_seed(1)) * 2


def _fused_nodes(out):
    """How many fused nodes the autograd graph of ``out`` has."""
    seen, stack, count = set(), [out.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == FUSED
        stack.extend(next_node for next_node, _ in node.next_functions)
    return count


def _uses_fused(out):
    return _fused_nodes(out) > 0


def _output_and_grads(backbone, x, enabled):
    """On a copy: a spectral parametrisation's power iteration moves on at every training
    forward, so both paths must start from the same state."""
    backbone = copy.deepcopy(backbone)
    x = x.clone().requires_grad_(True)
    with onednn(enabled):
        out = backbone(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    grads = [x.grad] + [p.grad for p in backbone.parameters()]
    return out.detach(), grads, _uses_fused(out)


@pytest.mark.numerics  # oneDNN against MKL: a cross-engine comparison
@needs_onednn
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "selu", "maxmin"])
@pytest.mark.parametrize("latent_activation", [True, False])
@pytest.mark.parametrize("lipschitz", [None, "spectral", "orthogonal"])
def test_fused_equals_nn_linear(activation, latent_activation, lipschitz):
    backbone = _backbone(activation, latent_activation, lipschitz)
    x = _inputs()
    fused_out, fused_grads, fused_used = _output_and_grads(backbone, x, True)
    plain_out, plain_grads, plain_used = _output_and_grads(backbone, x, False)
    assert fused_used and not plain_used
    torch.testing.assert_close(fused_out, plain_out, rtol=1e-5, atol=1e-6)
    for fused, plain in zip(fused_grads, plain_grads):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-6)


@pytest.mark.numerics  # oneDNN against MKL: a cross-engine comparison
@needs_onednn
def test_second_order_gradients_equal_nn_linear():
    """A gradient penalty (create_graph=True) differentiates the fused backward again."""
    backbone, x = _backbone("tanh"), _inputs()

    def penalty_grads(enabled):
        inputs = x.clone().requires_grad_(True)
        with onednn(enabled):
            out = backbone(inputs)
            assert _uses_fused(out) == enabled
            (grad_x,) = torch.autograd.grad(out.pow(2).sum(), inputs, create_graph=True)
            grad_x.pow(2).sum().backward()
        grads = [p.grad.clone() for p in backbone.parameters()]
        backbone.zero_grad(set_to_none=True)
        return grads

    for fused, plain in zip(penalty_grads(True), penalty_grads(False)):
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-6)


@needs_onednn
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_nan_reaches_the_output(activation):
    """A diverged input stays NaN (oneDNN's own ReLU would map it to 0, so ReLU is not fused)."""
    x = _inputs()
    x[2, 0] = float("nan")
    out = _backbone(activation)(x)
    assert _uses_fused(out)
    assert out[2].isnan().all() and not out[[0, 1, 3]].isnan().any()


@pytest.mark.numerics  # oneDNN against MKL: a cross-engine comparison
@needs_onednn
def test_frozen_weights_and_no_bias():
    """Only the gradients asked for: an input gradient through frozen weights, no bias."""
    layer = nn.Linear(4, 3, bias=False)
    layer.weight.requires_grad_(False)
    x = torch.randn(5, 4, requires_grad=True)
    fused_linear(x, layer, nn.Sigmoid()).sum().backward()
    expected = torch.autograd.grad(torch.sigmoid(x @ layer.weight.T).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is None


def test_plain_path_wherever_a_user_could_tell():
    """Inference, export and explanations, other dtypes, autocast, hooks and the switch off
    all run nn.Linear."""
    backbone, x = _backbone(), _inputs()

    def fused(model=backbone, inputs=x):
        out = model(inputs)
        return out.grad_fn is not None and _uses_fused(out)

    assert not fused(backbone.eval())
    backbone.train()
    with torch.no_grad():
        assert not fused()
    assert not fused(_backbone().double(), x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused()
    with onednn(False):
        assert not fused()
    handle = backbone.layers[1].register_forward_hook(lambda module, args, out: None)
    assert not fused()
    handle.remove()
    assert fused() == fused_path_available()
    assert not use_fused_path(backbone, x[:0], backbone.layers)  # an empty batch


@needs_onednn
def test_only_layers_large_enough_take_the_oneDNN_path_by_size():
    """Per layer: a product of FUSED_MIN_MACS multiply-adds and more is fused, a smaller one
    (whose oneDNN setup would cost more than it saves) runs nn.Linear."""
    width = 1 << 10
    batch = fused_module.FUSED_MIN_MACS // (width * width)
    backbone = MLPBackbone(width, (width,), 2, generator=torch.Generator().manual_seed(0)).train()
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(1))
    # the width x width layer; the last (width x 2) is too small
    assert _fused_nodes(backbone(x)) == 1
    assert not _uses_fused(backbone(x[: batch - 1]))  # one row less: no layer is large enough
