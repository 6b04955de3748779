"""Self-checks of the JAX reference (lvqmln_jax_ref): upstream fixed points, schedules by hand,
and the training loop against hand-written loops. Assumes conftest.py enables jax_enable_x64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lvqmln_jax_ref as ref

DIST = jnp.array([[1.0, 4.0, 9.0, 0.5], [4.0, 1.0, 0.25, 2.0]])
TARGETS = jnp.array([0, 2])
PLABELS = jnp.array([0, 1, 2, 1])


# --- losses and decisions (upstream fixed points) -----------------------------------------


def test_mu_fixed_point():
    np.testing.assert_allclose(ref.glvq_mu(DIST, TARGETS, PLABELS), [1 / 3, -0.6], rtol=1e-9)


@pytest.mark.parametrize(
    ("transfer", "beta", "margin", "expected"),
    [
        ("identity", 10.0, 0.0, -0.13333334),
        ("identity", 10.0, 0.1, -0.03333333),
        ("sigmoid_beta", 10.0, 0.1, 0.49686953),
        ("swish_beta", 2.0, 0.0, 0.040683493),
    ],
)
def test_glvq_loss_fixed_points(transfer, beta, margin, expected):
    loss = ref.glvq_loss_with_transfer(DIST, TARGETS, PLABELS, transfer, margin, beta)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    fn = ref.TRANSFERS[transfer]
    np.testing.assert_allclose(
        ref.glvq_loss_with_transfer(DIST, TARGETS, PLABELS, fn, margin, beta), loss, rtol=0
    )


def test_sample_weight_loss():
    w = jnp.array([1.0, 3.0])
    loss = ref.glvq_loss_with_transfer(DIST, TARGETS, PLABELS, sample_weight=w)
    np.testing.assert_allclose(loss, (1 / 3 - 3 * 0.6) / 4, rtol=1e-9)


def test_unknown_transfer():
    with pytest.raises(ValueError, match="sigmoid_beta"):
        ref.glvq_loss_with_transfer(DIST, TARGETS, PLABELS, "nope")


def test_wtac_and_pooling():
    np.testing.assert_array_equal(ref.wtac(DIST, PLABELS), [1, 2])
    pooled = ref.stratified_min_pooling(DIST, PLABELS, 4)
    big = np.finfo(np.float64).max
    np.testing.assert_array_equal(pooled, [[1.0, 0.5, 9.0, big], [4.0, 1.0, 0.25, big]])


def test_distance_matrix():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    brute = ((x[:, None, :] - w[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(ref.squared_euclidean_distance_matrix(x, w), brute, rtol=1e-12)
    same = ref.squared_euclidean_distance_matrix(jnp.array(x), jnp.array(x))
    assert float(jnp.min(same)) >= 0.0


def test_dp_dm_tie_gradient_splits_evenly():
    d = jnp.array([[2.0, 2.0, 5.0]])
    g = jax.grad(lambda d: ref._get_dp_dm(d, jnp.array([0]), jnp.array([0, 0, 1]))[0].sum())(d)
    np.testing.assert_array_equal(g, [[0.5, 0.5, 0.0]])


# --- backbones ---------------------------------------------------------------------------


def test_get_activation():
    assert ref.get_activation("leaky_relu")(jnp.array(-1.0)) == pytest.approx(-0.01)
    with pytest.raises(ValueError, match="sigmoid.*relu.*tanh.*leaky_relu.*selu"):
        ref.get_activation("gelu")


def test_mlp_init_and_forward():
    key = jax.random.PRNGKey(0)
    params = ref.mlp_init(key, [4, 10, 2])
    assert [w.shape for w, _ in params] == [(4, 10), (10, 2)]
    _, sub = jax.random.split(key)
    limit = math.sqrt(6.0 / 14)
    np.testing.assert_array_equal(
        params[0][0], jax.random.uniform(sub, (4, 10), minval=-limit, maxval=limit)
    )
    assert float(jnp.max(jnp.abs(params[1][0]))) <= math.sqrt(6.0 / 12)
    assert all(not b.any() for _, b in params)
    x = jax.random.normal(key, (3, 4))
    h = jax.nn.sigmoid(x @ params[0][0] + params[0][1])
    out = h @ params[1][0] + params[1][1]
    np.testing.assert_allclose(ref.mlp_forward(params, x), jax.nn.sigmoid(out), rtol=1e-12)
    np.testing.assert_allclose(ref.mlp_forward(params, x, latent_activation=False), out, rtol=1e-12)


def _conv_same_numpy(x, kernel):
    """Naive stride-1 SAME convolution (cross-correlation), NHWC x HWIO, odd kernel."""
    k = kernel.shape[0]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, kernel.shape[3]))
    for i in range(h):
        for j in range(w):
            out[:, i, j, :] = np.einsum("nabc,abco->no", xp[:, i : i + k, j : j + k, :], kernel)
    return out


def test_cnn_init_and_forward():
    key = jax.random.PRNGKey(1)
    params = ref.cnn_init(key, (5, 6, 2), [3, 4], [3, 3], latent_dim=2)
    assert [k.shape for k, _ in params["conv_layers"]] == [(3, 3, 2, 3), (3, 3, 3, 4)]
    assert params["linear"][0].shape == (4, 2)
    # perturb biases so they matter
    params["conv_layers"] = [(k, b + 0.1) for k, b in params["conv_layers"]]
    x = np.asarray(jax.random.normal(key, (2, 5, 6, 2)))
    h = x
    for k, b in params["conv_layers"]:
        h = np.maximum(_conv_same_numpy(h, np.asarray(k)) + np.asarray(b), 0.0)
    pooled = h.mean(axis=(1, 2))
    lin = pooled @ np.asarray(params["linear"][0]) + np.asarray(params["linear"][1])
    np.testing.assert_allclose(ref.cnn_forward(params, x), np.maximum(lin, 0), rtol=1e-10)
    np.testing.assert_allclose(
        ref.cnn_forward(params, x, latent_activation=False), lin, rtol=1e-10, atol=1e-14
    )


# --- schedules ---------------------------------------------------------------------------

LR, T = 0.1, 20
COS = lambda t, n: 0.5 * (1 + math.cos(math.pi * min(t, n) / n))


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("exponential_decay", None, lambda t: LR * 0.99**t),
        ("exponential_decay", {"gamma": 0.5}, lambda t: LR * 0.5**t),
        (
            "exponential_decay",
            {"decay_rate": 0.5, "transition_steps": 2},
            lambda t: LR * 0.5 ** (t / 2),
        ),
        ("cosine_decay", None, lambda t: LR * COS(t, T)),
        (
            "warmup_cosine_decay",
            None,
            lambda t: LR * t / 10 if t < 10 else LR * COS(t - 10, T - 10),
        ),
        (
            "warmup_exponential_decay",
            None,
            lambda t: LR * t / 10 if t < 10 else LR * 0.99 ** (t - 10),
        ),
        ("warmup_constant", {"warmup_steps": 4}, lambda t: LR * min(t, 4) / 4),
        ("polynomial", {"power": 2.0}, lambda t: LR * (1 - min(t, T) / T) ** 2),
        ("linear", {"end_value": 0.02}, lambda t: LR + (0.02 - LR) * min(t, T) / T),
        (
            "piecewise_constant",
            {"boundaries_and_scales": {"3": 0.5, "6": 0.1}},
            lambda t: LR * (1 if t < 3 else 0.5 if t < 6 else 0.05),
        ),
        ("sgdr", None, lambda t: LR * COS(t, T)),
    ],
)
def test_schedules(name, kwargs, expected):
    sched = ref.build_schedule(name, LR, T, kwargs)
    for t in [0, 1, 2, 3, 5, 6, 9, 10, 11, 15, 19, 20, 25]:
        got = float(sched(jnp.asarray(t, dtype=jnp.int32)))
        assert got == pytest.approx(expected(t), rel=1e-12, abs=1e-15), (name, t)


def test_all_nine_schedules_covered_and_unknown():
    assert len(ref.SCHEDULES) == 9
    with pytest.raises(ValueError, match="exponential_decay.*sgdr"):
        ref.build_schedule("step", LR, T)


# --- training loop -----------------------------------------------------------------------


def _problem(n=12, d=3, latent=2, seed=0, n_classes=2):
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    X = jax.random.normal(k1, (n, d))
    y = jnp.arange(n) % n_classes
    backbone = ref.mlp_init(k2, [d, 4, latent])
    protos = jax.random.uniform(k3, (2 * n_classes, latent))
    plabels = jnp.repeat(jnp.arange(n_classes), 2)
    return {"prototypes": protos, "backbone": backbone}, X, y, plabels


def _loss(p, X, y, plabels, **kw):
    z = ref.mlp_forward(p["backbone"], X)
    return ref.glvq_loss_with_transfer(
        ref.squared_euclidean_distance_matrix(z, p["prototypes"]), y, plabels, **kw
    )


def _assert_tree_close(a, b, rtol=1e-12):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=1e-15), a, b)


ORDER = [np.array([0, 3, 5, 7]), np.array([1, 2, 4, 6, 8]), np.array([9, 10, 11])]


def test_train_sgd_two_groups_by_hand():
    params, X, y, pl = _problem()
    order = ORDER[:2]
    out = ref.train(params, X, y, pl, order, optimizer="sgd", lr=0.1, bb_lr=0.3)
    p, losses = params, []
    for idx in order:
        loss, g = jax.value_and_grad(_loss)(p, X[idx], y[idx], pl)
        losses.append(loss)
        p = {
            "prototypes": p["prototypes"] - 0.1 * g["prototypes"],
            "backbone": jax.tree.map(lambda a, b: a - 0.3 * b, p["backbone"], g["backbone"]),
        }
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-13)
    _assert_tree_close(out["params"], p)
    np.testing.assert_array_equal(out["lrs"], [[0.1, 0.3], [0.1, 0.3]])
    assert out["params"]["prototypes"].dtype == np.float64


def test_train_adam_schedule_matches_torch_style_adam():
    """optax.adam + exponential_decay == torch.optim.Adam's formula with a per-update lr."""
    params, X, y, pl = _problem(seed=1)
    order = ORDER * 2
    kw = dict(transfer_fn="sigmoid_beta", beta=3.0, margin=0.05)
    out = ref.train(
        params,
        X,
        y,
        pl,
        order,
        lr=0.05,
        bb_lr=0.02,
        lr_scheduler="exponential_decay",
        lr_scheduler_kwargs={"gamma": 0.9},
        **kw,
    )
    b1, b2, eps = 0.9, 0.999, 1e-8
    p = params
    m = jax.tree.map(jnp.zeros_like, p)
    v = jax.tree.map(jnp.zeros_like, p)
    losses, lrs = [], []
    for t, idx in enumerate(order):
        loss, g = jax.value_and_grad(_loss)(p, X[idx], y[idx], pl, **kw)
        losses.append(loss)
        step_lr = {"prototypes": 0.05 * 0.9**t, "backbone": 0.02 * 0.9**t}
        lrs.append([step_lr["prototypes"], step_lr["backbone"]])
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        bc1, bc2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        p = {
            grp: jax.tree.map(
                lambda p, m, v, lr=step_lr[grp], bc1=bc1, bc2=bc2: (
                    p - lr / bc1 * m / (jnp.sqrt(v) / math.sqrt(bc2) + eps)
                ),
                p[grp],
                m[grp],
                v[grp],
            )
            for grp in p
        }
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-12)
    _assert_tree_close(out["params"], p, rtol=1e-11)
    np.testing.assert_allclose(out["lrs"], lrs, rtol=1e-12)


