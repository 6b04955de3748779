"""The LVQMLN LightningModule: labels of any sortable type, the inference API, predict_step,
checkpoints that load with ``weights_only=True``, explicit prototypes, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _numerics import assert_winners_agree, near_ties
from _trainers import quiet_trainer
from sklearn.exceptions import NotFittedError
from torch.utils.data import DataLoader, TensorDataset

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch import functional as F

_trainer = quiet_trainer


def _loader(x, y, batch_size=50):
    """A plain (non-datamodule) DataLoader."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def _iris(label_map=None):
    X, y = load_builtin("iris")
    if label_map is not None:
        y = np.asarray(label_map)[y]
    return X, y


def _fit(label_map, epochs=200, **model_kw):
    X, y = _iris(label_map)
    dm = ArrayDataModule(X, y, test_size=0.3, seed=0, standardize=True)
    model = LVQMLN(seed=0, **model_kw)
    trainer = _trainer(max_epochs=epochs)
    trainer.fit(model, dm)
    return model, dm, trainer


@pytest.fixture(scope="module")
def string_fit():
    return _fit(["setosa", "versicolor", "virginica"], n_prototypes_per_class=2)


@pytest.fixture(scope="module")
def sparse_int_fit():
    return _fit([50, 10, 20])  # non-contiguous, and not in sorted order


def _test_arrays(dm, label_map):
    x_test, y_idx = dm._tensors["test"][:2]
    return x_test, np.asarray(dm.classes_)[y_idx.numpy()]


@pytest.mark.numerics
def test_string_labels_train_and_predict_the_original_labels(string_fit):
    model, dm, trainer = string_fit
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert model.hparams.classes == ["setosa", "versicolor", "virginica"]
    x_test, y_test = _test_arrays(dm, None)
    predictions = model.predict(x_test)
    assert predictions.dtype.kind == "U"
    assert set(predictions) <= {"setosa", "versicolor", "virginica"}
    assert np.mean(predictions == y_test) >= 0.9
    (metrics,) = trainer.test(model, dm, verbose=False)
    # Trainer.test runs in batches: only rows on a near tie may be decided otherwise.
    with torch.no_grad():
        d = F.squared_euclidean_distance(model.transform(x_test), model.prototypes)
    slack = near_ties(d, model.prototype_labels).mean() + 1e-6
    assert metrics["test_acc"] == pytest.approx(np.mean(predictions == y_test), abs=slack)


def test_non_contiguous_integer_labels(sparse_int_fit):
    model, dm, _ = sparse_int_fit
    assert model.classes_.tolist() == [10, 20, 50]
    x_test, y_test = _test_arrays(dm, None)
    predictions = model.predict(x_test)
    assert set(predictions.tolist()) <= {10, 20, 50}
    assert np.mean(predictions == y_test) >= 0.9
    # Iris class 0 (setosa, perfectly separable) was labelled 50 here.
    X, _ = _iris()
    assert (model.predict(dm.transform_inputs(X[:50])) == 50).all()


def test_predict_proba_columns_follow_classes_and_rows_sum_to_one(string_fit):
    model, dm, _ = string_fit
    x_test, _ = _test_arrays(dm, None)
    proba = model.predict_proba(x_test)
    assert proba.shape == (len(x_test), 3)
    torch.testing.assert_close(proba.sum(dim=1), torch.ones(len(x_test)))
    assert (proba >= 0).all()
    # Column j belongs to classes_[j]: the argmax column names the predicted label ...
    np.testing.assert_array_equal(
        model.classes_[proba.argmax(dim=1).numpy()], model.predict(x_test)
    )
    # ... and the values are the softmax of -(per-class minimum squared distance).
    with torch.no_grad():
        d = F.squared_euclidean_distance(model.backbone(x_test), model.prototypes)
    labels = model.prototype_labels
    per_class = torch.stack([d[:, labels == c].min(dim=1).values for c in range(3)], dim=1)
    torch.testing.assert_close(proba, torch.softmax(-per_class, dim=1))


def test_transform_and_forward_give_latent_codes(string_fit):
    model, dm, _ = string_fit
    x_test, _ = _test_arrays(dm, None)
    z = model.transform(x_test)
    assert z.shape == (len(x_test), 2)
    # Sigmoid latent activation: codes lie in (0, 1).
    assert (z > 0).all() and (z < 1).all()
    with torch.no_grad():
        torch.testing.assert_close(model(x_test), z)
    # numpy input works too.
    torch.testing.assert_close(model.transform(x_test.numpy()), z)


