"""The numpy engine's parity proof: ``numpy_core`` against torch autograd and the JAX reference
(loss and every gradient, float64 to 1e-12, float32 to 1e-5), and ``engine="numpy"`` against
``engine="lightning"`` (float64 trajectories: the same epochs, epoch losses to float32
rounding, final weights to 1e-10) for every feature the engine covers; then its
bit-identical freezing, errors and engine selection.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _numerics import assert_winners_agree, latent_distances
from _parity_pairs import assert_parity
from _parity_utils import blobs
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

import lvqmln_jax_ref as ref
from lvqmln_torch import LVQMLN, ArrayDataModule, LVQMLNClassifier
from lvqmln_torch import functional as F
from lvqmln_torch import numpy_core as N
from lvqmln_torch.core.backbones import MLPBackbone
from lvqmln_torch.training.optimizers import OPTIMIZERS
from lvqmln_torch.training.schedules import SCHEDULES

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


class TwiceSGD(torch.optim.SGD):
    """SGD that evaluates its closure once more before the step (as a line search probes):
    both engines must run the training step (and count its loss) every time."""

    def step(self, closure=None):
        closure()
        return super().step(closure)


# ------------------------------------------------------------------ the core, one batch
def _problem(dtype, activation, latent_activation, weighted, seed=0, copies=False):
    """A 3-layer MLP, 5 prototypes (two of class 0, two of class 2; ``copies`` makes the
    class-0 pair identical), 20 samples; torch tensors of ``dtype``."""
    rng = np.random.default_rng(seed)
    torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
    backbone = MLPBackbone(
        5, [7, 6], 3, activation, latent_activation, generator=torch.Generator().manual_seed(seed)
    ).to(torch_dtype)
    x = torch.tensor(rng.normal(size=(20, 5)), dtype=torch_dtype)
    y = torch.tensor(np.r_[0, 1, 2, rng.integers(0, 3, 17)])
    protos = rng.normal(size=(5, 3))
    if copies:
        protos[1] = protos[0]
    prototypes = torch.nn.Parameter(torch.tensor(protos, dtype=torch_dtype))
    labels = torch.tensor([0, 0, 1, 2, 2])
    weights = torch.tensor(rng.uniform(0.1, 2, 20), dtype=torch_dtype) if weighted else None
    return backbone, x, y, prototypes, labels, weights


def _numpy_loss_and_grads(backbone, x, y, prototypes, labels, weights, activation, la, **kw):
    layers = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in backbone.layers]
    outputs = N.mlp_forward(layers, np.ascontiguousarray(x.numpy().T), activation, la)
    dtype = x.numpy().dtype
    targets = N.glvq_targets(
        y.numpy(), labels.numpy(), None if weights is None else weights.numpy(), dtype
    )
    loss, finite, grad_latent, grad_prototypes = N.glvq_loss_and_grads(
        outputs[-1], prototypes.detach().numpy(), targets, **kw
    )
    grads = [(np.empty_like(w), np.empty_like(b)) for w, b in layers]
    N.mlp_backward(layers, outputs, grad_latent, activation, la, grads)
    return loss, finite, outputs[-1].T, grad_prototypes, grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "activation,transfer,latent_activation,weighted,margin",
    [
        (act, tr, la, w, m)
        for act, tr, la, w, m in itertools.product(
            N.ACTIVATIONS, N.TRANSFERS, (True, False), (False, True), (0.0, 0.3)
        )
        # every activation x transfer pair, the other options crossed in a Latin pattern
        if (la, w, m) in {(True, False, 0.0), (False, True, 0.3)}
        or (act, tr) in {("sigmoid", "identity"), ("relu", "swish_beta")}
    ],
)
def test_core_loss_and_gradients_match_torch_autograd(
    dtype, activation, transfer, latent_activation, weighted, margin
):
    backbone, x, y, prototypes, labels, weights = _problem(
        dtype, activation, latent_activation, weighted
    )
    latent = backbone(x)
    distances = F.squared_euclidean_distance(latent, prototypes)
    loss = F.glvq_loss(distances, y, labels, transfer, 3.0, margin, weights)
    loss.backward()

    got, finite, got_latent, grad_prototypes, grads = _numpy_loss_and_grads(
        backbone, x, y, prototypes, labels, weights, activation, latent_activation,
        transfer=transfer, beta=3.0, margin=margin,
    )  # fmt: skip
    rtol = RTOL[dtype]
    assert finite
    assert_parity(np.asarray(got), loss.detach().numpy(), rtol)
    assert_parity(got_latent, latent.detach().numpy(), rtol)
    assert_parity(grad_prototypes, prototypes.grad.numpy(), rtol)
    for (grad_w, grad_b), layer in zip(grads, backbone.layers):
        assert_parity(grad_w, layer.weight.grad.numpy(), rtol)
        assert_parity(grad_b, layer.bias.grad.numpy(), rtol)


@pytest.mark.numerics
def test_core_splits_tied_gradients_and_clamps_as_autograd_does():
    """Identical prototype copies share the gradient evenly (torch.amin / jnp.min) and stay
    identical; a sample sitting on a prototype (distance clamped at 0) passes the gradient."""
    backbone, x, y, prototypes, labels, weights = _problem(
        np.float64, "tanh", True, False, copies=True
    )
    with torch.no_grad():  # sample 3 (class 0) exactly on prototype 2 (class 1): d = 0
        prototypes[2] = backbone(x[3:4])[0]
    loss = F.glvq_loss(F.squared_euclidean_distance(backbone(x), prototypes), y, labels)
    loss.backward()
    _, _, _, grad_prototypes, _ = _numpy_loss_and_grads(
        backbone, x, y, prototypes, labels, weights, "tanh", True
    )
    # The copies sit in different columns of one product: equal up to rounding.
    np.testing.assert_allclose(grad_prototypes[0], grad_prototypes[1], rtol=1e-12, atol=1e-15)
    assert_parity(grad_prototypes, prototypes.grad.numpy(), 1e-12)


@pytest.mark.parametrize("transfer", list(N.TRANSFERS))
def test_core_matches_the_jax_reference(transfer):
    backbone, x, y, prototypes, labels, weights = _problem(np.float64, "sigmoid", True, True)
    params = [
        (jnp.asarray(lin.weight.detach().numpy().T), jnp.asarray(lin.bias.detach().numpy()))
        for lin in backbone.layers
    ]

    def jax_loss(params, protos):
        z = ref.mlp_forward(params, jnp.asarray(x.numpy()), "sigmoid")
        d = ref.squared_euclidean_distance_matrix(z, protos)
        return ref.glvq_loss_with_transfer(
            d, jnp.asarray(y.numpy()), jnp.asarray(labels.numpy()), transfer, 0.1, 4.0,
            jnp.asarray(weights.numpy()),
        )  # fmt: skip

    loss, (grad_params, grad_protos) = jax.value_and_grad(jax_loss, argnums=(0, 1))(
        params, jnp.asarray(prototypes.detach().numpy())
    )
    got, _, _, grad_prototypes, grads = _numpy_loss_and_grads(
        backbone, x, y, prototypes, labels, weights, "sigmoid", True,
        transfer=transfer, beta=4.0, margin=0.1,
    )  # fmt: skip
    assert_parity(np.asarray(got), np.asarray(loss), 1e-12)
    assert_parity(grad_prototypes, np.asarray(grad_protos), 1e-12)
    for (grad_w, grad_b), (jax_w, jax_b) in zip(grads, grad_params):
        assert_parity(grad_w, np.asarray(jax_w).T, 1e-12)
        assert_parity(grad_b, np.asarray(jax_b), 1e-12)


def test_core_reports_non_finite_distances():
    backbone, x, y, prototypes, labels, weights = _problem(np.float64, "relu", False, False)
    with torch.no_grad():
        prototypes[0, 0] = np.inf
    with np.errstate(invalid="ignore"):  # inf - inf: the NaNs the engine then reports
        _, finite, *_ = _numpy_loss_and_grads(
            backbone, x, y, prototypes, labels, weights, "relu", False
        )
    assert not finite


# ------------------------------------------------------------------ whole fits
@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, y = blobs(n=48, d=4, n_classes=3, seed=3)
    X_val, y_val = blobs(n=24, d=4, n_classes=3, seed=4)
    rng = np.random.default_rng(5)
    return {"X": X, "y": y, "X_val": X_val, "y_val": y_val, "w": rng.uniform(0.2, 3.0, len(y))}


# Every feature the numpy engine covers, one fit each (30 epochs unless a rule stops it).
FEATURES: dict[str, dict] = {
    "defaults (epsilon stop)": {"epsilon": 1e-3},
    "no stopping rule": {"epsilon": None},
    "two prototypes per class, dict counts": {"n_prototypes_per_class": {0: 2, 1: 1, 2: 3}},
    "no hidden layer, linear latent": {"hidden_sizes": [], "latent_activation": False},
    "two hidden layers, latent 3": {"hidden_sizes": [8, 6], "latent_dim": 3},
    **{f"activation {a}": {"activation": a} for a in N.ACTIVATIONS if a != "sigmoid"},
    "transfer sigmoid_beta, margin": {"transfer_fn": "sigmoid_beta", "beta": 3.0, "margin": 0.2},
    "transfer swish_beta": {"transfer_fn": "swish_beta", "beta": 5.0},
    **{f"optimizer {o}": {"optimizer": o} for o in OPTIMIZERS if o != "adam"},
    "an optimizer that evaluates the closure twice": {"optimizer": "test_numpy_engine.TwiceSGD"},
    **{f"schedule {s}": {"lr_scheduler": s} for s in SCHEDULES},
    "schedule with kwargs and bb_lr": {
        "lr_scheduler": "exponential_decay",
        "lr_scheduler_kwargs": {"decay_rate": 0.9},
        "bb_lr": 0.003,
    },
    "bb_lr": {"bb_lr": 0.05},
    "freeze backbone": {"freeze_params": ["backbone"]},
    "freeze prototypes": {"freeze_params": ["prototypes"]},
    "class_weight balanced": {"class_weight": "balanced"},
    "class_weight dict with sample_weight": {"class_weight": {0: 1.0, 1: 3.0, 2: 0.5}, "_w": True},
    "mini-batches": {"batch_size": 10},
    "mini-batches with sample weights": {"batch_size": 7, "_w": True},
    "validation data": {"_val": True},
    "validation, patience": {"_val": True, "patience": 2, "epsilon": 1e-3, "lr": 0.2},
    "patience on the train loss": {"patience": 1, "epsilon": 1e-2},
    "restore_best on validation": {"_val": True, "restore_best": True, "lr": 0.3},
    "restore_best on the train loss, mini-batches": {
        "restore_best": True,
        "batch_size": 16,
        "lr": 0.3,
    },
    "ema": {"ema_decay": 0.9},
    "lookahead": {"lookahead": {"sync_period": 4, "slow_step_size": 0.5}},
    "ema and lookahead, validation, restore_best": {
        "ema_decay": 0.8,
        "lookahead": {"sync_period": 3},
        "_val": True,
        "restore_best": True,
    },
}


def _fit(data, engine: str, precision: str = "64-true", **options) -> LVQMLNClassifier:
    weighted, validate = options.pop("_w", False), options.pop("_val", False)
    options = {"max_iter": 30, "lr": 0.05, **options}
    est = LVQMLNClassifier(engine=engine, precision=precision, **options)
    return est.fit(
        data["X"],
        data["y"],
        validation_data=(data["X_val"], data["y_val"]) if validate else None,
        sample_weight=data["w"] if weighted else None,
    )


def _weights(est: LVQMLNClassifier) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in est.model_.state_dict().items()}


@pytest.mark.parametrize("name", list(FEATURES))
@pytest.mark.numerics
def test_numpy_engine_follows_the_lightning_path_in_float64(data, name):
    fast = _fit(data, "numpy", **FEATURES[name])
    slow = _fit(data, "lightning", **FEATURES[name])
    assert (fast.engine_, slow.engine_) == ("numpy", "lightning")
    assert fast.n_iter_ == slow.n_iter_
    # Epoch losses are float32 metrics on both paths (torchmetrics' default dtype).
    np.testing.assert_allclose(fast.loss_history_, slow.loss_history_, rtol=1e-6)
    if slow.val_loss_history_ is not None:
        np.testing.assert_allclose(fast.val_loss_history_, slow.val_loss_history_, rtol=1e-6)
    assert fast.best_loss_ == pytest.approx(slow.best_loss_, rel=1e-6)
    fast_weights, slow_weights = _weights(fast), _weights(slow)
    assert fast_weights.keys() == slow_weights.keys()
    for key, expected in slow_weights.items():
        assert (
            fast_weights[key].dtype
            == expected.dtype
            == (np.int64 if key == "prototype_labels" else np.float64)
        )
        assert_parity(fast_weights[key], expected, 1e-10)
    d = latent_distances(slow, data["X_val"])
    assert_winners_agree(fast.predict(data["X_val"]), d, slow.prototype_labels_)


@pytest.mark.numerics
def test_numpy_engine_matches_lightning_in_float32_on_iris():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    fast = LVQMLNClassifier(max_iter=40, epsilon=None, engine="numpy").fit(X, y)
    slow = LVQMLNClassifier(max_iter=40, epsilon=None, engine="lightning").fit(X, y)
    assert fast.prototypes_.dtype == np.float32
    np.testing.assert_allclose(fast.loss_history_, slow.loss_history_, rtol=1e-4)
    assert_parity(fast.prototypes_, slow.prototypes_, 1e-4)
    assert_winners_agree(fast.predict(X), latent_distances(slow, X), slow.prototype_labels_, 1e-3)
    assert fast.score(X, y) > 0.8


def test_numpy_engine_keeps_frozen_tensors_bit_identical(data):
    # The estimator's untrained model: the same seed, initialised from the same data.
    initial = LVQMLN(in_features=4, n_classes=3, seed=42)
    initial.prepare(ArrayDataModule(data["X"], data["y"]))
    for frozen in ("backbone", "prototypes"):
        est = _fit(data, "numpy", precision=None, freeze_params=[frozen], lr=0.2, ema_decay=0.5)
        for key, value in _weights(est).items():
            moved = not np.array_equal(value, initial.state_dict()[key].numpy())
            fixed = key in ("prototype_labels", "head.temperature")  # never trained
            assert moved == (not fixed and not key.startswith(frozen)), key


def test_numpy_engine_names_the_first_non_finite_step(data):
    X = data["X"].copy()
    X[5, 0] = 1e30  # finite input, infinite squares
    est = LVQMLNClassifier(
        max_iter=3, activation="relu", latent_activation=False, engine="numpy", epsilon=None
    )
    with pytest.raises(FloatingPointError, match=r"non-finite .* at optimizer step 0 \(epoch 0\)"):
        est.fit(X, data["y"])
    assert not hasattr(est, "model_")


# ------------------------------------------------------------------ engine selection
def test_auto_picks_numpy_for_small_mlp_problems_and_lightning_otherwise(data):
    X, y = data["X"], data["y"]
    assert LVQMLNClassifier(max_iter=2).fit(X, y).engine_ == "numpy"
    for options in (
        {"mixed_precision": "bfloat16"},
        {"gradient_accumulation_steps": 2, "batch_size": 8},
        {"transfer_fn": lambda x, beta: x},
        {"hidden_sizes": [1 << 18]},  # 48 rows x 2^18·(4 + 2) weights: above the limit
    ):
        assert LVQMLNClassifier(max_iter=1, **options).fit(X, y).engine_ == "lightning", options
    images = np.random.default_rng(0).normal(size=(8, 1, 4, 4)).astype(np.float32)
    est = LVQMLNClassifier(max_iter=1, backbone="cnn").fit(images, np.arange(8) % 2)
    assert est.engine_ == "lightning"


@pytest.mark.parametrize(
    "options,reason",
    [
        ({"backbone": "cnn"}, "backbone='cnn'"),
        ({"transfer_fn": lambda x, beta: x}, "callable transfer_fn"),
        ({"accelerator": "auto"}, "accelerator='auto'"),
        ({"mixed_precision": "float16"}, "precision='16-mixed'"),
        ({"precision": "bf16-true"}, "precision='bf16-true'"),
        ({"gradient_accumulation_steps": 2, "batch_size": 8}, "gradient_accumulation_steps"),
    ],
)
def test_explicit_numpy_engine_refuses_what_it_cannot_train(data, options, reason):
    X = data["X"]
    if options.get("backbone") == "cnn":
        X = np.random.default_rng(0).normal(size=(48, 1, 4, 4))
    with pytest.raises(ValueError, match=rf"engine='numpy' cannot train .*{reason}.*'lightning'"):
        LVQMLNClassifier(max_iter=1, engine="numpy", **options).fit(X, data["y"])


def test_unknown_engine_lists_the_valid_ones(data):
    with pytest.raises(
        ValueError, match="Unknown engine 'jax'. Valid engines: auto, numpy, lightning"
    ):
        LVQMLNClassifier(engine="jax").fit(data["X"], data["y"])


def test_numpy_fitted_estimator_saves_and_loads(data, tmp_path):
    est = _fit(data, "numpy", precision=None)
    est.save(tmp_path / "est.pt")
    loaded = LVQMLNClassifier.load(tmp_path / "est.pt")
    assert loaded.engine == "numpy" and loaded.engine_ == "numpy"
    np.testing.assert_array_equal(loaded.predict_proba(data["X"]), est.predict_proba(data["X"]))
