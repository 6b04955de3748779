"""Prototype projection: the estimator's ``project_prototypes`` on both engines and the
``PrototypeProjection`` callback, against brute force (the nearest same-class training sample
of each prototype of the same model before projecting)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, TensorDataset

from lvqmln_torch import LVQMLN, ArrayDataModule, LVQMLNClassifier
from lvqmln_torch.io.checkpoint import load_checkpoint
from lvqmln_torch.lightning.callbacks import PrototypeProjection, RestoreBest


def blobs(n: int = 120, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(scale=2.0, size=(3, 4))
    return centers[y] + rng.normal(size=(n, 4)), y + 10


X, Y = blobs()
SETTINGS = dict(max_iter=8, n_prototypes_per_class=2, precision="64-true", lr=0.05)


def nearest_same_class(est: LVQMLNClassifier, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = est.transform(X).astype(np.float64)
    d = ((z[:, None, :] - est.prototypes_[None]) ** 2).sum(-1)
    d[y[:, None] != est.prototype_labels_[None, :]] = np.inf
    return np.array([np.lexsort((np.arange(len(X)), d[:, p]))[0] for p in range(d.shape[1])])


def assert_projected(est: LVQMLNClassifier, X: np.ndarray, y: np.ndarray) -> None:
    sources = est.prototype_sources_
    assert sources.shape == (len(est.prototypes_),)
    np.testing.assert_array_equal(y[sources], est.prototype_labels_)  # same class
    np.testing.assert_allclose(est.prototypes_, est.transform(X)[sources], rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ["numpy", "lightning"])
def test_estimator_projects_onto_the_nearest_same_class_sample(engine):
    plain = LVQMLNClassifier(**SETTINGS, engine=engine).fit(X, Y)
    assert plain.prototype_sources_ is None
    projected = LVQMLNClassifier(**SETTINGS, engine=engine, project_prototypes=True).fit(X, Y)
    assert_projected(projected, X, Y)
    # Projection at the end: the same training, then the nearest same-class sample.
    np.testing.assert_array_equal(projected.prototype_sources_, nearest_same_class(plain, X, Y))
    # ... and a prototype now explains itself: its source sample sits on it.
    info = projected.explain(X[projected.prototype_sources_])
    np.testing.assert_allclose(info["distance"], 0, atol=1e-12)


def test_both_engines_choose_the_same_sources():
    a = LVQMLNClassifier(**SETTINGS, engine="numpy", project_prototypes=True).fit(X, Y)
    b = LVQMLNClassifier(**SETTINGS, engine="lightning", project_prototypes=True).fit(X, Y)
    np.testing.assert_array_equal(a.prototype_sources_, b.prototype_sources_)
    np.testing.assert_allclose(a.prototypes_, b.prototypes_, atol=1e-8)


def test_sources_survive_save_load_and_model_(tmp_path):
    est = LVQMLNClassifier(**SETTINGS, project_prototypes=True).fit(X, Y)
    est.save(tmp_path / "est.pt")
    loaded = LVQMLNClassifier.load(tmp_path / "est.pt")
    np.testing.assert_array_equal(loaded.prototype_sources_, est.prototype_sources_)
    assert torch.equal(est.model_.prototype_sources, torch.as_tensor(est.prototype_sources_))


def test_projection_with_frozen_prototypes_is_refused():
    with pytest.raises(ValueError, match="project_prototypes=True replaces the prototypes"):
        LVQMLNClassifier(project_prototypes=True, freeze_params=["prototypes"]).fit(X, Y)
    with pytest.raises(ValueError, match="project_prototypes must be True or False"):
        LVQMLNClassifier(project_prototypes="yes").fit(X, Y)
    with pytest.raises(ValueError, match="they are frozen"):
        quiet_trainer(max_epochs=1, callbacks=[PrototypeProjection()]).fit(
            LVQMLN(freeze=["prototypes"]), datamodule=ArrayDataModule(X, Y)
        )


class Before(Callback):
    """Records, before every projection, the brute-force nearest same-class training rows."""

    def __init__(self, X: np.ndarray, y_idx: np.ndarray) -> None:
        self.X, self.y, self.expected = X, y_idx, []

    def expect(self, module: LVQMLN) -> None:
        z = module.transform(self.X).double().numpy()
        w = module.prototypes.detach().double().numpy()
        d = ((z[:, None, :] - w[None]) ** 2).sum(-1)
        d[self.y[:, None] != module.prototype_labels.numpy()[None, :]] = np.inf
        self.expected.append(d.argmin(0))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.expect(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.expect(pl_module)


def test_callback_every_epoch_records_rows_of_the_original_arrays(tmp_path):
    data = ArrayDataModule(X, Y, val_size=0.25, seed=1, dtype=torch.float64)
    train_rows = data.train_index_
    y_idx = Y - 10
    before = Before(X[train_rows], y_idx[train_rows])
    projection = PrototypeProjection(every_n_epochs=2, at_end=True)
    model = LVQMLN(n_prototypes_per_class=2, lr=0.05, seed=1)
    trainer = quiet_trainer(
        max_epochs=4, precision="64-true", callbacks=[before, projection], default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=data)
    assert projection.projections == 3  # after epochs 2 and 4, and at the end
    # The last projection: rows of X, the nearest same-class training sample of each prototype.
    np.testing.assert_array_equal(model.prototype_sources.numpy(), train_rows[before.expected[-1]])
    sources = model.prototype_sources.numpy()
    np.testing.assert_array_equal(y_idx[sources], model.prototype_labels.numpy())
    torch.testing.assert_close(model.prototypes.detach(), model.transform(X[sources]))
    # ... kept in the checkpoint.
    trainer.save_checkpoint(tmp_path / "p.ckpt")
    loaded = load_checkpoint(tmp_path / "p.ckpt")
    assert torch.equal(loaded.prototype_sources, model.prototype_sources)


def test_callback_over_a_map_style_dataset_with_ema_and_restore_best():
    """A plain DataLoader's Dataset gives the indices; the fit ends on the projected EMA /
    best weights whatever the callbacks' order."""
    y_idx = torch.as_tensor(Y - 10)
    dataset = TensorDataset(torch.as_tensor(X), y_idx)
    for order in ("projection-first", "projection-last"):
        callbacks = [PrototypeProjection(), RestoreBest(monitor="train_loss")]
        if order == "projection-last":
            callbacks.reverse()
        model = LVQMLN(in_features=4, n_classes=3, n_prototypes_per_class=2, ema_decay=0.5)
        trainer = quiet_trainer(max_epochs=3, precision="64-true", callbacks=callbacks)
        trainer.fit(model, train_dataloaders=DataLoader(dataset, batch_size=32))
        sources = model.prototype_sources
        assert torch.equal(y_idx[sources], model.prototype_labels)
        torch.testing.assert_close(model.prototypes.detach(), model.transform(X[sources.numpy()]))


def test_callback_without_indexable_training_data_is_refused():
    class Stream:  # batches without a Dataset: no fixed sample index
        def __iter__(self):
            yield torch.as_tensor(X), torch.as_tensor(Y - 10)

        def __len__(self):
            return 1

    model = LVQMLN(in_features=4, n_classes=3)
    trainer = quiet_trainer(max_epochs=1, callbacks=[PrototypeProjection()])
    with pytest.raises(ValueError, match="needs the training samples by a fixed index"):
        trainer.fit(model, train_dataloaders=Stream())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_epochs": 0}, "every_n_epochs must be an integer >= 1"),
        ({"at_end": "no"}, "at_end must be True or False"),
        ({"at_end": False}, "never projects"),
    ],
)
def test_bad_callback_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrototypeProjection(**kwargs)


def test_projection_onto_data_without_a_class_is_refused():
    est = LVQMLNClassifier(**SETTINGS).fit(X, Y)
    keep = Y != 12
    with pytest.raises(
        ValueError, match=r"cannot project prototypes \[4, 5\] \(classes \[2, 2\]\)"
    ):
        est.network_.project_prototypes(X[keep], Y[keep] - 10)
