"""The certification API: module, estimator, options and their errors (issue 21)."""

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.datasets import load_iris
from torch import nn

from lvqmln_torch.data.datamodule import ArrayDataModule
from lvqmln_torch.lightning.model import LVQMLN
from lvqmln_torch.sklearn.estimator import LVQMLNClassifier


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), np.array(["setosa", "versicolor", "virginica"])[y]


class _NoBound(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


class _WithBound(_NoBound):
    def lipschitz_bound(self):
        return float(torch.linalg.matrix_norm(self.linear.weight.detach(), ord=2))


def test_custom_backbone_without_a_bound_cannot_certify_input_radii():
    model = LVQMLN(backbone=_NoBound(), n_classes=2, latent_dim=2)
    model.set_prototypes(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="no lipschitz_bound"):
        model.certify(torch.zeros(3, 4))
    # The latent radii need no bound.
    radius = model.certify_latent(torch.tensor([[0.0, 0.2]]))  # d = 0.04 and 1.64
    assert torch.allclose(radius, torch.tensor([1.6 / 8**0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        model.certify_latent(torch.zeros(3, 5))


def test_custom_backbone_with_a_bound_divides_the_latent_radius():
    backbone = _WithBound()
    model = LVQMLN(backbone=backbone, n_classes=2, latent_dim=2)
    model.set_prototypes(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 1]))
    x = torch.randn(5, 4)
    latent = model.certify_latent(model.transform(x))
    assert torch.allclose(model.certify(x), latent / backbone.lipschitz_bound())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lipschitz="bogus"), "Valid lipschitz controls: spectral, orthogonal"),
        (dict(robust_eps=-1.0), "robust_eps"),
        (dict(robust_weight=float("nan")), "robust_weight"),
        (dict(backbone="identityy"), "Valid backbones: mlp, cnn, identity"),
    ],
)
def test_bad_options_name_the_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LVQMLN(**kwargs)


def test_orthogonal_cnn_is_refused():
    with pytest.raises(ValueError, match="for the CNN.*Valid values: None, 'spectral'"):
        LVQMLN(backbone="cnn", input_shape=(1, 4, 4), n_classes=2, lipschitz="orthogonal")


def test_identity_backbone_reads_its_size_from_the_datamodule(iris):
    X, y = iris
    model = LVQMLN(backbone="identity", robust_eps=0.1)
    quiet_trainer(max_epochs=3).fit(model, datamodule=ArrayDataModule(X, y, batch_size=50))
    assert model.hparams.latent_dim == 4 and model.hparams.in_features == 4
    assert tuple(model.prototypes.shape) == (3, 4)
    assert model.lipschitz_bound() == 1.0
    assert torch.equal(model.transform(X), torch.as_tensor(X))


def test_estimator_certifies_with_original_labels(iris):
    X, y = iris
    est = LVQMLNClassifier(backbone="identity", max_iter=30, robust_eps=0.2).fit(X, y)
    assert est.engine_ == "lightning" and est.lipschitz_bound() == 1.0
    radius = est.certify(X)
    assert radius.shape == (150,) and radius.dtype == np.float64 and (radius >= 0).all()
    wrong = est.predict(X) != y
    assert (est.certify(X, y)[wrong] == 0).all()
    assert np.array_equal(est.certify(X, y)[~wrong], radius[~wrong])
    curve = est.certified_accuracy(X, y, [0.0, 0.1, 0.3])
    assert curve.shape == (3,) and curve[0] == pytest.approx(est.score(X, y))
    assert np.all(np.diff(curve) <= 0)
    assert est.certified_accuracy(X, y, 0.1) == pytest.approx(curve[1])
    assert est.certified_accuracy(X, y, 0.1) == pytest.approx(np.mean(~wrong & (radius >= 0.1)))
    with pytest.raises(ValueError, match="eps"):
        est.certified_accuracy(X, y, -0.5)
    with pytest.raises(ValueError):
        est.certify(X, np.array(["rose"] * 150))


def test_numpy_engine_refuses_the_robust_options(iris):
    X, y = iris
    for kwargs in [dict(robust_eps=0.1), dict(lipschitz="spectral"), dict(activation="maxmin")]:
        with pytest.raises(ValueError, match="engine='numpy' cannot train"):
            LVQMLNClassifier(engine="numpy", max_iter=2, **kwargs).fit(X, y)
        assert LVQMLNClassifier(max_iter=2, **kwargs).fit(X, y).engine_ == "lightning"


def test_robust_training_with_a_controlled_backbone_saves_and_loads(iris, tmp_path):
    X, y = iris
    est = LVQMLNClassifier(
        hidden_sizes=[8],
        latent_dim=4,
        activation="maxmin",
        latent_activation=False,
        lipschitz="orthogonal",
        robust_eps=0.1,
        max_iter=20,
    ).fit(X, y)
    assert est.lipschitz_bound() == pytest.approx(1.0, rel=1e-5)
    est.save(tmp_path / "m.lvq")
    loaded = LVQMLNClassifier.load(tmp_path / "m.lvq")
    np.testing.assert_allclose(loaded.certify(X), est.certify(X), rtol=1e-6)


def test_nominal_bound_is_what_the_parametrisation_promises():
    from lvqmln_torch.core.backbones import CNNBackbone, MLPBackbone

    free = MLPBackbone(6, [8], 4, "tanh")
    assert free.nominal_lipschitz() is None
    spectral = MLPBackbone(6, [8], 4, "sigmoid", True, lipschitz="spectral")
    assert spectral.nominal_lipschitz() == pytest.approx(0.25**2)
    # The exact bound of freshly normalised layers is the promised one, up to the power
    # iteration's estimate of the norms.
    assert spectral.lipschitz_bound() == pytest.approx(0.25**2, rel=1e-2)
    cnn = CNNBackbone((1, 6, 6), (3,), (3,), 2, "tanh", head="mean", lipschitz="spectral")
    assert cnn.nominal_lipschitz() == pytest.approx(1 / 6)
    assert cnn.lipschitz_bound() <= cnn.nominal_lipschitz() * (1 + 1e-6)


def test_explain_carries_the_certified_radius(iris):
    X, y = iris
    est = LVQMLNClassifier(backbone="identity", max_iter=10, robust_eps=0.2).fit(X, y)
    info = est.explain(X)
    assert info["radius"].dtype == np.float64
    np.testing.assert_allclose(info["radius"], est.certify(X), rtol=1e-12)
    # The module and the network give the same radius, in tensors.
    network_info = est.network_.explain(torch.as_tensor(X))
    np.testing.assert_allclose(network_info["radius"].numpy(), info["radius"], rtol=1e-12)
    deep = LVQMLNClassifier(
        hidden_sizes=[8], latent_dim=3, activation="maxmin", lipschitz="spectral", max_iter=5
    ).fit(X, y)
    np.testing.assert_allclose(deep.explain(X)["radius"], deep.certify(X), rtol=1e-9)


def test_explain_without_a_bound_has_no_radius():
    model = LVQMLN(backbone=_NoBound(), n_classes=2, latent_dim=2)
    model.set_prototypes(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 1]))
    info = model.explain(torch.randn(5, 4))
    assert "radius" not in info and info["label"].shape == (5,)
    model = LVQMLN(backbone=_WithBound(), n_classes=2, latent_dim=2)
    model.set_prototypes(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 1]))
    x = torch.randn(5, 4)
    assert torch.allclose(model.explain(x)["radius"], model.certify(x))
