"""Parity of distances, μ, the GLVQ loss, its gradients, wtac and stratified min pooling with
the JAX reference (``lvqmln_jax_ref``), in float64 (1e-12) and float32 (1e-5).

Tolerances are relative as in ``test_parity_forward.py``: elementwise ``rtol`` plus
``rtol · max|expected|``. Distances get an extra absolute tolerance (see
:func:`distance_atol`). Hand-picked grids sit beside seeded sweeps and a hypothesis search.

The JAX functions are wrapped in ``jax.jit`` (one compilation per shape, dtype and static
option instead of one per primitive), which keeps the suite fast.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_parity_forward import DIRECTIONS, DTYPES, assert_parity, inputs, make_pair, to_jnp

import lvqmln_jax_ref as ref
from lvqmln_torch import functional as F
from lvqmln_torch.io.interop import backbone_to_jax, images_nhwc_to_nchw

TRANSFERS = ["identity", "sigmoid_beta", "swish_beta"]


def distance_atol(x: np.ndarray, w: np.ndarray) -> float:
    """Absolute tolerance for distances.

    Both sides compute ‖x‖² + ‖w‖² − 2x·w; near 0 the three terms cancel catastrophically, so
    each side's error is a few ulps of ‖x‖² + ‖w‖², not of the (tiny) result. Relative
    tolerance alone would fail there for a legitimate reason.
    """
    eps = np.finfo(x.dtype).eps
    sq = (x.astype(np.float64) ** 2).sum(1).max() + (w.astype(np.float64) ** 2).sum(1).max()
    return float(16 * eps * sq)


# --- distances -------------------------------------------------------------------------------

_jax_distances = jax.jit(ref.squared_euclidean_distance_matrix)


def _check_distances(x: np.ndarray, w: np.ndarray, rtol: float) -> np.ndarray:
    d_torch = F.squared_euclidean_distance(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    d_jax = np.asarray(_jax_distances(jnp.asarray(x), jnp.asarray(w)))
    assert (d_torch >= 0).all() and (d_jax >= 0).all()
    assert_parity(d_torch, d_jax, rtol, atol=distance_atol(x, w))
    return d_torch


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", ["normal", "far_from_origin", "near_zero", "exact_copies"])
def test_distances(case, dtype):
    np_dtype, rtol = DTYPES[dtype][1], DTYPES[dtype][2]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    w = rng.normal(size=(5, 3))
    if case == "far_from_origin":
        x, w = x + 50.0, w + 50.0
    elif case == "near_zero":
        w = x[:5] + 1e-4 * rng.normal(size=(5, 3))
    elif case == "exact_copies":
        w = x[:5].copy()
    x, w = x.astype(np_dtype), w.astype(np_dtype)
    d = _check_distances(x, w, rtol)
    brute = ((x[:, None, :].astype(np.float64) - w[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(d, brute, rtol=rtol, atol=distance_atol(x, w))


def test_distances_random_sweep():
    rng = np.random.default_rng(1)
    for case in range(6):
        dtype = list(DTYPES)[case % 2]
        n, p, dim = (int(v) for v in rng.integers(1, 7, size=3))
        scale, offset = rng.uniform(0.1, 10), rng.uniform(-5, 5)
        x = (offset + scale * rng.normal(size=(n, dim))).astype(DTYPES[dtype][1])
        w = (offset + scale * rng.normal(size=(p, dim))).astype(DTYPES[dtype][1])
        _check_distances(x, w, DTYPES[dtype][2])


# --- μ and the loss on a given distance matrix ------------------------------------------------

# Prototype layouts for 3 target classes (always 6 prototypes, so compilations are shared):
# one per class plus copies, several per class, class 2 with no prototype, labels not blocked.
LAYOUTS = {
    "several_per_class": [0, 0, 1, 1, 1, 2],
    "missing_class": [0, 0, 0, 1, 1, 1],
    "interleaved": [2, 0, 1, 0, 2, 1],
    "one_class_only": [1, 1, 1, 1, 1, 1],
}
TARGETS = np.array([0, 1, 2, 0, 1, 2, 2])


@functools.cache
def _jax_loss(transfer: str, weighted: bool):
    """jit(value_and_grad) of the reference loss w.r.t. the distances."""

    def loss(d, targets, labels, margin, beta, weights):
        return ref.glvq_loss_with_transfer(
            d, targets, labels, transfer, margin, beta, weights if weighted else None
        )

    return jax.jit(jax.value_and_grad(loss))


_jax_mu = jax.jit(ref.glvq_mu)


def _torch_loss(d, targets, labels, transfer, margin, beta, weights):
    d = torch.from_numpy(d).requires_grad_(True)
    loss = F.glvq_loss(
        d,
        torch.from_numpy(targets),
        torch.from_numpy(labels),
        transfer=transfer,
        beta=beta,
        margin=margin,
        sample_weight=None if weights is None else torch.from_numpy(weights),
    )
    loss.backward()
    return loss.detach().numpy(), d.grad.numpy()


def check_loss(d, targets, labels, transfer, margin, beta, weights, rtol):
    """μ, the loss and d(loss)/d(distances) agree; returns the torch gradient."""
    mu_torch = F.glvq_mu(*(torch.from_numpy(a) for a in (d, targets, labels))).numpy()
    mu_jax = np.asarray(_jax_mu(jnp.asarray(d), jnp.asarray(targets), jnp.asarray(labels)))
    assert_parity(mu_torch, mu_jax, rtol)
    assert (np.abs(mu_torch) <= 1).all()
    loss_torch, grad_torch = _torch_loss(d, targets, labels, transfer, margin, beta, weights)
    dummy = np.ones(len(d), dtype=d.dtype) if weights is None else weights
    loss_jax, grad_jax = _jax_loss(transfer, weights is not None)(
        *(jnp.asarray(a) for a in (d, targets, labels)), margin, beta, jnp.asarray(dummy)
    )
    assert_parity(loss_torch, np.asarray(loss_jax), rtol)
    assert_parity(grad_torch, np.asarray(grad_jax), rtol)
    return grad_torch


def _distances(dtype: str, seed: int = 0) -> np.ndarray:
    """(7, 6) distances in [0.1, 4], with columns 0 and 1 exact copies (an exact tie)."""
    d = np.random.default_rng(seed).uniform(0.1, 4.0, size=(7, 6))
    d[:, 1] = d[:, 0]
    return d.astype(DTYPES[dtype][1])


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("margin", "beta"), [(0.0, 10.0), (0.1, 2.0), (-0.3, 0.5)])
@pytest.mark.parametrize("transfer", TRANSFERS)
def test_mu_and_loss(transfer, margin, beta, weighted, layout, dtype):
    np_dtype, rtol = DTYPES[dtype][1], DTYPES[dtype][2]
    d = _distances(dtype)
    labels = np.array(LAYOUTS[layout])
    weights = np.linspace(0.2, 2.0, len(d)).astype(np_dtype) if weighted else None
    grad = check_loss(d, TARGETS, labels, transfer, margin, beta, weights, rtol)
    if layout == "several_per_class":
        # Columns 0 and 1 are identical class-0 prototypes: the gradient splits evenly.
        np.testing.assert_array_equal(grad[:, 0], grad[:, 1])
        assert np.abs(grad[:, 0]).sum() > 0


# --- wtac and stratified min pooling -----------------------------------------------------------

_jax_wtac = jax.jit(ref.wtac)
_jax_pool = jax.jit(ref.stratified_min_pooling, static_argnums=2)


def check_decisions(d: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    """wtac and pooling agree exactly (a minimum involves no rounding)."""
    d_t, l_t = torch.from_numpy(d), torch.from_numpy(labels)
    np.testing.assert_array_equal(
        F.wtac(d_t, l_t).numpy(), np.asarray(_jax_wtac(jnp.asarray(d), jnp.asarray(labels)))
    )
    pooled = F.stratified_min_pooling(d_t, l_t, n_classes).numpy()
    pooled_jax = np.asarray(_jax_pool(jnp.asarray(d), jnp.asarray(labels), n_classes))
    assert pooled.dtype == pooled_jax.dtype == d.dtype
    np.testing.assert_array_equal(pooled, pooled_jax)
    missing = np.setdiff1d(np.arange(n_classes), labels)
    assert (pooled[:, missing] == np.finfo(d.dtype).max).all()


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_wtac_and_pooling_with_exact_ties(layout, dtype):
    # Small integers: most rows hold ties, within a class and across classes.
    d = np.random.default_rng(3).integers(0, 3, size=(7, 6)).astype(DTYPES[dtype][1])
    d[0] = 1.0  # a row that is one big tie: the first prototype wins
    labels = np.array(LAYOUTS[layout])
    check_decisions(d, labels, n_classes=4)
    assert F.wtac(torch.from_numpy(d), torch.from_numpy(labels))[0] == labels[0]


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_pooling_gradient_splits_ties_evenly(dtype):
    d = np.random.default_rng(4).integers(0, 3, size=(7, 6)).astype(DTYPES[dtype][1])
    labels = np.array(LAYOUTS["several_per_class"])
    coef = np.arange(1, 22, dtype=d.dtype).reshape(7, 3)  # distinct weights per (row, class)
    d_t = torch.from_numpy(d).requires_grad_(True)
    (
        F.stratified_min_pooling(d_t, torch.from_numpy(labels), 3) * torch.from_numpy(coef)
    ).sum().backward()
    grad_jax = jax.jit(
        jax.grad(lambda d: (ref.stratified_min_pooling(d, jnp.asarray(labels), 3) * coef).sum())
    )(jnp.asarray(d))
    np.testing.assert_array_equal(d_t.grad.numpy(), np.asarray(grad_jax))
    # Per row and class, the gradient is spread evenly over the tied minima.
    for c in range(3):
        cols = labels == c
        block = d[:, cols]
        winners = block == block.min(1, keepdims=True)
        expected = coef[:, [c]] * winners / winners.sum(1, keepdims=True)
        np.testing.assert_allclose(d_t.grad.numpy()[:, cols], expected, rtol=1e-6)


# --- gradients end to end: backbone parameters, prototypes, inputs -----------------------------


@functools.cache
def _jax_e2e(kind: str, activation: str, latent_activation: bool, transfer: str, weighted: bool):
    """jit(value_and_grad) of loss(backbone(x), prototypes) w.r.t. (params, prototypes, x)."""
    forward = ref.mlp_forward if kind == "mlp" else ref.cnn_forward

    def loss(params, prototypes, x, targets, labels, margin, beta, weights):
        z = forward(params, x, activation, latent_activation)
        d = ref.squared_euclidean_distance_matrix(z, prototypes)
        return ref.glvq_loss_with_transfer(
            d, targets, labels, transfer, margin, beta, weights if weighted else None
        )

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def _grads_as_jax_layout(module: torch.nn.Module) -> Any:
    """The ``.grad`` of every parameter, exported in the reference's layout."""
    holder = copy.deepcopy(module)
    with torch.no_grad():
        for target, source in zip(holder.parameters(), module.parameters()):
            target.copy_(source.grad)
    return backbone_to_jax(holder)


