"""The scikit-learn estimator: fitting, fitted attributes, every seed parameter (smoke level
or better), sklearn integration, errors, output hygiene, save/load."""

from __future__ import annotations

import logging
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lvqmln_torch import LVQMLN, LVQMLNClassifier
from lvqmln_torch import functional as F


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(iris) -> LVQMLNClassifier:
    X, y = iris
    return LVQMLNClassifier(max_iter=100, lr=0.05).fit(X, y)


def _images(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    X[y == 1, :, :3] += 2.0  # class 1: bright upper half
    return X, y


# ---------------------------------------------------------------------------- basics
def test_fit_predict_and_fitted_attributes(fitted, iris):
    X, y = iris
    est = fitted
    assert est.score(X, y) > 0.9
    assert isinstance(est.model_, LVQMLN)
    assert est.n_features_in_ == 4
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])
    assert est.n_classes_ == 3
    assert est.prototypes_.shape == (3, 2) and est.prototypes_.dtype == np.float32
    # As upstream: prototype labels in label space, class-blocked.
    np.testing.assert_array_equal(est.prototype_labels_, [0, 1, 2])
    assert 1 <= est.n_iter_ <= 100
    assert est.loss_history_.shape == (est.n_iter_,)
    assert est.loss_ == est.loss_history_[-1]
    assert est.best_loss_ == est.loss_history_.min()
    assert est.val_loss_history_ is None
    assert est.loss_history_[-1] < est.loss_history_[0]

    proba = est.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], est.predict(X))
    z = est.transform(X)
    assert z.shape == (150, 2)
    assert np.all((z > 0) & (z < 1))  # sigmoid latent (upstream's last-layer activation)
    # prototypes_ are the module's, predictions are the nearest prototype in latent space.
    d = ((z[:, None, :] - est.prototypes_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(est.prototype_labels_[d.argmin(1)], est.predict(X))


def test_default_parameters_match_the_seed():
    params = LVQMLNClassifier().get_params()
    seed_defaults = dict(
        hidden_sizes=None,
        latent_dim=2,
        activation=None,  # the backbone's default: upstream's sigmoid for the MLP (below)
        beta=10.0,
        bb_lr=None,
        n_prototypes_per_class=1,
        max_iter=100,
        lr=0.01,
        epsilon=1e-6,
        random_seed=42,
        optimizer="adam",
        transfer_fn=None,
        margin=0.0,
        batch_size=None,
        lr_scheduler=None,
        lr_scheduler_kwargs=None,
        prototypes_initializer=None,
        patience=None,
        restore_best=False,
        class_weight=None,
        gradient_accumulation_steps=None,
        ema_decay=None,
        freeze_params=None,
        lookahead=None,
        mixed_precision=None,
    )
    for name, value in seed_defaults.items():
        assert params[name] == value, name
    assert params["backbone"] == "mlp" and params["accelerator"] == "cpu"
    assert params["devices"] == 1 and params["verbose"] is False
    # activation=None and bb_lr=None mean upstream's values for the MLP.
    from lvqmln_torch.core.construction import DEFAULT_ACTIVATION, DEFAULT_BB_LR_FACTOR

    assert DEFAULT_ACTIVATION["mlp"] == "sigmoid" and DEFAULT_BB_LR_FACTOR["mlp"] == 1.0


def test_default_hidden_sizes_is_one_layer_of_ten(fitted):
    layers = fitted.model_.backbone.layers
    assert [(lay.in_features, lay.out_features) for lay in layers] == [(4, 10), (10, 2)]


def test_same_seed_same_model_and_different_seed_differs(iris):
    X, y = iris
    a = LVQMLNClassifier(max_iter=5, batch_size=32).fit(X, y)
    b = LVQMLNClassifier(max_iter=5, batch_size=32).fit(X, y)
    c = LVQMLNClassifier(max_iter=5, batch_size=32, random_seed=7).fit(X, y)
    np.testing.assert_array_equal(a.prototypes_, b.prototypes_)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)
    assert not np.array_equal(a.prototypes_, c.prototypes_)


def test_string_and_noncontiguous_labels(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    est = LVQMLNClassifier(
        max_iter=60,
        lr=0.05,
        n_prototypes_per_class={"setosa": 1, "versicolor": 2, "virginica": 1},
        class_weight={"virginica": 2.0},
    ).fit(X, names)
    np.testing.assert_array_equal(est.classes_, ["setosa", "versicolor", "virginica"])
    np.testing.assert_array_equal(
        est.prototype_labels_, ["setosa", "versicolor", "versicolor", "virginica"]
    )
    pred = est.predict(X)
    assert pred.dtype == names.dtype and set(pred) <= set(names)
    assert est.score(X, names) > 0.8

    codes = np.array([3, 10, 42])[y]
    est = LVQMLNClassifier(max_iter=60, lr=0.05).fit(X, codes)
    np.testing.assert_array_equal(est.classes_, [3, 10, 42])
    assert set(est.predict(X)) <= {3, 10, 42}
    assert est.score(X, codes) > 0.8


def test_validation_data_populates_val_history(iris):
    X, y = iris
    est = LVQMLNClassifier(max_iter=8, epsilon=None).fit(X, y, validation_data=(X[::3], y[::3]))
    assert est.n_iter_ == 8
    assert est.val_loss_history_.shape == (8,)
    assert np.all(np.isfinite(est.val_loss_history_))
    assert est.best_loss_ == est.val_loss_history_.min()
    # The last validation loss is the loss of the fitted model on the validation data.
    model = est.model_
    with torch.no_grad():
        d = model.distances(model(torch.as_tensor(X[::3])))
        loss = F.glvq_loss(d, torch.as_tensor(y[::3]), model.prototype_labels)
    assert est.val_loss_history_[-1] == pytest.approx(float(loss), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="not among the training classes"):
        LVQMLNClassifier(max_iter=2).fit(X, y, validation_data=(X[:3], [0, 1, 7]))
    with pytest.raises(ValueError, match="features"):
        LVQMLNClassifier(max_iter=2).fit(X, y, validation_data=(X[:3, :2], y[:3]))


# ---------------------------------------------------------------------------- seed parameters
def test_max_iter_epsilon_and_full_batch_steps(iris):
    X, y = iris
    est = LVQMLNClassifier(max_iter=7, epsilon=None).fit(X, y)
    assert est.n_iter_ == 7
    # Huge epsilon: upstream's rule stops at the second epoch (|loss_1 - loss_0| < epsilon).
    est = LVQMLNClassifier(max_iter=50, epsilon=10.0).fit(X, y)
    assert est.n_iter_ == 2


def test_patience_and_restore_best_on_validation_loss(iris):
    X, y = iris
    X_val, y_val = X[1::2], y[1::2]
    # A large learning rate with SGD mini-batches makes the validation loss bump around.
    kwargs = dict(max_iter=40, lr=0.5, batch_size=16, epsilon=0.0, optimizer="sgd")
    est = LVQMLNClassifier(patience=2, restore_best=True, **kwargs).fit(
        X, y, validation_data=(X_val, y_val)
    )
    history = est.val_loss_history_
    best = int(history.argmin())
    # Standard early stopping: stop `patience` epochs after the best one (or at max_iter).
    assert est.n_iter_ == min(best + 3, 40)
    model = est.model_
    with torch.no_grad():
        d = model.distances(model(torch.as_tensor(X_val)))
        loss = float(F.glvq_loss(d, torch.as_tensor(y_val), model.prototype_labels))
    assert loss == pytest.approx(est.best_loss_, rel=1e-5, abs=1e-6)  # the restored weights


def test_with_patience_epsilon_is_the_minimum_improvement(iris):
    X, y = iris
    # No epoch improves by more than 10: early stopping fires after `patience` epochs, and the
    # epsilon convergence rule (which would stop at epoch 2) is not active.
    est = LVQMLNClassifier(max_iter=50, patience=3, epsilon=10.0).fit(X, y)
    assert est.n_iter_ == 4


def test_restore_best_without_validation_uses_train_loss(iris):
    X, y = iris
    est = LVQMLNClassifier(max_iter=15, lr=0.5, restore_best=True, epsilon=None).fit(X, y)
    assert est.best_loss_ == est.loss_history_.min()


def test_freeze_params_keeps_tensors_bit_identical(iris):
    X, y = iris
    init = LVQMLN(in_features=4, n_classes=3, seed=42)  # same seed: same initial backbone
    est = LVQMLNClassifier(max_iter=5, freeze_params=["backbone"]).fit(X, y)
    for name, value in init.backbone.state_dict().items():
        assert torch.equal(est.model_.backbone.state_dict()[name], value), name
    one = LVQMLNClassifier(max_iter=1, freeze_params=["prototypes"], epsilon=None).fit(X, y)
    five = LVQMLNClassifier(max_iter=5, freeze_params=["prototypes"], epsilon=None).fit(X, y)
    np.testing.assert_array_equal(one.prototypes_, five.prototypes_)
    assert not np.array_equal(one.transform(X), five.transform(X))  # the backbone trained
    with pytest.raises(ValueError, match="nothing to train"):
        LVQMLNClassifier(max_iter=1, freeze_params=["backbone", "prototypes"]).fit(X, y)


def test_class_weight_equals_sample_weight(iris):
    X, y = iris
    weights = {0: 2.0, 1: 1.0, 2: 0.5}
    a = LVQMLNClassifier(max_iter=5, class_weight=weights).fit(X, y)
    b = LVQMLNClassifier(max_iter=5).fit(X, y, sample_weight=np.vectorize(weights.get)(y))
    c = LVQMLNClassifier(max_iter=5).fit(X, y)
    np.testing.assert_allclose(a.prototypes_, b.prototypes_, rtol=1e-6, atol=1e-7)
    assert not np.allclose(a.prototypes_, c.prototypes_, rtol=1e-6, atol=1e-7)
    # 'balanced' on imbalanced data gives each class the same total weight.
    keep = np.r_[0:50, 50:60, 100:150]
    bal = LVQMLNClassifier(max_iter=5, class_weight="balanced").fit(X[keep], y[keep])
    counts = np.bincount(y[keep])
    manual = LVQMLNClassifier(max_iter=5).fit(
        X[keep], y[keep], sample_weight=(len(keep) / (3 * counts))[y[keep]]
    )
    np.testing.assert_allclose(bal.prototypes_, manual.prototypes_, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="balanced"):
        LVQMLNClassifier(class_weight="auto").fit(X, y)


def test_gradient_accumulation_needs_mini_batches(iris):
    X, y = iris
    acc = LVQMLNClassifier(
        max_iter=3, batch_size=30, gradient_accumulation_steps=5, epsilon=None
    ).fit(X, y)
    plain = LVQMLNClassifier(max_iter=3, batch_size=30, epsilon=None).fit(X, y)
    assert acc.n_iter_ == 3
    assert not np.allclose(acc.prototypes_, plain.prototypes_)
    # Accumulating all 5 batches of an epoch with the mean loss of each batch = one full-batch
    # step on the mean of the batch losses; with equal batch sizes that is the full-batch loss.
    full = LVQMLNClassifier(max_iter=3, epsilon=None).fit(X, y)
    np.testing.assert_allclose(acc.prototypes_, full.prototypes_, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mini-batches"):
        LVQMLNClassifier(gradient_accumulation_steps=2).fit(X, y)


def test_ema_and_lookahead_change_the_result(iris):
    X, y = iris
    base = LVQMLNClassifier(max_iter=6, epsilon=None).fit(X, y)
    ema = LVQMLNClassifier(max_iter=6, epsilon=None, ema_decay=0.5).fit(X, y)
    look = LVQMLNClassifier(max_iter=6, epsilon=None, lookahead={"sync_period": 3}).fit(X, y)
    assert not np.allclose(ema.prototypes_, base.prototypes_)
    assert not np.allclose(look.prototypes_, base.prototypes_)
    # Lookahead with slow_step_size=1 is the plain optimizer.
    same = LVQMLNClassifier(
        max_iter=6, epsilon=None, lookahead={"sync_period": 2, "slow_step_size": 1.0}
    ).fit(X, y)
    np.testing.assert_allclose(same.prototypes_, base.prototypes_, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="sync_period, slow_step_size"):
        LVQMLNClassifier(lookahead={"period": 2}).fit(X, y)
    with pytest.raises(ValueError, match="ema_decay"):
        LVQMLNClassifier(ema_decay=1.5).fit(X, y)


def test_lr_scheduler_bb_lr_optimizer_and_transfer(iris):
    X, y = iris
    base = LVQMLNClassifier(max_iter=5, epsilon=None).fit(X, y)
    variants = [
        dict(lr_scheduler="exponential_decay", lr_scheduler_kwargs={"decay_rate": 0.5}),
        dict(lr_scheduler="cosine_decay"),
        dict(bb_lr=0.1),
        dict(optimizer="sgd", lr=0.5),
        dict(optimizer=torch.optim.RMSprop),
        dict(transfer_fn="sigmoid_beta", beta=5.0),
        dict(transfer_fn=lambda x, beta: torch.tanh(beta * x), beta=2.0),
        dict(
            n_prototypes_per_class=2,
            prototypes_initializer="stratified_noise",
            prototypes_initializer_kwargs={"noise_std": 0.05},
        ),
        dict(hidden_sizes=[6, 5], latent_dim=3, activation="tanh", latent_activation=False),
        dict(batch_size=40),
    ]
    for kwargs in variants:
        est = LVQMLNClassifier(max_iter=5, epsilon=None, **kwargs).fit(X, y)
        assert np.all(np.isfinite(est.loss_history_)), kwargs
        if est.prototypes_.shape == base.prototypes_.shape:
            assert not np.allclose(est.prototypes_, base.prototypes_), kwargs
    # margin shifts μ: a constant offset of the identity loss, a new gradient under a sigmoid.
    shifted = LVQMLNClassifier(max_iter=5, epsilon=None, margin=0.3).fit(X, y)
    np.testing.assert_allclose(shifted.loss_history_, base.loss_history_ + 0.3, rtol=1e-5)
    sig = LVQMLNClassifier(max_iter=5, epsilon=None, transfer_fn="sigmoid_beta").fit(X, y)
    sig_m = LVQMLNClassifier(max_iter=5, epsilon=None, transfer_fn="sigmoid_beta", margin=0.3).fit(
        X, y
    )
    assert not np.allclose(sig.prototypes_, sig_m.prototypes_)

    # prosemble's own transfer functions (JAX) are taken by name, never called.
    def upstream_sigmoid_beta(x, beta=10.0):
        raise AssertionError("a prosemble transfer must not be called on tensors")

    upstream_sigmoid_beta.__module__ = "prosemble.core.activations"
    upstream_sigmoid_beta.__name__ = "sigmoid_beta"
    drop_in = LVQMLNClassifier(max_iter=5, epsilon=None, transfer_fn=upstream_sigmoid_beta)
    np.testing.assert_array_equal(drop_in.fit(X, y).prototypes_, sig.prototypes_)
    with pytest.raises(ValueError, match="decay_steps"):  # warmup 10 > the 5 steps of the run
        LVQMLNClassifier(max_iter=5, lr_scheduler="warmup_cosine_decay").fit(X, y)
    est = LVQMLNClassifier(max_iter=5, n_prototypes_per_class=2, latent_dim=3).fit(X, y)
    assert est.prototypes_.shape == (6, 3)
    np.testing.assert_array_equal(est.prototype_labels_, [0, 0, 1, 1, 2, 2])


def test_mixed_precision_bfloat16(iris):
    X, y = iris
    est = LVQMLNClassifier(max_iter=100, lr=0.05, mixed_precision="bfloat16").fit(X, y)
    assert est.model_.prototypes.dtype == torch.float32  # master weights stay float32
    assert est.score(X, y) > 0.85
    assert est.predict_proba(X).dtype == np.float32
    with pytest.raises(ValueError, match="set only one"):
        LVQMLNClassifier(mixed_precision="bfloat16", precision="32-true").fit(X, y)


def test_cnn_backbone_on_images():
    X, y = _images()
    est = LVQMLNClassifier(
        backbone="cnn", channels=[4], kernel_sizes=[3], activation="relu", max_iter=30, lr=0.05
    ).fit(X, y)
    assert est.input_shape_ == (1, 6, 6)
    assert est.predict(X).shape == (24,)
    assert est.transform(X).shape == (24, 2)
    assert est.score(X, y) > 0.7
    with pytest.raises(ValueError, match=r"\(1, 6, 6\)"):
        est.predict(np.zeros((2, 1, 5, 6), np.float32))
    with pytest.raises(ValueError, match="backbone='cnn'"):
        LVQMLNClassifier().fit(X, y)
    with pytest.raises(ValueError, match="4-D images"):
        LVQMLNClassifier(backbone="cnn").fit(X.reshape(24, -1), y)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(optimizer="adamx"), "Valid optimizers"),
        (dict(lr_scheduler="cosine"), "cosine_decay"),
        (dict(mixed_precision="fp16"), "bfloat16, float16 or None"),
        (dict(freeze_params=["head"]), "Valid entries: backbone, prototypes"),
        (dict(max_iter=0), "max_iter must be an integer >= 1"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(patience=0), "patience"),
        (dict(devices=2), "one device"),
        (dict(lookahead={"sync_period": 0}), "sync_period"),
    ],
)
def test_invalid_parameters_name_the_valid_choices(iris, params, match):
    X, y = iris
    with pytest.raises(ValueError, match=match):
        LVQMLNClassifier(**{"max_iter": 1, **params}).fit(X, y)


