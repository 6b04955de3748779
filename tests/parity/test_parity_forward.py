"""Forward parity of the torch backbones with the JAX reference (``lvqmln_jax_ref``).

Both directions of conversion are exercised: ``torch_to_jax`` initialises the torch module
(seeded) and exports it with :func:`~lvqmln_torch.io.interop.backbone_to_jax`;
``jax_to_torch`` initialises with the reference's ``mlp_init`` / ``cnn_init`` and loads the
parameters into a torch module with :func:`~lvqmln_torch.io.interop.backbone_from_jax`.

Tolerance (SPEC §4): float64 agrees to 1e-12, float32 to 1e-5, relative: elementwise ``rtol``
plus ``atol = rtol · max|expected|``, so an entry that is a near-cancelling sum is judged
against the scale of its array rather than its own tiny magnitude.

The helpers (``make_pair``, ``assert_parity``, ...) live in ``tests/_parity_pairs.py``. Assumes ``jax_enable_x64`` (set once by ``tests/conftest.py``).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from _parity_pairs import (
    ACTIVATIONS,
    DIRECTIONS,
    DTYPES,
    assert_parity,
    check_forward,
    inputs,
    jax_forward,
    leaves,
)

import lvqmln_jax_ref as ref
from lvqmln_torch.core.backbones import CNNBackbone, MLPBackbone
from lvqmln_torch.io.interop import backbone_from_jax, backbone_to_jax

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