# Classes 0..3; class 3 has no prototype; several prototypes for classes 0 and 1.
E2E_LABELS = np.array([0, 0, 1, 1, 1, 2])
E2E_TARGETS = np.array([0, 1, 2, 3, 0, 1, 2, 0])

E2E_CASES = {
    "mlp_depth1_sigmoid_identity": (
        "mlp",
        dict(in_features=4, hidden_sizes=(), activation="sigmoid"),
        "identity",
        True,
    ),
    "mlp_depth2_relu_sigmoid_beta_linear": (
        "mlp",
        dict(in_features=4, hidden_sizes=(6,), activation="relu", latent_activation=False),
        "sigmoid_beta",
        False,
    ),
    "mlp_depth3_selu_swish_linear": (
        "mlp",
        dict(in_features=4, hidden_sizes=(6, 5), activation="selu", latent_activation=False),
        "swish_beta",
        True,
    ),
    "mlp_depth4_leaky_relu_identity": (
        "mlp",
        dict(in_features=4, hidden_sizes=(6, 5, 4), activation="leaky_relu"),
        "identity",
        False,
    ),
    "cnn_2conv_selu_swish": (
        "cnn",
        dict(input_shape=(3, 5, 4), channels=(3, 2), kernel_sizes=(3, 1), activation="selu"),
        "swish_beta",
        True,
    ),
    "cnn_1conv_tanh_sigmoid_linear": (
        "cnn",
        dict(
            input_shape=(1, 4, 6),
            channels=(2,),
            kernel_sizes=(5,),
            activation="tanh",
            latent_activation=False,
        ),
        "sigmoid_beta",
        False,
    ),
}


