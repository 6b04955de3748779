"""Migration from a fitted prosemble LVQMLN: objects with plain numpy attributes shaped like
prosemble's (nothing of prosemble is imported) convert to our estimator / module with the
predictions of the seed's forward math (numpy float64, and the JAX reference in float32)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.exceptions import NotFittedError

from lvqmln_jax_ref import backbones as jref
from lvqmln_jax_ref import losses as jloss
from lvqmln_torch import LVQMLN, ArrayDataModule, LVQMLNClassifier, from_prosemble
from lvqmln_torch.io.interop import images_nhwc_to_nchw
from lvqmln_torch.sklearn.migration import lvqmln_from_prosemble

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
NUMPY_ACTIVATIONS = {
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))),
}


def sigmoid_beta(x, beta=10.0):  # stands in for prosemble.core.activations.sigmoid_beta
    raise AssertionError("the conversion reads the name; it never calls upstream's function")


def fake_prosemble(
    rng: np.random.Generator,
    n_features: int = 5,
    hidden_sizes=(10,),
    latent_dim: int = 2,
    activation: str = "sigmoid",
    classes=(0, 1, 2),
    per_class: int = 2,
    **overrides,
) -> SimpleNamespace:
    """A fitted prosemble LVQMLN as plain attributes (float32 / int32 numpy, as JAX gives)."""
    sizes = [n_features, *hidden_sizes, latent_dim]
    params = [
        (
            (rng.normal(size=(a, b)) * 1.5 / np.sqrt(a)).astype(np.float32),
            (rng.normal(size=b) * 0.1).astype(np.float32),
        )
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    labels = np.repeat(np.asarray(classes, dtype=np.int32), per_class)
    obj = SimpleNamespace(
        # constructor parameters, as upstream stores them
        hidden_sizes=list(hidden_sizes),
        latent_dim=latent_dim,
        activation=activation,
        beta=10.0,
        bb_lr=None,
        n_prototypes_per_class=per_class,
        max_iter=250,
        lr=0.02,
        epsilon=1e-6,
        random_seed=7,
        margin=0.0,
        batch_size=None,
        lr_scheduler=None,
        lr_scheduler_kwargs={},
        prototypes_initializer=None,
        patience=None,
        restore_best=False,
        class_weight=None,
        gradient_accumulation_steps=None,
        ema_decay=None,
        freeze_params=None,
        lookahead=None,
        mixed_precision=None,
        transfer_fn=None,
        _optimizer_spec="adam",
        # fitted attributes
        backbone_params_=params,
        prototypes_=rng.uniform(-1, 1, size=(len(labels), latent_dim)).astype(np.float32),
        prototype_labels_=labels,
        classes_=np.asarray(classes, dtype=np.int32),
        n_classes_=len(classes),
        n_iter_=123,
        loss_=-0.5,
        loss_history_=np.linspace(0.1, -0.5, 123).astype(np.float32),
        val_loss_history_=None,
        best_loss_=-0.5,
    )
    for key, value in overrides.items():
        setattr(obj, key, value)
    return obj


def seed_predictions(obj, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The seed's transform / predict / predict_proba in float64 numpy (labels grouped by value,
    columns in classes_ order), plus the gap between the two smallest distances."""
    act = NUMPY_ACTIVATIONS[obj.activation]
    z = X.astype(np.float64)
    for w, b in obj.backbone_params_:
        z = act(z @ w.astype(np.float64) + b.astype(np.float64))
    protos = obj.prototypes_.astype(np.float64)
    d = np.maximum((z**2).sum(1)[:, None] + (protos**2).sum(1)[None] - 2 * z @ protos.T, 0)
    labels = obj.prototype_labels_[d.argmin(1)]
    pooled = np.stack([d[:, obj.prototype_labels_ == c].min(1) for c in obj.classes_], axis=1)
    e = np.exp(-(pooled - pooled.min(1, keepdims=True)))
    proba = e / e.sum(1, keepdims=True)
    ordered = np.sort(d, axis=1)
    return z, labels, proba, ordered[:, 1] - ordered[:, 0]


