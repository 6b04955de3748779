"""The parity helpers shared by the forward, loss and numpy-engine tests: torch/JAX model
pairs built in both directions of conversion, their inputs, and the relative tolerance check
(SPEC §4: float64 to 1e-12, float32 to 1e-5; ``atol = rtol · max|expected|``). Assumes
``jax_enable_x64`` (set once by ``tests/conftest.py``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from _parity_utils import images_nchw_to_nhwc

import lvqmln_jax_ref as ref
from lvqmln_torch.core.backbones import CNNBackbone, MLPBackbone
from lvqmln_torch.io.interop import backbone_from_jax, backbone_to_jax

ACTIVATIONS = ["sigmoid", "relu", "tanh", "leaky_relu", "selu"]
DIRECTIONS = ["torch_to_jax", "jax_to_torch"]
# name -> (torch dtype, numpy dtype, relative tolerance)
DTYPES = {
    "float64": (torch.float64, np.float64, 1e-12),
    "float32": (torch.float32, np.float32, 1e-5),
}


def assert_parity(actual: Any, expected: Any, rtol: float, atol: float = 0.0) -> None:
    """Same shape and dtype; values to ``rtol`` elementwise plus ``rtol · max|expected|``
    (and an optional extra absolute ``atol``).

    Subnormal numbers count as zero: XLA on CPU flushes them, torch keeps them (a vanishing
    gradient such as ``d / max²`` of an empty class comes out as 1e-309 in torch, 0 in JAX).
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    tiny = float(np.finfo(expected.dtype).tiny) if expected.dtype.kind == "f" else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale + atol + tiny)


def leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def to_jnp(tree: Any) -> Any:
    return jax.tree.map(jnp.asarray, tree)


def jax_layout_params(kind: str, config: dict[str, Any], dtype: str, seed: int = 0) -> Any:
    """Glorot-uniform parameters made directly in the reference's layout (numpy, ``dtype``):
    MLP ``[(W[in, out], b[out])]``; CNN ``{'conv_layers': [(HWIO kernel, bias)], 'linear':
    (W, b)}``. Biases are non-zero so that a bias lost in conversion shows. Drawn with numpy
    rather than ``mlp_init`` / ``cnn_init``: JAX compiles its RNG anew for every shape
    (~0.3 s each), ``test_reference_init_loads_into_torch`` covers those two."""
    rng = np.random.default_rng(seed + 1000)
    np_dtype = DTYPES[dtype][1]

    def uniform(shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape).astype(np_dtype)

    def bias(size: int) -> np.ndarray:
        return (0.1 * rng.normal(size=size)).astype(np_dtype)

    if kind == "mlp":
        sizes = [config["in_features"], *config.get("hidden_sizes", ()), config["latent_dim"]]
        return [(uniform((a, b), a, b), bias(b)) for a, b in zip(sizes[:-1], sizes[1:])]
    c_in = config["input_shape"][0]
    convs = []
    for c_out, k in zip(config["channels"], config["kernel_sizes"]):
        convs.append((uniform((k, k, c_in, c_out), k * k * c_in, k * k * c_out), bias(c_out)))
        c_in = c_out
    head = (
        uniform((c_in, config["latent_dim"]), c_in, config["latent_dim"]),
        bias(config["latent_dim"]),
    )
    return {"conv_layers": convs, "linear": head}


def make_pair(
    kind: str, config: dict[str, Any], direction: str, dtype: str, seed: int = 0
) -> tuple[torch.nn.Module, Any]:
    """A torch backbone and the same parameters in the reference's layout (numpy, ``dtype``).

    ``config`` holds the torch constructor arguments (``input_shape`` as (C, H, W) for the
    CNN). ``direction`` says which side the parameters come from: ``torch_to_jax`` exports
    the seeded torch initialisation with ``backbone_to_jax``; ``jax_to_torch`` loads
    reference-layout parameters into the module with ``backbone_from_jax``.
    """
    torch_dtype, np_dtype, _ = DTYPES[dtype]
    cls = MLPBackbone if kind == "mlp" else CNNBackbone
    module = cls(**config, generator=torch.Generator().manual_seed(seed)).to(torch_dtype)
    if direction == "torch_to_jax":
        params = backbone_to_jax(module)
    else:
        params = jax_layout_params(kind, config, dtype, seed)
        backbone_from_jax(module, params)
        # Every parameter was replaced, and exporting gives the loaded values back unchanged.
        for a, b in zip(leaves(backbone_to_jax(module)), leaves(params)):
            np.testing.assert_array_equal(a, b)
    for leaf in leaves(params):
        assert leaf.dtype == np_dtype
    return module, params


def jax_forward(kind: str, params: Any, x: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """The reference forward pass on torch-layout input ``x`` (NCHW images are transposed)."""
    activation = config.get("activation", "sigmoid" if kind == "mlp" else "relu")
    latent_activation = config.get("latent_activation", True)
    if kind == "mlp":
        return np.asarray(
            ref.mlp_forward(to_jnp(params), jnp.asarray(x), activation, latent_activation)
        )
    x_nhwc = jnp.asarray(images_nchw_to_nhwc(x))
    return np.asarray(_cnn_forward_jit(to_jnp(params), x_nhwc, activation, latent_activation))


# One compilation per CNN configuration is cheaper than compiling each convolution primitive
# on its own; the MLP tests share primitives across configurations and stay op by op.
_cnn_forward_jit = jax.jit(ref.cnn_forward, static_argnums=(2, 3))


def inputs(
    kind: str, config: dict[str, Any], n: int, dtype: str, seed: int = 0, scale: float = 1.0
) -> np.ndarray:
    """Standard normal inputs ``(n, d)`` or ``(n, C, H, W)`` in ``dtype``."""
    shape = (config["in_features"],) if kind == "mlp" else tuple(config["input_shape"])
    rng = np.random.default_rng(seed)
    return (scale * rng.normal(size=(n, *shape))).astype(DTYPES[dtype][1])


def check_forward(
    kind: str,
    config: dict[str, Any],
    direction: str,
    dtype: str,
    n: int = 7,
    seed: int = 0,
    scale: float = 1.0,
) -> None:
    module, params = make_pair(kind, config, direction, dtype, seed)
    x = inputs(kind, config, n, dtype, seed, scale)
    with torch.no_grad():
        z_torch = module(torch.from_numpy(x)).numpy()
    z_jax = jax_forward(kind, params, x, config)
    assert z_torch.shape == (n, config["latent_dim"])
    assert np.isfinite(z_torch).all()
    assert_parity(z_torch, z_jax, DTYPES[dtype][2])