# Every case in float64; float32 for two MLPs and a CNN (each (case, dtype) costs a
# compilation of about a second; the loss grid covers every transfer in float32).
E2E_RUNS = [(case, "float64") for case in E2E_CASES] + [
    ("mlp_depth2_relu_sigmoid_beta_linear", "float32"),
    ("mlp_depth3_selu_swish_linear", "float32"),
    ("cnn_2conv_selu_swish", "float32"),
]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(("case", "dtype"), E2E_RUNS)
def test_loss_gradients_end_to_end(case, dtype, direction):
    kind, config, transfer, weighted = E2E_CASES[case]
    config = dict(config, latent_dim=3)
    np_dtype, rtol = DTYPES[dtype][1], DTYPES[dtype][2]
    margin, beta = 0.05, 3.0
    module, params = make_pair(kind, config, direction, dtype, seed=5)
    rng = np.random.default_rng(6)
    x_np = inputs(kind, config, len(E2E_TARGETS), dtype, seed=6, scale=1.5)
    # Prototypes a unit away from the codes keep the distances well conditioned in float32.
    protos_np = rng.normal(size=(len(E2E_LABELS), 3)).astype(np_dtype)
    weights_np = rng.uniform(0.2, 2.0, size=len(E2E_TARGETS)).astype(np_dtype)

    x = torch.from_numpy(x_np.copy()).requires_grad_(True)
    protos = torch.from_numpy(protos_np.copy()).requires_grad_(True)
    loss = F.glvq_loss(
        F.squared_euclidean_distance(module(x), protos),
        torch.from_numpy(E2E_TARGETS),
        torch.from_numpy(E2E_LABELS),
        transfer=transfer,
        beta=beta,
        margin=margin,
        sample_weight=torch.from_numpy(weights_np) if weighted else None,
    )
    loss.backward()

    x_jax = x_np if kind == "mlp" else np.transpose(x_np, (0, 2, 3, 1))  # NCHW -> NHWC
    loss_jax, (g_params, g_protos, g_x) = _jax_e2e(
        kind, config["activation"], config.get("latent_activation", True), transfer, weighted
    )(
        to_jnp(params),
        jnp.asarray(protos_np),
        jnp.asarray(x_jax),
        jnp.asarray(E2E_TARGETS),
        jnp.asarray(E2E_LABELS),
        margin,
        beta,
        jnp.asarray(weights_np),
    )
    assert_parity(loss.detach().numpy(), np.asarray(loss_jax), rtol)
    torch_params = jax.tree.leaves(_grads_as_jax_layout(module))
    jax_params = jax.tree.leaves(g_params)
    assert len(torch_params) == len(jax_params) == len(list(module.parameters()))
    for g_t, g_j in zip(torch_params, jax_params):
        assert np.abs(g_t).max() > 0
        assert_parity(g_t, np.asarray(g_j), rtol)
    assert_parity(protos.grad.numpy(), np.asarray(g_protos), rtol)
    g_x = np.asarray(g_x) if kind == "mlp" else images_nhwc_to_nchw(np.asarray(g_x))
    assert_parity(x.grad.numpy(), g_x, rtol)