def test_train_accumulation_by_hand():
    params, X, y, pl = _problem(seed=2)
    order = ORDER * 2  # 6 micro-batches, k = 3 -> 2 updates
    out = ref.train(
        params,
        X,
        y,
        pl,
        order,
        optimizer="sgd",
        lr=0.2,
        accumulation_steps=3,
        lr_scheduler="linear",
    )
    assert out["lrs"].shape == (2, 2)
    np.testing.assert_allclose(out["lrs"][:, 0], [0.2, 0.1], rtol=1e-12)
    p, losses = params, []
    for u in range(2):
        acc = None
        for idx in order[3 * u : 3 * u + 3]:
            loss, g = jax.value_and_grad(_loss)(p, X[idx], y[idx], pl)
            losses.append(loss)
            acc = g if acc is None else jax.tree.map(jnp.add, acc, g)
        lr_u = 0.2 * (1 - u / 2)
        p = jax.tree.map(lambda a, s, lr=lr_u: a - lr * s / 3, p, acc)
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-12)
    _assert_tree_close(out["params"], p)


def test_train_ema_and_lookahead_by_hand():
    params, X, y, pl = _problem(seed=3)
    order = ORDER * 3  # 9 updates
    lr, d, la = 0.3, 0.8, {"sync_period": 4, "slow_step_size": 0.25}
    out_ema = ref.train(params, X, y, pl, order, optimizer="sgd", lr=lr, ema_decay=d)
    out_la = ref.train(params, X, y, pl, order, optimizer="sgd", lr=lr, lookahead=la)
    out_both = ref.train(params, X, y, pl, order, optimizer="sgd", lr=lr, ema_decay=d, lookahead=la)

    def run(use_ema, use_la):
        fast = slow = ema = params
        losses = []
        for t, idx in enumerate(order):
            loss, g = jax.value_and_grad(_loss)(fast, X[idx], y[idx], pl)
            losses.append(loss)
            fast = jax.tree.map(lambda a, b: a - lr * b, fast, g)
            if use_la and (t + 1) % la["sync_period"] == 0:
                a = la["slow_step_size"]
                slow = jax.tree.map(lambda s, f, a=a: s + a * (f - s), slow, fast)
                fast = slow
            ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, fast)
        final = ema if use_ema else slow if use_la else fast
        return np.array(losses), final

    for out, flags in [(out_ema, (True, False)), (out_la, (False, True)), (out_both, (True, True))]:
        losses, final = run(*flags)
        np.testing.assert_allclose(out["losses"], losses, rtol=1e-12)
        _assert_tree_close(out["params"], final)
    # the last sync happened at update 8 (0-based 7); slow differs from the end of training
    assert not np.allclose(out_la["params"]["prototypes"], out_ema["params"]["prototypes"])


