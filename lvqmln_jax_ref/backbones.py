"""MLP and CNN backbones, mirroring the seed's ``_mlp_init`` / ``_mlp_forward`` / ``_cnn_*``.

Parameter layouts (pytrees):

- MLP: ``[(W_0 (d_0, d_1), b_0 (d_1,)), ..., (W_L (d_L, d_{L+1}), b_L (d_{L+1},))]``
- CNN: ``{'conv_layers': [(kernel (k, k, c_in, c_out) HWIO, bias (c_out,)), ...],
  'linear': (W (c_last, latent_dim), b (latent_dim,))}``; images are NHWC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "leaky_relu": jax.nn.leaky_relu,  # negative_slope = 0.01
    "selu": jax.nn.selu,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Return the activation function called ``name``.

    Raises ValueError (listing the valid names) for an unknown name.
    """
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown activation: {name!r}. Valid activations: {', '.join(ACTIVATIONS)}"
        ) from None


def mlp_init(
    key: jax.Array, layer_sizes: Sequence[int], activation: str = "sigmoid"
) -> list[tuple[jax.Array, jax.Array]]:
    """Glorot-uniform MLP init, as the seed's ``_mlp_init``.

    layer_sizes: e.g. ``[4, 10, 2]`` (input 4, hidden 10, latent 2).
    Returns ``[(W (fan_in, fan_out), b (fan_out,)), ...]`` with
    W ~ U(-sqrt(6 / (fan_in + fan_out)), +sqrt(...)) and b = 0. ``activation`` is unused
    (kept for the seed's signature). Keys: ``key, subkey = split(key)`` once per layer.
    """
    del activation
    params = []
    for i in range(len(layer_sizes) - 1):
        key, subkey = jax.random.split(key)
        fan_in, fan_out = layer_sizes[i], layer_sizes[i + 1]
        limit = jnp.sqrt(6.0 / (fan_in + fan_out))
        w = jax.random.uniform(subkey, (fan_in, fan_out), minval=-limit, maxval=limit)
        b = jnp.zeros(fan_out)
        params.append((w, b))
    return params


def mlp_forward(
    params: Sequence[tuple[jax.Array, jax.Array]],
    x: jax.Array,
    activation: str = "sigmoid",
    latent_activation: bool = True,
) -> jax.Array:
    """MLP forward pass: ``x = act(x @ W + b)`` for every layer.

    x: (n, d_in) -> (n, d_out). With ``latent_activation=False`` the last layer is linear.
    """
    act_fn = get_activation(activation)
    n_layers = len(params)
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if latent_activation or i < n_layers - 1:
            x = act_fn(x)
    return x


def cnn_init(
    key: jax.Array,
    input_shape: tuple[int, int, int],
    channels: Sequence[int],
    kernel_sizes: Sequence[int],
    latent_dim: int,
    activation: str = "relu",
) -> dict:
    """CNN init, as the seed's ``_cnn_init``.

    input_shape: (h, w, c_in). Conv kernels (k, k, c_in, c_out) HWIO, Glorot-uniform with
    fan_in = k*k*c_in, fan_out = k*k*c_out; biases 0. Linear head (c_last, latent_dim),
    Glorot-uniform with fan_in = c_last, fan_out = latent_dim. One ``split`` per conv layer,
    then one for the head. ``activation`` is unused (kept for the seed's signature).
    """
    del activation
    _, _, c_in = input_shape
    conv_params = []
    for c_out, k in zip(channels, kernel_sizes):
        key, subkey = jax.random.split(key)
        fan_in = k * k * c_in
        fan_out = k * k * c_out
        limit = jnp.sqrt(6.0 / (fan_in + fan_out))
        kernel = jax.random.uniform(subkey, (k, k, c_in, c_out), minval=-limit, maxval=limit)
        bias = jnp.zeros(c_out)
        conv_params.append((kernel, bias))
        c_in = c_out
    key, subkey = jax.random.split(key)
    last_c = channels[-1] if channels else c_in
    limit = jnp.sqrt(6.0 / (last_c + latent_dim))
    w_linear = jax.random.uniform(subkey, (last_c, latent_dim), minval=-limit, maxval=limit)
    b_linear = jnp.zeros(latent_dim)
    return {"conv_layers": conv_params, "linear": (w_linear, b_linear)}


def cnn_forward(
    params: dict,
    x: jax.Array,
    activation: str = "relu",
    latent_activation: bool = True,
) -> jax.Array:
    """CNN forward pass, as the seed's ``_cnn_forward``.

    x: (n, h, w, c) NHWC -> (n, latent_dim). Each conv: stride 1, SAME padding, + bias, act;
    then global average pool over (h, w); linear head; act (skipped if
    ``latent_activation=False``).
    """
    act_fn = get_activation(activation)
    for kernel, bias in params["conv_layers"]:
        x = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        x = act_fn(x + bias[None, None, None, :])
    x = jnp.mean(x, axis=(1, 2))
    w, b = params["linear"]
    x = x @ w + b
    if latent_activation:
        x = act_fn(x)
    return x