@pytest.mark.parametrize("transfer", TRANSFERS)
def test_identical_prototype_copies_get_identical_gradients(transfer):
    """Copies of a prototype stay copies: both frameworks split the gradient evenly.

    Dyadic latent codes and prototypes make every distance exact, so the ties are exact on
    both sides whatever the summation order.
    """
    z = np.array([[0.5, 1.0], [1.5, -0.5], [-1.0, 0.25], [0.0, 0.75]])
    base = np.array([[0.0, 0.5], [1.0, -1.0], [-0.5, 0.0]])
    protos = np.concatenate([base, base[:1], base[1:2], base[1:2]])
    labels = np.array([0, 1, 2, 0, 1, 1])
    targets = np.array([0, 1, 2, 1])
    copies = [(0, 3), (1, 4), (1, 5)]

    z_t = torch.from_numpy(z.copy()).requires_grad_(True)
    p_t = torch.from_numpy(protos.copy()).requires_grad_(True)
    F.glvq_loss(
        F.squared_euclidean_distance(z_t, p_t),
        torch.from_numpy(targets),
        torch.from_numpy(labels),
        transfer,
        beta=3.0,
        margin=0.1,
    ).backward()

    def loss(p, z):
        d = ref.squared_euclidean_distance_matrix(z, p)
        return ref.glvq_loss_with_transfer(d, targets, labels, transfer, 0.1, 3.0)

    g_p, g_z = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(protos), jnp.asarray(z))
    g_p = np.asarray(g_p)
    for a, b in copies:
        assert np.abs(g_p[a]).sum() > 0
        assert torch.equal(p_t.grad[a], p_t.grad[b])
        np.testing.assert_array_equal(g_p[a], g_p[b])
    assert_parity(p_t.grad.numpy(), g_p, 1e-12)
    assert_parity(z_t.grad.numpy(), np.asarray(g_z), 1e-12)