@pytest.mark.parametrize("frozen", ["backbone", "prototypes"])
@pytest.mark.parametrize(
    "extra", [{}, {"lookahead": {}}, {"ema_decay": 0.9, "accumulation_steps": 2}]
)
def test_freeze_is_bit_identical(frozen, extra):
    params, X, y, pl = _problem(seed=4)
    out = ref.train(
        params,
        X,
        y,
        pl,
        ORDER * 2,
        optimizer="adamw",
        lr=0.05,
        lr_scheduler="cosine_decay",
        freeze=[frozen],
        **extra,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)),
        out["params"][frozen],
        params[frozen],
    )
    other = "prototypes" if frozen == "backbone" else "backbone"
    moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), out["params"][other], params[other])
    assert any(jax.tree.leaves(moved))


def test_sample_weight_and_float32_and_errors():
    params, X, y, pl = _problem(seed=5)
    w = jnp.linspace(0.5, 2.0, X.shape[0])
    out = ref.train(params, X, y, pl, ORDER[:1], optimizer="sgd", sample_weight=w)
    idx = ORDER[0]
    expected = _loss(params, X[idx], y[idx], pl, sample_weight=w[idx])
    np.testing.assert_allclose(out["losses"], [expected], rtol=1e-13)

    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    out32 = ref.train(p32, X.astype(jnp.float32), y, pl, ORDER)
    assert out32["losses"].dtype == np.float32
    assert out32["params"]["prototypes"].dtype == np.float32

    with pytest.raises(ValueError, match="adam"):
        ref.train(params, X, y, pl, ORDER, optimizer="lbfgs")
    with pytest.raises(ValueError, match="prototypes"):
        ref.train(params, X, y, pl, ORDER, freeze=["head"])


def test_train_cnn_runs():
    key = jax.random.PRNGKey(6)
    X = jax.random.normal(key, (6, 5, 5, 1))
    y = jnp.array([0, 1, 0, 1, 0, 1])
    bb = ref.cnn_init(key, (5, 5, 1), [2], [3], latent_dim=2)
    params = {"prototypes": jnp.array([[0.1, 0.2], [0.3, 0.1]]), "backbone": bb}
    out = ref.train(
        params,
        X,
        y,
        jnp.array([0, 1]),
        [np.arange(6)] * 3,
        backbone="cnn",
        activation="relu",
        optimizer="sgd",
        lr=0.1,
    )
    assert out["losses"].shape == (3,)
    assert np.all(np.isfinite(out["losses"]))