@pytest.mark.numerics
def test_predict_indices_are_nearest_prototype_labels(sparse_int_fit):
    model, dm, _ = sparse_int_fit
    x_test, _ = _test_arrays(dm, None)
    indices = model.predict_indices(x_test)
    with torch.no_grad():
        d = F.squared_euclidean_distance(model.backbone(x_test), model.prototypes)
    assert torch.equal(indices, model.prototype_labels[d.argmin(dim=1)])
    np.testing.assert_array_equal(model.predict(x_test), model.classes_[indices.numpy()])


@pytest.mark.numerics
def test_predict_step_through_trainer_predict(string_fit):
    model, dm, _ = string_fit
    outputs = _trainer().predict(model, dm)
    labels = torch.cat([o["labels"] for o in outputs])
    probabilities = torch.cat([o["probabilities"] for o in outputs])
    latent = torch.cat([o["latent"] for o in outputs])
    x_test = dm._tensors["test"][0]
    # Trainer.predict runs in batches, predict_indices in one chunk: rounding differs.
    with torch.no_grad():
        d = F.squared_euclidean_distance(model.transform(x_test), model.prototypes)
    assert_winners_agree(labels, d, model.prototype_labels)
    torch.testing.assert_close(probabilities, model.predict_proba(x_test))
    torch.testing.assert_close(latent, model.transform(x_test))


def test_inference_leaves_train_mode_untouched(string_fit):
    model, dm, _ = string_fit
    model.train()
    model.predict(dm._tensors["test"][0])
    assert model.training
    model.eval()
    model.predict(dm._tensors["test"][0])
    assert not model.training


def test_cnn_wrong_image_shape_at_predict():
    X, y = load_builtin("digits", as_images=True)
    dm = ArrayDataModule(X[:60], y[:60])
    model = LVQMLN(backbone="cnn", channels=[4], kernel_sizes=[3], latent_dim=3)
    _trainer(max_epochs=1).fit(model, dm)
    assert model.hparams.input_shape == [1, 8, 8]
    assert model.predict(X[:4]).shape == (4,)
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 1, 8, 8\)"):
        model.predict(np.zeros((2, 1, 7, 8)))


def test_predict_before_fit_raises_not_fitted():
    model = LVQMLN()
    with pytest.raises(NotFittedError, match="fit"):
        model.predict(np.zeros((2, 4)))
    # As in scikit-learn, an unfitted model has no classes_ attribute.
    assert not hasattr(model, "classes_")
    built = LVQMLN(in_features=4, n_classes=3)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        built.predict_proba(np.zeros((2, 4)))
    with pytest.raises(NotFittedError):
        built.transform(np.zeros((2, 4)))


def test_sizes_are_read_from_the_datamodule_into_hparams(sparse_int_fit):
    model, _, _ = sparse_int_fit
    assert model.hparams.in_features == 4
    assert model.hparams.n_classes == 3
    assert model.hparams.classes == [10, 20, 50]


def test_checkpoint_loads_with_weights_only_and_predicts_identically(string_fit, tmp_path):
    model, dm, trainer = string_fit
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw["hyper_parameters"]["classes"] == ["setosa", "versicolor", "virginica"]
    loaded = LVQMLN.load_from_checkpoint(path, weights_only=True)
    x_test = dm._tensors["test"][0]
    np.testing.assert_array_equal(loaded.predict(x_test), model.predict(x_test))
    assert torch.equal(loaded.predict_proba(x_test), model.predict_proba(x_test))
    assert torch.equal(loaded.transform(x_test), model.transform(x_test))
    assert list(loaded.classes_) == list(model.classes_)


def test_checkpoint_with_a_class_optimizer_loads_with_weights_only(tmp_path):
    X, y = _iris()
    model = LVQMLN(optimizer=torch.optim.RMSprop, lr_scheduler="cosine_decay")
    trainer = _trainer(max_epochs=2)
    trainer.fit(model, ArrayDataModule(X, y))
    assert model.hparams.optimizer == "torch.optim.rmsprop.RMSprop"
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    torch.load(tmp_path / "m.ckpt", weights_only=True)
    loaded = LVQMLN.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert torch.equal(loaded.prototypes, model.prototypes)


def test_checkpoint_of_another_configuration_is_rejected(string_fit, tmp_path):
    _, _, trainer = string_fit
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        LVQMLN.load_from_checkpoint(path, weights_only=True, latent_dim=3)