def test_invalid_data(iris):
    X, y = iris
    est = LVQMLNClassifier(max_iter=1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        est.fit(X, np.zeros(150, int))
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        est.fit(X.reshape(150, 2, 2), y)
    with pytest.raises(ValueError, match="Unknown label type"):
        est.fit(X, np.linspace(0, 1, 150))
    with pytest.raises(ValueError, match="non-negative"):
        est.fit(X, y, sample_weight=-np.ones(150))


# ---------------------------------------------------------------------------- sklearn tools
def test_clone_pipeline_gridsearch_cross_val(iris):
    X, y = load_iris(return_X_y=True)
    est = LVQMLNClassifier(max_iter=30, lr=0.05, hidden_sizes=[8], class_weight={0: 1.0})
    copy = clone(est)
    assert copy.get_params() == est.get_params() and copy is not est
    assert not hasattr(copy, "model_")

    pipe = make_pipeline(StandardScaler(), clone(est)).fit(X, y)
    assert pipe.score(X, y) > 0.8

    search = GridSearchCV(
        make_pipeline(StandardScaler(), clone(est)),
        {"lvqmlnclassifier__latent_dim": [2, 3]},
        cv=2,
    ).fit(X, y)
    assert search.best_params_["lvqmlnclassifier__latent_dim"] in (2, 3)
    assert (
        search.best_estimator_[-1].prototypes_.shape[1]
        == search.best_params_["lvqmlnclassifier__latent_dim"]
    )
    scores = cross_val_score(make_pipeline(StandardScaler(), clone(est)), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.7


def test_set_params_round_trip():
    est = LVQMLNClassifier()
    est.set_params(lr=0.1, freeze_params=["backbone"], lookahead={"sync_period": 3})
    assert est.get_params()["lr"] == 0.1
    assert est.get_params()["freeze_params"] == ["backbone"]
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(learning_rate=0.1)


def test_pickle_round_trip(fitted, iris):
    X, _ = iris
    copy = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(copy.predict_proba(X), fitted.predict_proba(X))


# ---------------------------------------------------------------------------- output hygiene
def test_quiet_fit_prints_and_writes_nothing(iris, capfd, tmp_path, monkeypatch):
    X, y = iris
    monkeypatch.chdir(tmp_path)
    levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "lightning.fabric")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LVQMLNClassifier(max_iter=3, batch_size=50, patience=2).fit(
            X, y, validation_data=(X[:20], y[:20])
        )
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [str(w.message) for w in caught] == []
    assert os.listdir(tmp_path) == []  # no lightning_logs/, no checkpoints
    assert {n: logging.getLogger(n).level for n in levels} == levels  # restored


def test_verbose_fit_shows_the_progress_bar(iris, capfd):
    X, y = iris
    LVQMLNClassifier(max_iter=2, verbose=True, engine="lightning").fit(X, y)
    out, err = capfd.readouterr()
    assert "Epoch 1" in out + err


def test_verbose_numpy_fit_prints_the_losses(iris, capfd):
    X, y = iris
    LVQMLNClassifier(max_iter=20, epsilon=None, verbose=True, engine="numpy").fit(X, y)
    out, _ = capfd.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 10 and lines[-1].startswith("epoch 20/20: train_loss ")


# ---------------------------------------------------------------------------- save / load
def test_save_load_round_trip(iris, tmp_path):
    X, y = iris
    names = np.array(["a", "b", "c"])[y]
    est = LVQMLNClassifier(
        max_iter=10, n_prototypes_per_class=2, optimizer=torch.optim.SGD, lr=0.3
    ).fit(X, names, validation_data=(X[:30], names[:30]))
    path = tmp_path / "model.pt"
    est.save(path)
    assert os.listdir(tmp_path) == ["model.pt"]
    loaded = LVQMLNClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))
    np.testing.assert_array_equal(loaded.prototypes_, est.prototypes_)
    np.testing.assert_array_equal(loaded.prototype_labels_, est.prototype_labels_)
    assert loaded.classes_.dtype == est.classes_.dtype
    for name in ("n_iter_", "loss_", "best_loss_", "n_features_in_", "n_classes_"):
        assert getattr(loaded, name) == getattr(est, name), name
    np.testing.assert_array_equal(loaded.loss_history_, est.loss_history_)
    np.testing.assert_array_equal(loaded.val_loss_history_, est.val_loss_history_)
    params = est.get_params()
    params["optimizer"] = "torch.optim.sgd.SGD"  # classes are stored by dotted path
    assert loaded.get_params() == params
    # The file holds only primitives and tensors.
    torch.load(path, weights_only=True)
    # A loaded estimator refits like a fresh one.
    assert loaded.fit(X, names).n_iter_ >= 1