@pytest.mark.parametrize(
    ("activation", "hidden_sizes", "latent_dim", "per_class", "with_jax"),
    [
        ("sigmoid", (10,), 2, 1, True),
        ("tanh", (8, 6), 3, 2, True),
        ("relu", (7,), 2, 3, False),
        ("leaky_relu", (6, 4), 4, 1, False),
        ("selu", (5,), 2, 2, False),
    ],
)
def test_conversion_matches_the_seed_forward(
    activation, hidden_sizes, latent_dim, per_class, with_jax
):
    rng = np.random.default_rng(0)
    obj = fake_prosemble(rng, 5, hidden_sizes, latent_dim, activation, per_class=per_class)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    est = from_prosemble(obj)
    z, labels, proba, gap = seed_predictions(obj, X)

    np.testing.assert_allclose(est.transform(X), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(est.predict_proba(X), proba, rtol=1e-4, atol=1e-5)
    clear = gap > 1e-4  # exclude float32 near-ties
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(est.predict(X)[clear], labels[clear])
    if not with_jax:  # (the JAX compilations are the slow part of this test)
        return
    # The JAX reference in float32 is prosemble's arithmetic: identical labels.
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in obj.backbone_params_]
    zj = jref.mlp_forward(params, jnp.asarray(X), activation)
    dj = jloss.squared_euclidean_distance_matrix(zj, jnp.asarray(obj.prototypes_))
    upstream = np.asarray(jloss.wtac(dj, jnp.asarray(obj.prototype_labels_)))
    np.testing.assert_array_equal(est.predict(X)[clear], upstream[clear])
    upstream_proba = jax_softmax_proba(dj, obj)
    np.testing.assert_allclose(est.predict_proba(X), upstream_proba, rtol=1e-4, atol=1e-5)


def jax_softmax_proba(distances, obj) -> np.ndarray:
    pooled = jloss.stratified_min_pooling(
        distances, jnp.asarray(obj.prototype_labels_), obj.n_classes_
    )
    return np.asarray(jax.nn.softmax(-pooled, axis=1))  # upstream's predict_proba


