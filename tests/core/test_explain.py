"""Explanations, exemplars and the reject option against brute force: NumPy distances from
``transform()`` and the prototypes, in float64 (so near-ties cannot differ by rounding)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from lvqmln_torch import LVQMLN, LVQMLNClassifier, explain
from lvqmln_torch.core.explain import merge_nearest, relative_similarity, select_smallest


def blobs(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(scale=2.0, size=(3, 5))
    return centers[y] + rng.normal(size=(n, 5)), np.asarray(["a", "b", "c"])[y]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return blobs()


@pytest.fixture(scope="module")
def fitted(data) -> LVQMLNClassifier:
    X, y = data
    return LVQMLNClassifier(
        max_iter=15, n_prototypes_per_class=2, latent_dim=3, precision="64-true", lr=0.05
    ).fit(X, y)


def brute_distances(est: LVQMLNClassifier, X: np.ndarray) -> np.ndarray:
    z = est.transform(X).astype(np.float64)
    return ((z[:, None, :] - est.prototypes_[None].astype(np.float64)) ** 2).sum(-1)


def brute_exemplars(d: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """Per prototype the k nearest samples by (distance, index); -1 / inf where fewer."""
    P = d.shape[1]
    idx = np.full((P, k), -1)
    dist = np.full((P, k), np.inf)
    for p in range(P):
        rows = np.arange(len(d)) if allowed is None else np.flatnonzero(allowed[:, p])
        order = rows[np.lexsort((rows, d[rows, p]))][:k]
        idx[p, : len(order)] = order
        dist[p, : len(order)] = d[order, p]
    return idx, dist


def test_explain_fields_match_brute_force(fitted, data):
    X, _ = data
    info = fitted.explain(X)
    d = brute_distances(fitted, X)
    proto_labels = fitted.prototype_labels_
    winner = d.argmin(1)
    other = proto_labels[None, :] != proto_labels[winner][:, None]
    rival = np.where(other, d, np.inf).argmin(1)
    np.testing.assert_array_equal(info["prototype"], winner)
    np.testing.assert_array_equal(info["label"], proto_labels[winner])
    np.testing.assert_array_equal(info["label"], fitted.predict(X))
    np.testing.assert_array_equal(info["rival_prototype"], rival)
    np.testing.assert_array_equal(info["rival_label"], proto_labels[rival])
    rows = np.arange(len(X))
    np.testing.assert_allclose(info["distance"], d[rows, winner], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(info["rival_distance"], d[rows, rival], rtol=1e-9, atol=1e-12)
    dw, dr = d[rows, winner], d[rows, rival]
    np.testing.assert_allclose(info["confidence"], (dr - dw) / (dr + dw), rtol=1e-9, atol=1e-12)
    assert np.all((info["confidence"] >= 0) & (info["confidence"] <= 1))
    np.testing.assert_array_equal(fitted.confidence(X), info["confidence"])


def test_module_returns_tensors_with_class_indices(fitted, data):
    X, _ = data
    module = fitted.model_
    assert isinstance(module, LVQMLN)
    info = module.explain(torch.as_tensor(X))
    assert all(isinstance(v, torch.Tensor) for v in info.values())
    np.testing.assert_array_equal(
        fitted.classes_[info["label"].numpy()], fitted.explain(X)["label"]
    )
    torch.testing.assert_close(module.confidence(X), info["confidence"])


def test_relative_similarity_edge_cases():
    d = torch.tensor([0.0, 0.0, 1.0, 2.0, 1.0])
    r = torch.tensor([0.0, 3.0, 1.0, 6.0, torch.finfo(torch.float32).max])
    torch.testing.assert_close(relative_similarity(d, r), torch.tensor([0.0, 1.0, 0.0, 0.5, 1.0]))


@pytest.mark.parametrize("k", [1, 5])
def test_exemplars_match_brute_force(fitted, data, k):
    X, y = data
    d = brute_distances(fitted, X)
    idx, dist = fitted.prototype_exemplars(X, k=k)
    want_idx, want_dist = brute_exemplars(d, k)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(dist, axis=1) >= 0)
    # With y: only samples of the prototype's class.
    own = y[:, None] == fitted.prototype_labels_[None, :]
    idx, dist = fitted.prototype_exemplars(X, y, k=k)
    want_idx, want_dist = brute_exemplars(d, k, own)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-9, atol=1e-12)
    assert np.all(y[idx] == fitted.prototype_labels_[:, None])


def test_exemplars_exact_with_ties_and_chunks(fitted, data, monkeypatch):
    """Duplicated rows tie exactly; tiny chunks force the running top-k across chunks."""
    X, y = data
    rng = np.random.default_rng(1)
    order = rng.permutation(np.repeat(np.arange(40), 3))  # every row three times
    Xd, yd = X[order], y[order]
    d = brute_distances(fitted, Xd)
    want_idx, _ = brute_exemplars(d, 7)
    own = yd[:, None] == fitted.prototype_labels_[None, :]
    want_own, _ = brute_exemplars(d, 7, own)
    for chunk in (65536, 7, 1):
        monkeypatch.setattr(explain, "CHUNK", chunk)
        np.testing.assert_array_equal(fitted.prototype_exemplars(Xd, k=7)[0], want_idx)
        np.testing.assert_array_equal(fitted.prototype_exemplars(Xd, yd, k=7)[0], want_own)


def test_select_and_merge_break_ties_by_index():
    values = torch.tensor([[3.0, 1.0, 1.0, 0.0, 1.0, 2.0]])
    picked, positions = select_smallest(values, 3)
    assert positions.tolist() == [[3, 1, 2]] and picked.tolist() == [[0.0, 1.0, 1.0]]
    d, i = merge_nearest(torch.tensor([[1.0, 1.0, 0.5, 1.0]]), torch.tensor([[9, 4, 7, 2]]), 3)
    assert i.tolist() == [[7, 2, 4]] and d.tolist() == [[0.5, 1.0, 1.0]]


def test_exemplars_of_a_rare_class_are_padded(fitted, data):
    X, y = data
    keep = np.concatenate([np.flatnonzero(y != "c"), np.flatnonzero(y == "c")[:2]])
    idx, dist = fitted.prototype_exemplars(X[keep], y[keep], k=4)
    rare = fitted.prototype_labels_ == "c"
    assert np.all(idx[rare, 2:] == -1) and np.all(np.isinf(dist[rare, 2:]))
    assert np.all(idx[rare, :2] >= 0) and np.all(idx[~rare] >= 0)


def test_accuracy_rejection_curve_matches_brute_force(fitted, data):
    X, y = data
    curve = fitted.accuracy_rejection_curve(X, y)
    confidence, correct = fitted.confidence(X), fitted.predict(X) == y
    assert curve["threshold"][0] == 0 and np.all(np.diff(curve["threshold"]) > 0)
    assert np.all(np.diff(curve["rejection_rate"]) >= 0)
    assert curve["rejection_rate"][0] == 0
    assert curve["accuracy"][0] == pytest.approx(correct.mean())
    for t, rate, acc in zip(curve["threshold"], curve["rejection_rate"], curve["accuracy"]):
        accepted = confidence >= t
        assert rate == pytest.approx(1 - accepted.mean())
        assert acc == pytest.approx(correct[accepted].mean())
        rejected = fitted.predict_with_reject(X, t, reject_label="?") == "?"
        np.testing.assert_array_equal(rejected, ~accepted)


def test_predict_with_reject_and_threshold_for_a_target(fitted, data):
    X, y = data
    out = fitted.predict_with_reject(X, 0.0)
    np.testing.assert_array_equal(out, fitted.predict(X))  # threshold 0 rejects nothing
    out = fitted.predict_with_reject(X, 0.5)
    assert out.dtype == object  # string classes and the numeric reject label -1
    low = fitted.confidence(X) < 0.5
    assert np.all(out[low] == -1) and np.all(out[~low] == fitted.predict(X)[~low])
    curve = fitted.accuracy_rejection_curve(X, y)
    target = float(np.median(curve["accuracy"]))
    t = fitted.rejection_threshold(X, y, target)
    reached = curve["threshold"][curve["accuracy"] >= target]
    assert t == reached.min()
    accepted = fitted.confidence(X) >= t
    assert (fitted.predict(X)[accepted] == y[accepted]).mean() >= target
    # The module: class indices, reject_label an int outside them.
    module = fitted.model_
    y_idx = np.searchsorted(fitted.classes_, y)
    assert module.rejection_threshold(X, y_idx, target) == t
    assert (module.predict_with_reject(X, t, reject_label=7) == 7).sum() == (~accepted).sum()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda e, X, y: e.prototype_exemplars(X, k=0), r"k must be an integer in \[1, 150\]"),
        (lambda e, X, y: e.prototype_exemplars(X, k=151), r"k must be an integer in \[1, 150\]"),
        (lambda e, X, y: e.prototype_exemplars(X, k=2.5), r"k must be an integer in \[1, 150\]"),
        (lambda e, X, y: e.prototype_exemplars(X, y[:-1]), r"y must have shape \(150,\)"),
        (lambda e, X, y: e.prototype_exemplars(X, np.where(y == "a", "z", y)), r"not among"),
        (lambda e, X, y: e.predict_with_reject(X, -0.1), r"threshold must be a number in \[0, 1\)"),
        (lambda e, X, y: e.predict_with_reject(X, 1.0), r"threshold must be a number in \[0, 1\)"),
        (
            lambda e, X, y: e.predict_with_reject(X, np.nan),
            r"threshold must be a number in \[0, 1\)",
        ),
        (lambda e, X, y: e.predict_with_reject(X, 0.5, reject_label="a"), r"is one of the classes"),
        (
            lambda e, X, y: e.rejection_threshold(X, y, 0.0),
            r"target_accuracy must be a number in \(0, 1\]",
        ),
        (
            lambda e, X, y: e.rejection_threshold(X, y, 1.5),
            r"target_accuracy must be a number in \(0, 1\]",
        ),
        (lambda e, X, y: e.explain(X[:, :3]), r"X has 3 features"),
        (lambda e, X, y: e.explain(X[:0]), r"0 sample"),
        (lambda e, X, y: e.accuracy_rejection_curve(X, y[:10]), r"y must have shape \(150,\)"),
        (
            lambda e, X, y: e.model_.predict_with_reject(X, 0.5, reject_label=1),
            r"reject_label must be an integer outside \[0, 3\)",
        ),
        (
            lambda e, X, y: e.model_.prototype_exemplars(X, np.full(150, 3)),
            r"class indices in \[0, 3\) .*got values in \[3, 3\]",
        ),
        (
            lambda e, X, y: e.model_.prototype_exemplars(X, y),
            r"class indices in \[0, 3\) .*got <U1 values",
        ),
        (lambda e, X, y: e.model_.explain(X[:, :4]), r"expected inputs of shape \(n, 5\)"),
    ],
)
def test_bad_arguments_name_the_problem(fitted, data, call, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        call(fitted, X, y)


def test_unreachable_target_names_the_best(fitted, data):
    X, y = data
    flipped = np.where(y == "a", "b", "a")  # mostly wrong labels
    with pytest.raises(ValueError, match=r"no threshold reaches target_accuracy=1 .* highest"):
        fitted.rejection_threshold(X, flipped, 1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda X: LVQMLNClassifier().explain(X),
        lambda X: LVQMLNClassifier().prototype_exemplars(X),
        lambda X: LVQMLNClassifier().predict_with_reject(X, 0.5),
        lambda X: LVQMLN().explain(X),
        lambda X: LVQMLN(in_features=5, n_classes=3).prototype_exemplars(X),
        lambda X: LVQMLN(in_features=5, n_classes=3).confidence(X),
    ],
)
def test_unfitted_models_raise_not_fitted(data, call):
    with pytest.raises(NotFittedError, match="not fitted"):
        call(data[0])


def test_plots_of_exemplars_and_curve(fitted, data, tmp_path):
    pytest.importorskip("matplotlib")
    X, y = data
    figure = fitted.plot_exemplars(X, y, k=3, path=tmp_path / "ex.png", prototype_samples=X[:6])
    assert len(figure.axes) == 6 and (tmp_path / "ex.png").stat().st_size > 0
    figure = fitted.plot_accuracy_rejection(X, y, path=tmp_path / "arc.png")
    assert (tmp_path / "arc.png").stat().st_size > 0
    from lvqmln_torch.viz.explain_plots import plot_exemplars

    images = np.random.default_rng(0).random((10, 1, 4, 4))
    figure = plot_exemplars(images, np.array([[0, 3], [5, -1]]), np.ones((2, 2)), ["x", "y"])
    assert len(figure.axes) == 4
    figure = plot_exemplars(images, np.array([[0, 3], [5, -1]]), prototype_samples=images[:2])
    assert len(figure.axes) == 6  # the prototype first in each row
    with pytest.raises(ValueError, match="prototype_samples needs 2 samples"):
        plot_exemplars(images, np.array([[0, 3], [5, -1]]), prototype_samples=images[:3])
    flat = plot_exemplars(images.reshape(10, 16), np.array([[0, 1]]), image_shape=(4, 4))
    assert len(flat.axes) == 2
    with pytest.raises(ValueError, match="image_shape"):
        plot_exemplars(images.reshape(10, 16), np.array([[0, 1]]), image_shape=(5, 4))
    with pytest.raises(ValueError, match="indices must be rows of x"):
        plot_exemplars(images, np.array([[10]]))


def test_numpy_path_explains_and_projects_without_lightning():
    code = textwrap.dedent(
        """
        import sys
        from sklearn.datasets import load_iris
        from lvqmln_torch import LVQMLNClassifier
        X, y = load_iris(return_X_y=True)
        est = LVQMLNClassifier(max_iter=5, project_prototypes=True).fit(X, y)
        assert est.engine_ == "numpy" and est.prototype_sources_ is not None
        est.explain(X), est.prototype_exemplars(X, y, k=3), est.predict_with_reject(X, 0.5)
        est.accuracy_rejection_curve(X, y)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "lightning")
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