def test_save_load_cnn(tmp_path):
    X, y = _images()
    est = LVQMLNClassifier(backbone="cnn", channels=[3], kernel_sizes=[3], max_iter=3).fit(X, y)
    est.save(tmp_path / "cnn.pt")
    loaded = LVQMLNClassifier.load(tmp_path / "cnn.pt")
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    assert loaded.input_shape_ == (1, 6, 6)


def test_save_refuses_callables_and_is_atomic(iris, tmp_path, monkeypatch):
    X, y = iris
    est = LVQMLNClassifier(max_iter=2, transfer_fn=lambda x, beta: x).fit(X, y)
    with pytest.raises(ValueError, match="transfer_fn"):
        est.save(tmp_path / "m.pt")
    assert os.listdir(tmp_path) == []

    est = LVQMLNClassifier(max_iter=2).fit(X, y)
    target = tmp_path / "m.pt"
    target.write_bytes(b"previous content")

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        est.save(target)
    assert target.read_bytes() == b"previous content"  # untouched
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_load_rejects_corrupt_truncated_and_foreign_files(iris, tmp_path):
    X, y = iris
    path = tmp_path / "m.pt"
    LVQMLNClassifier(max_iter=2).fit(X, y).save(path)
    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a model at all")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    for name in ("truncated.pt", "garbage.pt", "foreign.pt", "tensor.pt"):
        with pytest.raises(ValueError, match="LVQMLNClassifier"):
            LVQMLNClassifier.load(tmp_path / name)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"].pop("prototypes")
    torch.save(payload, tmp_path / "inconsistent.pt")
    with pytest.raises(ValueError, match="damaged or inconsistent"):
        LVQMLNClassifier.load(tmp_path / "inconsistent.pt")
    with pytest.raises(FileNotFoundError):
        LVQMLNClassifier.load(tmp_path / "missing.pt")


def test_plot_latent_writes_a_png(fitted, iris, tmp_path):
    X, y = iris
    path = tmp_path / "latent.png"
    figure = fitted.plot_latent(X, y, path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure is not None


def test_double_precision_trains_and_predicts_in_float64():
    X, y = load_iris(return_X_y=True)  # float64 inputs stay float64
    est = LVQMLNClassifier(max_iter=3, precision="64-true").fit(X, y)
    assert est.prototypes_.dtype == np.float64
    z = est.transform(X)
    assert z.dtype == np.float64
    reference = X
    for layer in est.model_.backbone.layers:
        w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
        reference = 1.0 / (1.0 + np.exp(-(reference @ w.T + b)))
    np.testing.assert_allclose(z, reference, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="set only one"):
        LVQMLNClassifier(mixed_precision="float16", precision="64-true").fit(X, y)