def test_hyperparameters_and_fitted_attributes_carry_over():
    rng = np.random.default_rng(1)
    obj = fake_prosemble(
        rng,
        transfer_fn=sigmoid_beta,
        beta=4.0,
        margin=0.1,
        lr_scheduler="exponential_decay",
        lr_scheduler_kwargs={"decay_rate": 0.9},
        class_weight="balanced",
        lookahead={"sync_period": 4, "slow_step_size": 0.5},
        freeze_params=["prototypes"],
        val_loss_history_=np.array([0.3, 0.2], np.float32),
        _optimizer_spec="rmsprop",
    )
    est = from_prosemble(obj)
    params = est.get_params()
    expected = dict(
        hidden_sizes=[10],
        latent_dim=2,
        activation="sigmoid",
        beta=4.0,
        margin=0.1,
        max_iter=250,
        lr=0.02,
        random_seed=7,
        n_prototypes_per_class=2,
        transfer_fn="sigmoid_beta",
        optimizer="rmsprop",
        lr_scheduler="exponential_decay",
        lr_scheduler_kwargs={"decay_rate": 0.9},
        class_weight="balanced",
        lookahead={"sync_period": 4, "slow_step_size": 0.5},
        freeze_params=["prototypes"],
    )
    for name, value in expected.items():
        assert params[name] == value, name
    assert est.n_iter_ == 123 and est.loss_ == -0.5 and est.best_loss_ == -0.5
    assert est.engine_ is None  # trained by prosemble
    np.testing.assert_allclose(est.loss_history_, obj.loss_history_)
    np.testing.assert_allclose(est.val_loss_history_, [0.3, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(est.prototypes_, obj.prototypes_)
    np.testing.assert_array_equal(est.prototype_labels_, obj.prototype_labels_)
    np.testing.assert_array_equal(est.classes_, obj.classes_)
    assert est.n_features_in_ == 5 and est.n_classes_ == 3
    assert est.model_.hparams.transfer == "sigmoid_beta" and est.model_.hparams.beta == 4.0


def test_noncontiguous_labels_map_to_class_indices():
    rng = np.random.default_rng(2)
    obj = fake_prosemble(rng, classes=(2, 5, 9), per_class=2)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    est = from_prosemble(obj)
    _, labels, proba, gap = seed_predictions(obj, X)
    clear = gap > 1e-4
    np.testing.assert_array_equal(est.predict(X)[clear], labels[clear])
    np.testing.assert_allclose(est.predict_proba(X), proba, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(est.model_.prototype_labels.numpy(), [0, 0, 1, 1, 2, 2])


def test_cnn_backbone_conversion():
    rng = np.random.default_rng(3)
    kernels = [
        ((rng.normal(size=(3, 3, 2, 4)) * 0.4).astype(np.float32), np.zeros(4, np.float32)),
        ((rng.normal(size=(5, 5, 4, 3)) * 0.2).astype(np.float32), np.full(3, 0.1, np.float32)),
    ]
    linear = ((rng.normal(size=(3, 2))).astype(np.float32), np.zeros(2, np.float32))
    obj = fake_prosemble(rng, activation="relu", per_class=1)
    obj.backbone_params_ = {"conv_layers": kernels, "linear": linear}
    obj.hidden_sizes = None
    images_nhwc = rng.normal(size=(40, 7, 7, 2)).astype(np.float32)
    with pytest.raises(ValueError, match=r"input_shape=\(C, H, W\)"):
        from_prosemble(obj)
    with pytest.raises(ValueError, match="C=2"):
        from_prosemble(obj, input_shape=(7, 7, 2))
    est = from_prosemble(obj, input_shape=(2, 7, 7))
    assert est.get_params()["channels"] == [4, 3]
    assert est.get_params()["kernel_sizes"] == [3, 5]
    reference = np.asarray(
        jref.cnn_forward(
            {
                "conv_layers": [tuple(map(jnp.asarray, k)) for k in kernels],
                "linear": tuple(map(jnp.asarray, linear)),
            },
            jnp.asarray(images_nhwc),
            "relu",
        )
    )
    images = images_nhwc_to_nchw(images_nhwc)
    np.testing.assert_allclose(est.transform(images), reference, rtol=1e-4, atol=1e-5)
    assert est.input_shape_ == (2, 7, 7)


def test_lightning_module_conversion_predicts_and_trains_on():
    rng = np.random.default_rng(4)
    obj = fake_prosemble(rng)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    module = lvqmln_from_prosemble(obj)
    assert isinstance(module, LVQMLN)
    est = from_prosemble(obj)
    np.testing.assert_array_equal(module.predict(X), est.predict(X))
    # Training further starts from the converted weights (no re-initialisation).
    y = np.arange(60) % 3
    before = module.prototypes.detach().clone()
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(module, ArrayDataModule(X, y))
    moved = module.prototypes.detach()
    assert not torch.equal(before, moved)
    assert torch.allclose(before, moved, atol=0.1)  # two small steps away, not re-drawn


def test_converted_estimator_saves_and_refits(tmp_path):
    rng = np.random.default_rng(5)
    obj = fake_prosemble(rng)
    X = rng.normal(size=(90, 5)).astype(np.float32)
    est = from_prosemble(obj)
    est.save(tmp_path / "converted.pt")
    loaded = LVQMLNClassifier.load(tmp_path / "converted.pt")
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    y = np.arange(90) % 3
    refit = LVQMLNClassifier(**{**est.get_params(), "max_iter": 3}).fit(X, y)
    assert refit.n_iter_ == 3
    assert LVQMLNClassifier.from_prosemble(obj).get_params() == est.get_params()


def test_untranslatable_hyperparameters_warn_and_fall_back():
    rng = np.random.default_rng(6)
    optax_like = SimpleNamespace(init=lambda p: None, update=lambda g, s, p: (g, s))
    obj = fake_prosemble(rng, _optimizer_spec=optax_like, lr_scheduler=lambda step: 0.1)
    with pytest.warns(UserWarning, match="optimizer=.*lr_scheduler=.*left at its default"):
        est = from_prosemble(obj)
    assert est.get_params()["optimizer"] == "adam"
    assert est.get_params()["lr_scheduler"] is None


def test_errors():
    rng = np.random.default_rng(7)
    with pytest.raises(NotFittedError, match="fit it first"):
        from_prosemble(fake_prosemble(rng, backbone_params_=None))
    with pytest.raises(ValueError, match="latent_dim=3 but prototypes_ have 2 columns"):
        from_prosemble(_declared_latent(rng))
    obj = fake_prosemble(rng)
    obj.backbone_params_ = [obj.backbone_params_[0], (np.zeros((7, 2)), np.zeros(2))]
    with pytest.raises(ValueError, match="layer 1 takes 7 inputs"):
        from_prosemble(obj)
    with pytest.raises(ValueError, match="not all among classes_"):
        from_prosemble(fake_prosemble(rng, classes_=np.array([0, 1, 3], np.int32)))
    with pytest.raises(ValueError, match="hidden_sizes"):
        from_prosemble(_mismatched_hidden(rng))
    with pytest.raises(ValueError, match="transfer_fn"):
        from_prosemble(fake_prosemble(rng, transfer_fn=lambda x, beta: x))
    with pytest.raises(ValueError, match="Valid activations|valid: sigmoid"):
        from_prosemble(fake_prosemble(rng, activation="gelu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean conversion warns about nothing
        from_prosemble(fake_prosemble(rng))


def _declared_latent(rng: np.random.Generator) -> SimpleNamespace:
    obj = fake_prosemble(rng, latent_dim=2)
    obj.latent_dim = 3
    return obj


def _mismatched_hidden(rng: np.random.Generator) -> SimpleNamespace:
    obj = fake_prosemble(rng, hidden_sizes=(10,))
    obj.hidden_sizes = [12]
    return obj
