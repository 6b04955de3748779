"""Unit tests of ``lvqmln_torch.io.interop`` (no JAX needed): the seed's parameter layout, exact
round trips in both directions, dtype handling, image layout conversion, and the errors.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _parity_utils import images_nchw_to_nhwc

from lvqmln_torch.core.backbones import CNNBackbone, MLPBackbone
from lvqmln_torch.io.interop import (
    backbone_from_jax,
    backbone_to_jax,
    images_nhwc_to_nchw,
)


def _mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> MLPBackbone:
    gen = torch.Generator().manual_seed(seed)
    return MLPBackbone(4, (6, 5), 3, "tanh", generator=gen).to(dtype)


def _cnn(seed: int = 0, dtype: torch.dtype = torch.float32) -> CNNBackbone:
    gen = torch.Generator().manual_seed(seed)
    return CNNBackbone((3, 5, 4), (2, 4), (3, 5), 2, "tanh", generator=gen).to(dtype)


def _randomise_biases(module: torch.nn.Module) -> None:
    """Non-zero biases, so that a bias lost or swapped in conversion shows."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))


def test_mlp_layout():
    mlp = _mlp()
    _randomise_biases(mlp)
    params = backbone_to_jax(mlp)
    assert isinstance(params, list) and len(params) == 3
    for (w, b), layer in zip(params, mlp.layers):
        assert isinstance(w, np.ndarray) and isinstance(b, np.ndarray)
        assert w.shape == (layer.in_features, layer.out_features) and w.dtype == np.float32
        np.testing.assert_array_equal(w, layer.weight.detach().numpy().T)
        np.testing.assert_array_equal(b, layer.bias.detach().numpy())
    # The layout means x @ W + b, layer by layer.
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    z = x
    for w, b in params:
        z = np.tanh(z @ w + b)
    np.testing.assert_allclose(z, mlp(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_cnn_layout():
    cnn = _cnn()
    _randomise_biases(cnn)
    params = backbone_to_jax(cnn)
    assert set(params) == {"conv_layers", "linear"} and len(params["conv_layers"]) == 2
    for (kernel, bias), conv in zip(params["conv_layers"], cnn.convs):
        k, c_in, c_out = conv.kernel_size[0], conv.in_channels, conv.out_channels
        assert kernel.shape == (k, k, c_in, c_out)  # HWIO
        weight = conv.weight.detach().numpy()  # OIHW
        for h, w, i, o in [(0, 0, 0, 0), (k - 1, 0, c_in - 1, 1), (1, k - 1, 0, c_out - 1)]:
            assert kernel[h, w, i, o] == weight[o, i, h, w]
        np.testing.assert_array_equal(bias, conv.bias.detach().numpy())
    w, b = params["linear"]
    assert w.shape == (4, 2) and b.shape == (2,)
    np.testing.assert_array_equal(w, cnn.head.weight.detach().numpy().T)


@pytest.mark.parametrize("make", [_mlp, _cnn])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_exact_in_both_directions(make, dtype):
    source, target = make(0, dtype), make(1, dtype)
    _randomise_biases(source)
    params = backbone_to_jax(source)
    backbone_from_jax(target, params)
    for a, b in zip(source.parameters(), target.parameters()):
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b)
    # jax -> torch -> jax gives the arrays back bit for bit.
    again = backbone_to_jax(target)
    flat = lambda tree: (
        [a for pair in tree for a in pair]
        if isinstance(tree, list)
        else [a for pair in tree["conv_layers"] for a in pair] + list(tree["linear"])
    )
    for a, b in zip(flat(params), flat(again)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_exported_arrays_are_copies():
    mlp = _mlp()
    params = backbone_to_jax(mlp)
    before = mlp.layers[0].weight.detach().clone()
    params[0][0][:] = 123.0
    assert torch.equal(mlp.layers[0].weight, before)
    # ... and loading copies too: changing the source array afterwards changes nothing.
    source = backbone_to_jax(_mlp(seed=3))
    backbone_from_jax(mlp, source)
    loaded = mlp.layers[0].weight.detach().clone()
    source[0][0][:] = -7.0
    assert torch.equal(mlp.layers[0].weight, loaded)


def test_loading_casts_to_the_module_dtype_and_accepts_read_only_arrays():
    params = backbone_to_jax(_mlp(seed=2, dtype=torch.float64))
    for w, b in params:
        w.setflags(write=False)  # as arrays handed out by JAX are
        b.setflags(write=False)
    mlp = _mlp(dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone_from_jax(mlp, [tuple(pair) for pair in params])
    assert mlp.layers[0].weight.dtype == torch.float32
    np.testing.assert_array_equal(
        mlp.layers[0].weight.detach().numpy(), params[0][0].T.astype(np.float32)
    )


def test_image_layouts():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)  # NCHW
    nhwc = images_nchw_to_nhwc(x)
    assert nhwc.shape == (2, 4, 5, 3) and nhwc.flags.c_contiguous
    assert nhwc[1, 2, 3, 0] == x[1, 0, 2, 3]
    np.testing.assert_array_equal(images_nhwc_to_nchw(nhwc), x)
    from_tensor = images_nchw_to_nhwc(torch.from_numpy(x))
    np.testing.assert_array_equal(from_tensor, nhwc)
    np.testing.assert_array_equal(images_nhwc_to_nchw(torch.from_numpy(nhwc)), x)


# --- errors --------------------------------------------------------------------------------------


def _assert_unchanged(module: torch.nn.Module, before: list[torch.Tensor]) -> None:
    for a, b in zip(module.parameters(), before):
        assert torch.equal(a, b)


def test_mlp_mismatches_raise_and_leave_the_module_unchanged():
    mlp = _mlp()
    before = [p.detach().clone() for p in mlp.parameters()]
    params = backbone_to_jax(_mlp(seed=1))
    with pytest.raises(ValueError, match="MLP has 3 layers but the parameters have 2"):
        backbone_from_jax(mlp, params[:2])
    # A weight given in torch's (out, in) layout instead of the seed's (in, out).
    bad = [params[0], params[1], (params[2][0].T, params[2][1])]
    with pytest.raises(ValueError, match=r"layer 2 weight: expected shape \(5, 3\), got \(3, 5\)"):
        backbone_from_jax(mlp, bad)
    bad = [params[0], (params[1][0], params[1][1][:-1]), params[2]]
    with pytest.raises(ValueError, match=r"layer 1 bias: expected shape \(5,\), got \(4,\)"):
        backbone_from_jax(mlp, bad)
    _assert_unchanged(mlp, before)  # the earlier, valid layers were not written either


def test_cnn_mismatches_raise_and_leave_the_module_unchanged():
    cnn = _cnn()
    before = [p.detach().clone() for p in cnn.parameters()]
    params = backbone_to_jax(_cnn(seed=1))
    with pytest.raises(ValueError, match="CNN has 2 conv layers but the parameters have 1"):
        backbone_from_jax(
            cnn, {"conv_layers": params["conv_layers"][:1], "linear": params["linear"]}
        )
    # An OIHW kernel where the seed wants HWIO.
    oihw = np.transpose(params["conv_layers"][1][0], (3, 2, 0, 1))
    bad = {
        "conv_layers": [params["conv_layers"][0], (oihw, params["conv_layers"][1][1])],
        "linear": params["linear"],
    }
    with pytest.raises(
        ValueError, match=r"conv 1 kernel: expected shape \(5, 5, 2, 4\), got \(4, 2, 5, 5\)"
    ):
        backbone_from_jax(cnn, bad)
    bad = {
        "conv_layers": params["conv_layers"],
        "linear": (params["linear"][0][:3], params["linear"][1]),
    }
    with pytest.raises(ValueError, match=r"linear weight: expected shape \(4, 2\), got \(3, 2\)"):
        backbone_from_jax(cnn, bad)
    _assert_unchanged(cnn, before)


def test_unsupported_backbone_type():
    with pytest.raises(TypeError, match="supports MLPBackbone and CNNBackbone, got Linear"):
        backbone_to_jax(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="supports MLPBackbone and CNNBackbone, got Linear"):
        backbone_from_jax(torch.nn.Linear(2, 2), [])


@pytest.mark.parametrize("convert", [images_nchw_to_nhwc, images_nhwc_to_nchw])
def test_image_conversion_needs_rank_4(convert):
    with pytest.raises(ValueError):
        convert(np.zeros((3, 4, 5)))
