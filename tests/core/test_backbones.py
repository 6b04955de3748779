"""Unit tests of ``lvqmln_torch.core.backbones`` (no JAX): the reference initialisation (Glorot
bounds, zero biases, seeded), output shapes and ranges, the activation registry and the errors
for bad configurations and bad input.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lvqmln_torch.core.backbones import ACTIVATIONS, CNNBackbone, MLPBackbone, get_activation

ACTIVATION_NAMES = ["sigmoid", "relu", "tanh", "leaky_relu", "selu"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _glorot_limit(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def _assert_glorot(weight: torch.Tensor, limit: float) -> None:
    """Inside ±limit, and spread over it: U(±a) has variance a²/3 and, for this many draws,
    reaches beyond 0.8·a (a too-small limit or a normal init would fail one of these)."""
    w = weight.detach().flatten()
    assert w.abs().max() <= limit
    assert w.abs().max() > 0.8 * limit
    assert abs(w.var().item() - limit**2 / 3) < 0.25 * limit**2 / 3


def test_activation_registry():
    # upstream's activations, then ours (maxmin: for Lipschitz-controlled backbones)
    assert list(ACTIVATIONS) == [*ACTIVATION_NAMES, "maxmin"]
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(get_activation("leaky_relu")(x), torch.where(x > 0, x, 0.01 * x))
    assert isinstance(get_activation("selu"), nn.SELU)
    assert get_activation("tanh") is not get_activation("tanh")  # fresh modules


def test_mlp_init_is_glorot_uniform_with_zero_biases():
    mlp = MLPBackbone(40, hidden_sizes=(60, 30), latent_dim=20, generator=_gen(0))
    sizes = [40, 60, 30, 20]
    assert len(mlp.layers) == 3
    for layer, fan_in, fan_out in zip(mlp.layers, sizes[:-1], sizes[1:]):
        assert tuple(layer.weight.shape) == (fan_out, fan_in)
        _assert_glorot(layer.weight, _glorot_limit(fan_in, fan_out))
        assert torch.equal(layer.bias, torch.zeros(fan_out))


def test_cnn_init_uses_kernel_area_in_the_fans():
    cnn = CNNBackbone(
        (3, 8, 6), channels=(20, 30), kernel_sizes=(3, 5), latent_dim=10, generator=_gen(0)
    )
    for conv, c_in, c_out, k in zip(cnn.convs, (3, 20), (20, 30), (3, 5)):
        assert tuple(conv.weight.shape) == (c_out, c_in, k, k)
        _assert_glorot(conv.weight, _glorot_limit(k * k * c_in, k * k * c_out))
        assert torch.equal(conv.bias, torch.zeros(c_out))
    assert tuple(cnn.head.weight.shape) == (10, 30)
    # The head is small (300 draws): only the bound and the zero bias.
    assert cnn.head.weight.abs().max() <= _glorot_limit(30, 10)
    assert torch.equal(cnn.head.bias, torch.zeros(10))


@pytest.mark.parametrize(
    "make",
    [
        lambda g: MLPBackbone(5, (7, 4), 3, generator=g),
        lambda g: CNNBackbone((2, 5, 4), (3, 4), (3, 1), 2, generator=g),
    ],
)
def test_same_generator_seed_same_weights(make):
    a, b, c = make(_gen(11)), make(_gen(11)), make(_gen(12))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    weights = [p for name, p in a.named_parameters() if name.endswith("weight")]
    others = [p for name, p in c.named_parameters() if name.endswith("weight")]
    assert all(not torch.equal(p, q) for p, q in zip(weights, others))
    # reset_parameters with the same seed restores the initial weights.
    with torch.no_grad():
        for p in c.parameters():
            p.add_(1.0)
    c.reset_parameters(_gen(11))
    for pa, pc in zip(a.parameters(), c.parameters()):
        assert torch.equal(pa, pc)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("latent_activation", [True, False])
def test_mlp_forward_is_act_of_affine_per_layer(activation, latent_activation):
    mlp = MLPBackbone(4, (6, 5), 3, activation, latent_activation, generator=_gen(1)).double()
    x = torch.randn(8, 4, generator=_gen(2), dtype=torch.float64)
    act = get_activation(activation)
    expected = x
    for i, layer in enumerate(mlp.layers):
        expected = expected @ layer.weight.T + layer.bias
        if i < 2 or latent_activation:
            expected = act(expected)
    out = mlp(x)
    assert out.shape == (8, 3) and out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=1e-15)


def test_sigmoid_latent_lies_in_the_unit_interval_unless_linear():
    x = 4 * torch.randn(64, 3, generator=_gen(3), dtype=torch.float64)
    z = MLPBackbone(3, (), 2, "sigmoid", generator=_gen(4)).double()(x)
    assert ((z > 0) & (z < 1)).all()
    linear = MLPBackbone(3, (), 2, "sigmoid", latent_activation=False, generator=_gen(4)).double()
    assert ((linear(x) < 0) | (linear(x) > 1)).any()


def test_mlp_without_hidden_layers_is_one_layer():
    mlp = MLPBackbone(3, hidden_sizes=(), latent_dim=2)
    assert len(mlp.layers) == 1 and tuple(mlp.layers[0].weight.shape) == (2, 3)


@pytest.mark.parametrize("latent_activation", [True, False])
def test_cnn_shapes_and_pooling(latent_activation):
    cnn = CNNBackbone((1, 5, 9), (4,), (3,), 2, "relu", latent_activation, generator=_gen(5))
    x = torch.randn(3, 1, 5, 9, generator=_gen(6))
    out = cnn(x)
    assert out.shape == (3, 2)
    # Same padding keeps H and W; then global average pooling and the head.
    feat = torch.relu(cnn.convs[0](x))
    assert feat.shape == (3, 4, 5, 9)
    expected = cnn.head(feat.mean(dim=(2, 3)))
    torch.testing.assert_close(out, torch.relu(expected) if latent_activation else expected)


# --- bad configurations and bad input -------------------------------------------------------


def test_unknown_activation_lists_the_valid_ones():
    valid = "sigmoid, relu, tanh, leaky_relu, selu"
    with pytest.raises(ValueError, match=f"Unknown activation 'gelu'. Valid activations: {valid}"):
        MLPBackbone(3, activation="gelu")
    with pytest.raises(ValueError, match=f"Valid activations: {valid}"):
        CNNBackbone((1, 4, 4), activation="swish")
    with pytest.raises(ValueError, match="Unknown activation None"):
        get_activation(None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(in_features=0), "in_features must be a positive integer, got 0"),
        (dict(in_features=3, hidden_sizes=(4, -1)), "hidden_sizes entries must be a positive"),
        (dict(in_features=3, latent_dim=2.0), "latent_dim must be a positive integer, got 2.0"),
        (dict(in_features=True), "in_features must be a positive integer, got True"),
    ],
)
def test_mlp_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLPBackbone(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(input_shape=(4, 4)), r"input_shape must be \(C, H, W\), got \(4, 4\)"),
        (dict(input_shape=(1, 0, 4)), "input_shape entries must be a positive integer"),
        (dict(input_shape=(1, 4, 4), channels=(2, 3), kernel_sizes=(3,)), "same length"),
        (dict(input_shape=(1, 4, 4), channels=(0,), kernel_sizes=(3,)), "channels entries"),
        (dict(input_shape=(1, 4, 4), channels=(2,), kernel_sizes=(0,)), "kernel_sizes entries"),
        (dict(input_shape=(1, 4, 4), latent_dim=0), "latent_dim must be a positive integer"),
    ],
)
def test_cnn_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CNNBackbone(**kwargs)


def test_mlp_bad_input():
    mlp = MLPBackbone(4)
    with pytest.raises(ValueError, match=r"expects 2-D input \(n, 4\), got shape \(4,\)"):
        mlp(torch.zeros(4))
    with pytest.raises(ValueError, match=r"expects 2-D input \(n, 4\), got shape \(2, 1, 4\)"):
        mlp(torch.zeros(2, 1, 4))
    with pytest.raises(ValueError, match=r"expects 4 features, got 3 \(input shape \(5, 3\)\)"):
        mlp(torch.zeros(5, 3))


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 1, 4, 5), (1, 5, 4), (2, 1, 5, 4, 1)])
def test_cnn_bad_input(shape):
    cnn = CNNBackbone((1, 5, 4), (2,), (3,))
    with pytest.raises(ValueError, match=r"expects images of shape \(n, 1, 5, 4\), got"):
        cnn(torch.zeros(shape))