# --- randomised: hypothesis -------------------------------------------------------------------


@st.composite
def loss_problems(draw):
    """A float64 distance problem: shapes from a small set (each new shape compiles), random
    labels (classes may lack prototypes or samples), values with or without exact ties."""
    n = draw(st.sampled_from([1, 5]))
    p = draw(st.sampled_from([1, 4]))
    n_classes = draw(st.integers(2, 3))
    labels = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=p, max_size=p)))
    targets = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        d = rng.integers(0, 4, size=(n, p)).astype(np.float64)  # many exact ties, zeros
    else:
        d = rng.uniform(0.0, draw(st.sampled_from([1e-3, 1.0, 1e3])), size=(n, p))
    weights = rng.uniform(0.1, 3.0, size=n) if draw(st.booleans()) else None
    return dict(
        d=d,
        targets=targets,
        labels=labels,
        n_classes=n_classes,
        transfer=draw(st.sampled_from(TRANSFERS)),
        margin=draw(st.floats(-0.5, 0.5)),
        beta=draw(st.floats(0.5, 20.0)),
        weights=weights,
    )


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(problem=loss_problems())
def test_loss_and_decisions_random(problem):
    check_loss(
        problem["d"],
        problem["targets"],
        problem["labels"],
        problem["transfer"],
        problem["margin"],
        problem["beta"],
        problem["weights"],
        1e-12,
    )
    check_decisions(problem["d"], problem["labels"], problem["n_classes"])
