"""Conformal prediction sets through MAPIE and crepes: the estimator with MAPIE's default
score and with the prototype-native score μ, crepes on the estimator and on the
LightningModule's DataLoaders; coverage over 20 random calibration/test splits of digits."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader, TensorDataset

from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

mapie_classification = pytest.importorskip("mapie.classification")
crepes = pytest.importorskip("crepes")
from lvqmln_torch.sklearn.conformal import PrototypeMuScore  # noqa: E402

SPLITS = 20


@pytest.fixture(scope="module")
def digits():
    """A tanh MLP on 1,000 digits; the other 797 samples are split 20 times into
    calibration and test halves."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_ho, y_tr, y_ho = train_test_split(X, y, train_size=1000, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    clf = LVQMLNClassifier(hidden_sizes=[64], latent_dim=10, max_iter=50, activation="tanh")
    return clf.fit(scaler.transform(X_tr), y_tr), scaler.transform(X_ho), y_ho


def _splits(X, y):
    for seed in range(SPLITS):
        yield train_test_split(X, y, test_size=0.5, random_state=seed)


def _summary(sets, y):
    """(coverage, mean set size, share of empty sets) of boolean sets ``(n, k)``."""
    sizes = sets.sum(axis=1)
    return sets[np.arange(len(y)), y].mean(), sizes.mean(), (sizes == 0).mean()


def _mapie_sets(clf, score, alpha, X_cal, y_cal, X_te):
    mapie = mapie_classification.SplitConformalClassifier(
        clf, confidence_level=1 - alpha, conformity_score=score, prefit=True
    )
    labels, sets = mapie.conformalize(X_cal, y_cal).predict_set(X_te)
    np.testing.assert_array_equal(labels, clf.predict(X_te))
    return sets[:, :, 0]


@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_coverage_over_20_splits(digits, alpha):
    """Mean coverage in [1 − α − 0.01, 1 − α + 0.02] for MAPIE (default score and μ) and
    crepes (μ); μ's sets are no larger on average than MAPIE's default's by more than 10 %."""
    clf, X, y = digits
    results = {"lac": [], "mu": [], "crepes": []}
    for X_cal, X_te, y_cal, y_te in _splits(X, y):
        results["lac"].append(_summary(_mapie_sets(clf, "lac", alpha, X_cal, y_cal, X_te), y_te))
        mu_sets = _mapie_sets(clf, PrototypeMuScore(), alpha, X_cal, y_cal, X_te)
        results["mu"].append(_summary(mu_sets, y_te))
        cc = crepes.ConformalClassifier().fit(clf.nonconformity(X_cal, y_cal))
        sets = cc.predict_set(clf.nonconformity(X_te), confidence=1 - alpha, smoothing=False)
        results["crepes"].append(_summary(sets.astype(bool), y_te))
    means = {k: np.mean(v, axis=0) for k, v in results.items()}
    for name, (coverage, _, _) in means.items():
        assert 1 - alpha - 0.01 <= coverage <= 1 - alpha + 0.02, (name, means)
    assert means["mu"][1] <= 1.1 * means["lac"][1], means


def test_mu_sets_are_the_conformal_quantile_rule(digits):
    """MAPIE with PrototypeMuScore keeps class c iff μ_c ≤ the ⌈(n+1)(1−α)⌉-th smallest
    calibration μ: the same sets computed by hand."""
    clf, X, y = digits
    X_cal, X_te, y_cal, y_te = next(_splits(X, y))
    sets = _mapie_sets(clf, PrototypeMuScore(), 0.1, X_cal, y_cal, X_te)
    calibration = np.sort(clf.nonconformity(X_cal, y_cal))
    q = calibration[int(np.ceil((len(calibration) + 1) * 0.9)) - 1]
    expected = clf.nonconformity(X_te) <= q + 1e-8
    assert (sets != expected).mean() < 1e-3  # float32 scores: ties within 1e-8 only


def test_mu_score_needs_our_estimator(digits):
    _, X, y = digits
    other = LogisticRegression(max_iter=200).fit(X, y)
    mapie = mapie_classification.SplitConformalClassifier(
        other, confidence_level=0.9, conformity_score=PrototypeMuScore(), prefit=True
    )
    with pytest.raises(TypeError, match="nonconformity"):
        mapie.conformalize(X[:100], y[:100])


def test_crepes_on_the_module_with_dataloaders(digits):
    """The LightningModule's path: μ of every class for every batch of a DataLoader."""
    clf, X, y = digits
    model = clf.model_  # the fitted LVQMLN
    X_cal, X_te, y_cal, y_te = next(_splits(X, y))

    def loader(X_, y_):
        data = TensorDataset(torch.as_tensor(X_, dtype=torch.float32), torch.as_tensor(y_))
        return DataLoader(data, batch_size=64)

    scores, labels = model.nonconformity_from(loader(X_cal, y_cal))
    assert scores.shape == (len(y_cal), 10)
    np.testing.assert_array_equal(labels.numpy(), y_cal)
    np.testing.assert_allclose(scores.numpy(), clf.nonconformity(X_cal), atol=1e-6)
    cc = crepes.ConformalClassifier().fit(scores[torch.arange(len(labels)), labels].numpy())
    test_scores, test_labels = model.nonconformity_from(loader(X_te, y_te))
    sets = cc.predict_set(test_scores.numpy(), confidence=0.9, smoothing=False).astype(bool)
    coverage, size, _ = _summary(sets, test_labels.numpy())
    assert coverage >= 0.85 and size < 3
