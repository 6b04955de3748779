"""The CNN backbone's heads (issue 19): the pooled head's layout and shapes on any image size,
its conv activation and dense layers, and CNNs of older versions (pickled objects) that
keep computing what they computed."""

import pickle

import pytest
import torch
from torch import nn

from lvqmln_torch.core.cnn import CNNBackbone


def _ours(shape, **kwargs):
    settings = dict(
        channels=(4, 6),
        kernel_sizes=(3, 3),
        latent_dim=3,
        activation="tanh",
        head="pooled",
        conv_activation="relu",
        hidden_sizes=(5,),
        generator=torch.Generator().manual_seed(0),
    )
    return CNNBackbone(shape, **{**settings, **kwargs})


@pytest.mark.parametrize(
    "shape, pooled",
    [((1, 28, 28), (7, 7)), ((1, 8, 8), (2, 2)), ((2, 5, 3), (1, 1)), ((1, 1, 4), (1, 1))],
)
def test_pooled_head_halves_after_every_convolution(shape, pooled):
    cnn = _ours(shape)
    assert cnn.pooled_hw == pooled
    assert cnn.dense[0].in_features == 6 * pooled[0] * pooled[1]
    assert cnn.conv_input_hw[0] == shape[1:]
    z = cnn(torch.rand(4, *shape))
    assert z.shape == (4, 3) and float(z.detach().abs().max()) < 1.0  # tanh codes


def test_pooled_forward_is_the_layers_in_order():
    cnn = _ours((1, 8, 8)).double()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    h = nn.functional.max_pool2d(torch.relu(cnn.convs[0](x)), 2)
    h = nn.functional.max_pool2d(torch.relu(cnn.convs[1](h)), 2).flatten(1)
    expected = torch.tanh(cnn.head(torch.relu(cnn.dense[0](h))))
    torch.testing.assert_close(cnn(x), expected, rtol=1e-12, atol=1e-12)


def test_conv_activation_defaults_to_the_activation():
    cnn = CNNBackbone((1, 6, 6), activation="sigmoid")
    assert isinstance(cnn.conv_activation, nn.Sigmoid) and len(cnn.dense) == 0
    with pytest.raises(ValueError, match="Unknown activation 'rectified'. Valid activations"):
        _ours((1, 6, 6), conv_activation="rectified")
    with pytest.raises(ValueError, match="hidden_sizes entries must be a positive integer"):
        _ours((1, 6, 6), hidden_sizes=(0,))


def test_a_cnn_pickled_before_the_pooled_head_computes_the_same(monkeypatch):
    """An older version's CNN object (no conv_activation, dense or conv_pools) unpickles as the
    network it was: the latent activation after the convolutions, no dense layers."""
    gen = torch.Generator().manual_seed(1)
    cnn = CNNBackbone((1, 6, 6), (3,), (3,), 2, "tanh", generator=gen, head="flatten")
    x = torch.rand(4, 1, 6, 6)
    expected = cnn(x)
    old_state = cnn.__getstate__()
    old_state = {**old_state, "_modules": dict(old_state["_modules"])}
    for name in ("conv_activation", "conv_pools", "dense"):
        del old_state["_modules"][name]
    for name in ("conv_input_hw", "pooled_hw"):
        del old_state[name]
    monkeypatch.setattr(CNNBackbone, "__getstate__", lambda self: old_state, raising=False)
    restored = pickle.loads(pickle.dumps(cnn))
    assert isinstance(restored.conv_activation, nn.Tanh) and len(restored.dense) == 0
    torch.testing.assert_close(restored(x), expected, rtol=0, atol=0)
    assert restored.lipschitz_bound() == pytest.approx(cnn.lipschitz_bound(), rel=1e-12)
