"""Comparisons for results computed along different paths (batch shapes, chunk sizes, engines,
runtimes, processes): BLAS kernels round a row differently by its position in a batch, so such
results agree within a tolerance, never bitwise, and an order (a winning prototype, a ranking
of samples) is compared only where the values behind it are separated by more than that
tolerance."""

from __future__ import annotations

from typing import Any

import numpy as np


def _np(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def assert_winners_agree(
    labels: Any, distances: Any, prototype_labels: Any, rtol: float = 1e-6, atol: float = 1e-9
) -> None:
    """Each label in ``labels (n,)`` is the label of a prototype whose reference distance in
    ``distances (n, P)`` is within the tolerance of the row's minimum: equal to the reference
    winner's label wherever the winner is separated, either label on a near tie."""
    labels, d, proto = _np(labels), _np(distances).astype(np.float64), _np(prototype_labels)
    assert labels.shape == (len(d),), (labels.shape, d.shape)
    best = d.min(axis=1, keepdims=True)
    near = d <= best + atol + rtol * np.abs(best)  # (n, P): prototypes that may win
    ok = (near & (proto[None, :] == labels[:, None])).any(axis=1)
    assert ok.all(), f"rows {np.flatnonzero(~ok)[:10]} won by a prototype clearly not nearest"


def assert_nearest_agree(
    idx: Any,
    dist: Any,
    distances: Any,
    want_idx: Any,
    want_dist: Any,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> None:
    """Per prototype ``p`` the ranked samples ``idx (P, k)`` with distances ``dist (P, k)``
    agree with the reference ranking ``(want_idx, want_dist)`` built from the reference
    ``distances (n, P)``: the distances within the tolerance, each chosen sample as near to
    ``p`` (by the reference) as the sample it stands for, no sample twice, ``-1`` in the same
    places. So indices equal the reference's wherever its distances are separated by more than
    the tolerance; within a near tie any order passes."""
    idx, dist, d = _np(idx), _np(dist), _np(distances).astype(np.float64)
    want_idx, want_dist = _np(want_idx), _np(want_dist)
    np.testing.assert_allclose(dist, want_dist, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(idx == -1, want_idx == -1)
    rows, _ = np.nonzero(idx >= 0)
    chosen = idx[idx >= 0]
    np.testing.assert_allclose(d[chosen, rows], want_dist[idx >= 0], rtol=rtol, atol=atol)
    for p, row in enumerate(idx):
        row = row[row >= 0]
        assert len(np.unique(row)) == len(row), f"prototype {p} lists a sample twice: {row}"


def latent_distances(est: Any, X: Any) -> np.ndarray:
    """``(n, P)`` squared latent distances of a fitted estimator in float64, by NumPy."""
    z = np.asarray(est.transform(X), dtype=np.float64)
    return ((z[:, None, :] - np.asarray(est.prototypes_, dtype=np.float64)[None]) ** 2).sum(-1)


def near_ties(distances: Any, prototype_labels: Any, rtol: float = 1e-6, atol: float = 1e-9):
    """``(n,)`` whether a row's nearest prototype of another class than its winner is within
    the tolerance of the winner: rows whose label another rounding may change."""
    d, proto = _np(distances).astype(np.float64), _np(prototype_labels)
    winner = proto[d.argmin(axis=1)]
    rival = np.where(proto[None, :] != winner[:, None], d, np.inf).min(axis=1)
    best = d.min(axis=1)
    return rival <= best + atol + rtol * np.abs(best)
