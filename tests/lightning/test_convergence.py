"""Convergence with real thresholds on held-out stratified splits (issue 3): iris, digits with
the MLP backbone, digits images with the CNN backbone."""

from __future__ import annotations

import pytest
import torch
from _trainers import quiet_trainer

from lvqmln_torch import LVQMLN, BuiltinDataModule


def _fit_and_test(model, dm, **trainer_kw):
    trainer = quiet_trainer(**trainer_kw)
    trainer.fit(model, dm)
    (metrics,) = trainer.test(model, dm, verbose=False)
    return metrics


def _check_split(dm, n_classes):
    """The test split is held out and stratified: every class is present in proportion."""
    train_y, test_y = dm.train_tensors()[1], dm._tensors["test"][1]
    train_share = torch.bincount(train_y, minlength=n_classes) / len(train_y)
    test_share = torch.bincount(test_y, minlength=n_classes) / len(test_y)
    assert (test_share - train_share).abs().max() < 0.02


def test_iris_full_batch_300_epochs():
    dm = BuiltinDataModule("iris", test_size=0.3, seed=0, standardize=True, batch_size=None)
    _check_split(dm, 3)
    model = LVQMLN(seed=0)  # defaults: hidden [10], latent 2, sigmoid, adam, lr 0.01
    metrics = _fit_and_test(model, dm, max_epochs=300)
    assert metrics["test_acc"] >= 0.93
    # The metric agrees with the inference API on the same held-out data.
    x_test, y_test = dm._tensors["test"][:2]
    assert (model.predict_indices(x_test) == y_test).float().mean().item() == pytest.approx(
        metrics["test_acc"], abs=1e-6
    )


def test_digits_mlp():
    dm = BuiltinDataModule("digits", test_size=0.25, seed=0, standardize=True, batch_size=64)
    _check_split(dm, 10)
    model = LVQMLN(hidden_sizes=[64], latent_dim=10, seed=0)
    metrics = _fit_and_test(model, dm, max_epochs=12)
    assert metrics["test_acc"] >= 0.95


def test_digits_cnn():
    # The CNN's defaults: its bounded latent (tanh) keeps the codes from escaping far from the
    # prototypes, where every sample is equidistant to all of them and the GLVQ loss is flat;
    # with relu latent codes the run stalls there at chance level.
    dm = BuiltinDataModule(
        "digits", as_images=True, test_size=0.25, seed=0, standardize=True, batch_size=32
    )
    _check_split(dm, 10)
    model = LVQMLN(backbone="cnn", latent_dim=10, seed=0)
    metrics = _fit_and_test(model, dm, max_epochs=15)
    assert metrics["test_acc"] >= 0.95


def _digits_28x28(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits upsampled to MNIST's 28×28 (bilinear), pixels in [0, 1]: the CNN's head then
    sees 32 × 14 × 14 = 6,272 features, as on MNIST (issue 19)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:n, None] / 16, dtype=torch.float32)
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x, torch.tensor(digits.target[:n])


def test_cnn_defaults_converge_on_28x28_images():
    """The CNN's defaults learn 28×28 images in a few epochs, as on MNIST. With issue 13's
    CNN (convolutions at full resolution, one max-pool, a linear layer from 6,272 features
    to the tanh codes) and the former backbone step (0.3 · lr) Adam's first steps saturated
    98 % of the codes here and the test accuracy stayed at 0.39 (the MNIST failure of issue
    19, on small data); today's CNN at 0.1 · lr saturated 79 % (0.40), at its default
    0.05 · lr 19 % (0.70; docs/images.md)."""
    from lvqmln_torch import ArrayDataModule

    x, y = _digits_28x28(1400)
    dm = ArrayDataModule(x[:1000], y[:1000], X_test=x[1000:], y_test=y[1000:], batch_size=32)
    model = LVQMLN(backbone="cnn", latent_dim=10)
    metrics = _fit_and_test(model, dm, max_epochs=3)
    backbone = model.backbone
    assert backbone.pooled_hw == (7, 7) and backbone.dense[0].in_features == 64 * 7 * 7
    codes = model.transform(x[1000:])
    assert (codes.abs() > 0.95).float().mean() < 0.5  # saturated codes carry no gradient
    assert metrics["test_acc"] >= 0.6
