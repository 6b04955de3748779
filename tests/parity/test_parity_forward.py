"""Forward parity of the torch backbones with the JAX reference (``lvqmln_jax_ref``).

Both directions of conversion are exercised: ``torch_to_jax`` initialises the torch module
(seeded) and exports it with :func:`~lvqmln_torch.io.interop.backbone_to_jax`;
``jax_to_torch`` initialises with the reference's ``mlp_init`` / ``cnn_init`` and loads the
parameters into a torch module with :func:`~lvqmln_torch.io.interop.backbone_from_jax`.

Tolerance (SPEC §4): float64 agrees to 1e-12, float32 to 1e-5, relative: elementwise ``rtol``
plus ``atol = rtol · max|expected|``, so an entry that is a near-cancelling sum is judged
against the scale of its array rather than its own tiny magnitude.

The helpers here (:func:`make_pair`, :func:`assert_parity`, ...) are shared with
``test_parity_loss.py``. Assumes ``jax_enable_x64`` (set once by ``tests/conftest.py``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


# --- MLP ---------------------------------------------------------------------------------------

MLP_HIDDEN = {1: (), 2: (6,), 3: (6, 5), 4: (6, 5, 4)}  # depth = number of layers


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("latent_activation", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_mlp_forward(depth, activation, latent_activation, direction, dtype):
    config = dict(
        in_features=4,
        hidden_sizes=MLP_HIDDEN[depth],
        latent_dim=3,
        activation=activation,
        latent_activation=latent_activation,
    )
    # Scale 2 puts pre-activations on both sides of 0 (relu kinks, selu's two branches).
    check_forward("mlp", config, direction, dtype, scale=2.0)


def test_mlp_random_sweep():
    """Seeded sweep: random depth, widths, activation, batch size, input scale, both
    directions and dtypes."""
    rng = np.random.default_rng(2024)
    for case in range(6):
        depth = int(rng.integers(1, 5))
        config = dict(
            in_features=int(rng.integers(1, 9)),
            hidden_sizes=tuple(int(h) for h in rng.integers(1, 9, size=depth - 1)),
            latent_dim=int(rng.integers(1, 5)),
            activation=ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))],
            latent_activation=bool(rng.integers(2)),
        )
        check_forward(
            "mlp",
            config,
            DIRECTIONS[case % 2],
            list(DTYPES)[(case // 2) % 2],
            n=int(rng.integers(1, 10)),
            seed=case,
            scale=float(rng.uniform(0.1, 5)),
        )


# --- CNN ---------------------------------------------------------------------------------------

# 1–3 conv layers, kernel sizes 1, 3, 5 (and an even one), non-square images, 1 and 3
# channels, every activation; latent_activation both ways.
CNN_CONFIGS = {
    "1conv_k1_c1": dict(input_shape=(1, 5, 7), channels=(3,), kernel_sizes=(1,), activation="relu"),
    "2conv_k3k5_c3": dict(
        input_shape=(3, 6, 4),
        channels=(4, 3),
        kernel_sizes=(3, 5),
        activation="tanh",
        latent_activation=False,
    ),
    "3conv_k5k3k1_c1": dict(
        input_shape=(1, 7, 5), channels=(2, 3, 4), kernel_sizes=(5, 3, 1), activation="sigmoid"
    ),
    "3conv_k3_c3": dict(
        input_shape=(3, 4, 6),
        channels=(2, 2, 3),
        kernel_sizes=(3, 3, 3),
        activation="leaky_relu",
        latent_activation=False,
    ),
    "1conv_k5_c3_wide": dict(
        input_shape=(3, 3, 8), channels=(5,), kernel_sizes=(5,), activation="selu"
    ),
    "2conv_k2k3_c1": dict(
        input_shape=(1, 5, 6),
        channels=(3, 2),
        kernel_sizes=(2, 3),
        activation="relu",
        latent_activation=False,
    ),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", list(CNN_CONFIGS))
def test_cnn_forward(name, direction, dtype):
    config = dict(CNN_CONFIGS[name], latent_dim=3)
    check_forward("cnn", config, direction, dtype, n=3, scale=2.0)


def test_cnn_random_sweep():
    """Seeded sweep over odd kernel sizes, depths, channels and image sizes."""
    rng = np.random.default_rng(7)
    for case in range(3):
        depth = int(rng.integers(1, 4))
        config = dict(
            input_shape=(int(rng.choice([1, 3])), int(rng.integers(2, 8)), int(rng.integers(2, 8))),
            channels=tuple(int(c) for c in rng.integers(1, 5, size=depth)),
            kernel_sizes=tuple(int(k) for k in rng.choice([1, 3, 5], size=depth)),
            latent_dim=int(rng.integers(1, 4)),
            activation=ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))],
            latent_activation=bool(rng.integers(2)),
        )
        check_forward(
            "cnn",
            config,
            DIRECTIONS[case % 2],
            list(DTYPES)[(case // 2) % 2],
            n=int(rng.integers(1, 4)),
            seed=case,
            scale=float(rng.uniform(0.5, 3)),
        )


def test_reference_init_loads_into_torch():
    """The reference's own ``mlp_init`` / ``cnn_init`` output (jax arrays, zero biases) loads
    into the torch modules and gives the same forward pass."""
    key = jax.random.PRNGKey(3)
    # Few distinct shapes: JAX compiles its RNG once per shape.
    mlp_config = dict(in_features=3, hidden_sizes=(3,), latent_dim=3, activation="tanh")
    cnn_config = dict(input_shape=(1, 5, 7), channels=(3,), kernel_sizes=(3,), latent_dim=3)
    mlp_params = ref.mlp_init(key, [3, 3, 3])
    cnn_params = ref.cnn_init(key, (5, 7, 1), (3,), (3,), 3)
    for kind, config, params in [("mlp", mlp_config, mlp_params), ("cnn", cnn_config, cnn_params)]:
        module = (MLPBackbone if kind == "mlp" else CNNBackbone)(**config).double()
        backbone_from_jax(module, params)
        for a, b in zip(leaves(backbone_to_jax(module)), leaves(params)):
            np.testing.assert_array_equal(a, b)
        x = inputs(kind, config, 3, "float64")
        with torch.no_grad():
            z_torch = module(torch.from_numpy(x)).numpy()
        assert_parity(z_torch, jax_forward(kind, params, x, config), 1e-12)
