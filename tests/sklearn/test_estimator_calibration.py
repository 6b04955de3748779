"""The estimator's temperature scaling: the targets on held-out breast_cancer and digits
data, bad inputs, the temperature saved and loaded (files and pickles from before load with
T = 1), the conformal scores and the reliability diagram."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torchmetrics.functional.classification import multiclass_calibration_error

from lvqmln_torch.sklearn.estimator import LVQMLNClassifier


def _ece_nll(p, y):
    p = torch.as_tensor(p, dtype=torch.float64)
    y = torch.as_tensor(y)
    ece = float(multiclass_calibration_error(p, y, p.shape[1], n_bins=15))
    return ece, float(-torch.log(p[torch.arange(len(y)), y]).mean())


def _split(X, y, train, seed=0):
    X_tr, X_rest, y_tr, y_rest = train_test_split(
        X, y, train_size=train, random_state=seed, stratify=y
    )
    X_cal, X_te, y_cal, y_te = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    scaler = StandardScaler().fit(X_tr)
    return [scaler.transform(a) for a in (X_tr, X_cal, X_te)], (y_tr, y_cal, y_te)


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer, MLP [10], latent 2, 300 iterations: flat probabilities (ECE ~0.4)."""
    (X_tr, X_cal, X_te), (y_tr, y_cal, y_te) = _split(*load_breast_cancer(return_X_y=True), 0.5)
    clf = LVQMLNClassifier(hidden_sizes=[10], latent_dim=2, max_iter=300).fit(X_tr, y_tr)
    return clf, X_cal, y_cal, X_te, y_te


def test_targets_on_breast_cancer(cancer):
    """ECE above 0.05 before: at most half after; NLL at most 3 % worse; same predictions."""
    clf, X_cal, y_cal, X_te, y_te = cancer
    clf = pickle.loads(pickle.dumps(clf))  # the fixture stays uncalibrated
    labels = clf.predict(X_te)
    ece_b, nll_b = _ece_nll(clf.predict_proba(X_te), y_te)
    assert clf.temperature_ == 1.0
    assert clf.calibrate(X_cal, y_cal) is clf
    ece_a, nll_a = _ece_nll(clf.predict_proba(X_te), y_te)
    assert ece_b > 0.05 and ece_a <= ece_b / 2
    assert nll_a <= 1.03 * nll_b
    assert clf.temperature_ != 1.0
    np.testing.assert_array_equal(clf.predict(X_te), labels)


def test_targets_on_digits():
    """ECE below 0.05 before (a tanh MLP): at most 0.01 worse after; NLL at most 3 % worse."""
    (X_tr, X_cal, X_te), (y_tr, y_cal, y_te) = _split(*load_digits(return_X_y=True), 1000)
    clf = LVQMLNClassifier(hidden_sizes=[64], latent_dim=10, max_iter=50, activation="tanh")
    clf.fit(X_tr, y_tr)
    ece_b, nll_b = _ece_nll(clf.predict_proba(X_te), y_te)
    labels = clf.predict(X_te)
    clf.calibrate(X_cal, y_cal)
    ece_a, nll_a = _ece_nll(clf.predict_proba(X_te), y_te)
    assert ece_b < 0.05 and ece_a <= ece_b + 0.01
    assert nll_a <= 1.03 * nll_b
    np.testing.assert_array_equal(clf.predict(X_te), labels)


def test_estimator_calibrate_bad_inputs(cancer):
    clf, X_cal, y_cal, _, _ = cancer
    with pytest.raises(ValueError, match="7"):
        clf.calibrate(X_cal[:3], [0, 1, 7])
    with pytest.raises(ValueError, match="one label per sample"):
        clf.calibrate(X_cal[:3], [0, 1])
    with pytest.raises(ValueError, match="bounds"):
        clf.calibrate(X_cal, y_cal, bounds=(1, 1))
    with pytest.raises(Exception, match="not fitted"):
        LVQMLNClassifier().calibrate(X_cal, y_cal)


def test_temperature_saved_loaded_and_old_files_load_with_one(cancer, tmp_path):
    clf, X_cal, y_cal, X_te, _ = cancer
    clf = pickle.loads(pickle.dumps(clf)).calibrate(X_cal, y_cal)
    clf.save(tmp_path / "new.pt")
    loaded = LVQMLNClassifier.load(tmp_path / "new.pt")
    assert loaded.temperature_ == clf.temperature_
    np.testing.assert_allclose(loaded.predict_proba(X_te), clf.predict_proba(X_te), atol=1e-6)
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    del payload["state_dict"]["head.temperature"]  # a file written before issue 23
    torch.save(payload, tmp_path / "old.pt")
    old = LVQMLNClassifier.load(tmp_path / "old.pt")
    assert old.temperature_ == 1.0
    # A pickle of a network built before the buffer existed unpickles with T = 1.
    network = pickle.loads(pickle.dumps(clf.network_))
    del network.head._buffers["temperature"]
    assert float(pickle.loads(pickle.dumps(network)).head.temperature) == 1.0


def test_nonconformity_and_reliability_plot(cancer, tmp_path):
    clf, _, _, X_te, y_te = cancer
    scores = clf.nonconformity(X_te)
    assert scores.shape == (len(X_te), 2)
    np.testing.assert_allclose(clf.nonconformity(X_te, y_te), scores[np.arange(len(y_te)), y_te])
    np.testing.assert_array_equal(clf.classes_[scores.argmin(axis=1)], clf.predict(X_te))
    figure = clf.plot_reliability(X_te, y_te, path=tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0 and figure.axes
    with pytest.raises(ValueError, match="one label per sample"):
        clf.plot_reliability(X_te, y_te[:-1])