def test_explicit_initial_prototypes_are_the_starting_point():
    X, y = _iris()
    dm = ArrayDataModule(X, y, standardize=True)
    start = [[0.1, 0.2], [0.5, 0.5], [0.9, 0.8], [0.3, 0.7]]
    model = LVQMLN(initial_prototypes=start, initial_prototype_labels=[0, 1, 2, 2])
    _trainer(max_epochs=0).fit(model, dm)
    assert model.hparams.n_classes == 3
    assert torch.equal(model.prototypes.detach(), torch.tensor(start))
    assert model.prototype_labels.tolist() == [0, 1, 2, 2]
    _trainer(max_epochs=50).fit(model, dm)
    assert not torch.equal(model.prototypes.detach(), torch.tensor(start))
    assert np.mean(model.predict(dm.train_tensors()[0]) == dm.classes_[dm.train_tensors()[1]]) > 0.8


def test_custom_backbone_module():
    X, y = _iris()
    backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    model = LVQMLN(backbone=backbone, latent_dim=3, n_classes=3, lr=0.05)
    assert model.hparams.backbone == "custom"
    dm = ArrayDataModule(X, y, standardize=True)
    _trainer(max_epochs=100).fit(model, dm)
    assert model.transform(dm.train_tensors()[0]).shape == (150, 3)
    accuracy = np.mean(model.predict(dm.train_tensors()[0]) == y)
    assert accuracy > 0.9


def test_plain_dataloader_with_known_sizes_initialises_from_the_batches():
    X, y = _iris()
    x = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    loader = _loader(x, torch.tensor(y))
    model = LVQMLN(in_features=4, n_classes=3, lr=0.05)
    _trainer(max_epochs=60).fit(model, loader)
    assert np.mean(model.predict(x) == y) > 0.85


def test_plain_dataloaders_give_the_input_size_as_a_datamodule_does():
    """``trainer.fit(model, train_loader[, val_loader])`` reads ``in_features`` (MLP) or
    ``input_shape`` (CNN) from the first training batch, as for a DataModule."""
    X, y = _iris()
    x = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    model = LVQMLN(n_classes=3, lr=0.05)
    trainer = _trainer(max_epochs=60)
    trainer.fit(model, _loader(x, torch.tensor(y)), _loader(x[::3], torch.tensor(y[::3])))
    assert model.hparams.in_features == 4
    assert "val_acc" in trainer.callback_metrics
    assert np.mean(model.predict(x) == y) > 0.85

    images, labels = load_builtin("digits", as_images=True)
    images = torch.tensor(images[:200], dtype=torch.float32)
    cnn = LVQMLN(backbone="cnn", n_classes=10, latent_dim=10)
    _trainer(max_epochs=1).fit(cnn, train_dataloaders=_loader(images, torch.tensor(labels[:200])))
    assert cnn.hparams.input_shape == [1, 8, 8]
    assert cnn.predict(images).shape == (200,)


def test_plain_dataloader_still_needs_n_classes():
    X, y = _iris()
    with pytest.raises(ValueError, match="LVQMLN needs the number of classes"):
        _trainer(max_epochs=1).fit(LVQMLN(), _loader(torch.tensor(X), torch.tensor(y)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"lr_scheduler": "cosine_decay", "lr_scheduler_kwargs": {"gamma": 1}},
            "unknown lr_scheduler_kwargs",
        ),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"bb_lr": -1.0}, "bb_lr must be a positive number"),
        ({"freeze": ["head"]}, "Unknown freeze entries \\['head'\\]. Valid entries"),
        ({"ema_decay": 1.0}, "ema_decay must be a number in \\(0, 1\\)"),
        ({"initial_prototypes": [[0.0, 0.0, 0.0]]}, "shape \\(P, latent_dim=2\\)"),
        ({"initial_prototypes": [[0.0, 0.0]]}, "needs initial_prototype_labels"),
        ({"initial_prototype_labels": [0]}, "needs initial_prototypes"),
        (
            {
                "in_features": 4,
                "initial_prototypes": [[0.0, 0.0], [1.0, 1.0]],
                "initial_prototype_labels": [0, 0],
            },
            "at least 2 classes",
        ),
        ({"in_features": 4, "n_classes": 3, "classes": ["a", "b"]}, "classes has 2 entries"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LVQMLN(**kwargs)


def test_metrics_are_logged_per_epoch():
    X, y = _iris()
    dm = ArrayDataModule(X, y, val_size=0.2, test_size=0.2, standardize=True)
    model = LVQMLN()
    trainer = _trainer(max_epochs=3)
    trainer.fit(model, dm)
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(trainer.callback_metrics)
    (test,) = trainer.test(model, dm, verbose=False)
    assert set(test) == {"test_loss", "test_acc"}
    assert -1.0 <= test["test_loss"] <= 1.0 and 0.0 <= test["test_acc"] <= 1.0
