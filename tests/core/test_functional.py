"""Unit tests of ``lvqmln_torch.core.functional`` on its own (no JAX): the upstream fixed points,
transfers, ties, empty classes, and the errors for bad input.

The fixed points are the values the upstream library (prosemble 2.4.0, float32) prints for
distances ``[[1, 4, 9, 0.5], [4, 1, 0.25, 2]]``, targets ``[0, 2]`` and prototype labels
``[0, 1, 2, 1]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvqmln_torch import functional as F

DIST = torch.tensor([[1.0, 4.0, 9.0, 0.5], [4.0, 1.0, 0.25, 2.0]])
TARGETS = torch.tensor([0, 2])
PLABELS = torch.tensor([0, 1, 2, 1])


# --- upstream fixed points ------------------------------------------------------------------


def test_mu_fixed_point():
    # Sample 0: d+ = 1 (proto 0), d- = 0.5 (proto 3) -> 0.5 / 1.5; sample 1: d+ = 0.25,
    # d- = 1 -> -0.75 / 1.25.
    mu = F.glvq_mu(DIST, TARGETS, PLABELS)
    np.testing.assert_allclose(mu.numpy(), [1 / 3, -0.6], rtol=1e-6)


@pytest.mark.parametrize(
    ("transfer", "beta", "margin", "expected"),
    [
        ("identity", 10.0, 0.0, -0.13333334),
        ("identity", 10.0, 0.1, -0.03333333),
        ("sigmoid_beta", 10.0, 0.1, 0.49686953),
        ("swish_beta", 2.0, 0.0, 0.040683493),
    ],
)
def test_loss_fixed_points(transfer, beta, margin, expected):
    loss = F.glvq_loss(DIST, TARGETS, PLABELS, transfer=transfer, beta=beta, margin=margin)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-6)
    # The same transfer passed as a callable gives the same value, bit for bit.
    by_callable = F.glvq_loss(
        DIST, TARGETS, PLABELS, transfer=F.TRANSFERS[transfer], beta=beta, margin=margin
    )
    assert by_callable.item() == loss.item()


def test_wtac_fixed_point():
    assert F.wtac(DIST, PLABELS).tolist() == [1, 2]


def test_stratified_min_pooling_fixed_point_and_empty_class():
    pooled = F.stratified_min_pooling(DIST, PLABELS, 4)
    big = torch.finfo(torch.float32).max
    assert pooled.tolist() == [[1.0, 0.5, 9.0, big], [4.0, 1.0, 0.25, big]]


def test_default_transfer_is_identity_and_none_means_identity():
    default = F.glvq_loss(DIST, TARGETS, PLABELS)
    assert default.item() == F.glvq_loss(DIST, TARGETS, PLABELS, transfer=None).item()
    np.testing.assert_allclose(default.item(), -0.13333334, rtol=1e-6)


# --- transfers -------------------------------------------------------------------------------


def test_transfers_by_formula():
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    assert torch.equal(F.identity(x, 123.0), x)
    torch.testing.assert_close(F.sigmoid_beta(x, 3.0), 1 / (1 + torch.exp(-3.0 * x)))
    torch.testing.assert_close(F.swish_beta(x, 3.0), x / (1 + torch.exp(-3.0 * x)))
    assert F.get_transfer("swish_beta") is F.swish_beta
    assert F.get_transfer(None) is F.identity
    custom = lambda x, beta: x * beta
    assert F.get_transfer(custom) is custom
    loss = F.glvq_loss(DIST, TARGETS, PLABELS, transfer=custom, beta=2.0)
    np.testing.assert_allclose(loss.item(), -0.26666667, rtol=1e-6)


def test_sample_weight_is_a_weighted_mean():
    w = torch.tensor([1.0, 3.0])
    loss = F.glvq_loss(DIST, TARGETS, PLABELS, sample_weight=w)
    np.testing.assert_allclose(loss.item(), (1 / 3 - 3 * 0.6) / 4, rtol=1e-6)
    # Equal weights give the plain mean; weights in another dtype are cast.
    ones = F.glvq_loss(DIST, TARGETS, PLABELS, sample_weight=torch.ones(2, dtype=torch.float64))
    assert ones.dtype == torch.float32
    np.testing.assert_allclose(ones.item(), -0.13333334, rtol=1e-6)


# --- distances -----------------------------------------------------------------------------


def test_squared_euclidean_distance_matches_brute_force_and_is_never_negative():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    brute = ((x[:, None, :] - w[None, :, :]) ** 2).sum(-1)
    # The ‖x‖² + ‖w‖² − 2x·w expansion loses digits near 0, hence the absolute tolerance.
    torch.testing.assert_close(F.squared_euclidean_distance(x, w), brute, rtol=1e-12, atol=1e-12)
    # A point against itself: the expansion can round below zero; the clamp keeps it at 0.
    big = 1e3 + torch.randn(6, 4, generator=gen)
    self_dist = F.squared_euclidean_distance(big, big)
    assert (self_dist >= 0).all()
    assert self_dist.diagonal().abs().max() < 1.0  # 0 up to float32 cancellation of ~4e6


# --- ties, empty masks -----------------------------------------------------------------------


def test_wtac_ties_pick_the_lowest_index():
    d = torch.tensor([[2.0, 1.0, 1.0, 3.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 1.0, 0.0]])
    labels = torch.tensor([3, 1, 2, 0])
    assert F.wtac(d, labels).tolist() == [1, 3, 3]


def test_identical_prototype_copies_get_identical_gradients():
    # Exact dyadic inputs: every distance is exact, so the tie between the copies is exact.
    z = torch.tensor([[0.5, 1.0], [1.5, -0.5], [-1.0, 0.25]], dtype=torch.float64)
    base = torch.tensor([[0.0, 0.5], [1.0, -1.0], [-0.5, 0.0]], dtype=torch.float64)
    protos = torch.cat([base, base[:1], base[1:2]]).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1])
    d = F.squared_euclidean_distance(z, protos)
    assert torch.equal(d[:, 0], d[:, 3]) and torch.equal(d[:, 1], d[:, 4])
    for transfer in F.TRANSFERS:
        protos.grad = None
        F.glvq_loss(d, torch.tensor([0, 1, 2]), labels, transfer, beta=3.0).backward(
            retain_graph=True
        )
        g = protos.grad
        assert g.abs().sum() > 0
        assert torch.equal(g[0], g[3]) and torch.equal(g[1], g[4])


def test_min_gradient_splits_evenly_between_exact_ties():
    d = torch.tensor([[2.0, 2.0, 5.0, 5.0]], requires_grad=True)
    mu = F.glvq_mu(d, torch.tensor([0]), torch.tensor([0, 0, 1, 1]))
    mu.sum().backward()
    # d+ = 2, d- = 5: dμ/dd+ = 2·5/49, dμ/dd- = −2·2/49, each split over two copies.
    np.testing.assert_allclose(d.grad.numpy(), [[5 / 49, 5 / 49, -2 / 49, -2 / 49]], rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_missing_classes_give_finite_mu_and_zero_gradient(dtype):
    # Sample 0's class (2) has no prototype: d+ = dtype max, μ = 1. Sample 1 sees only its own
    # class: d- = dtype max, μ = −1. Their gradients vanish (denormal: ~d / max²·max).
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 0])
    mu = F.glvq_mu(d, torch.tensor([2, 0]), labels)
    assert mu.tolist() == [1.0, -1.0]
    F.glvq_loss(d, torch.tensor([2, 0]), labels, "sigmoid_beta").backward()
    assert torch.isfinite(d.grad).all()
    assert d.grad.abs().max() < 1e-30


# --- bad input -------------------------------------------------------------------------------


def test_unknown_transfer_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown transfer 'relu'.*identity, sigmoid_beta"):
        F.glvq_loss(DIST, TARGETS, PLABELS, transfer="relu")
    with pytest.raises(ValueError, match="swish_beta"):
        F.get_transfer("swish")


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "message"),
    [
        ((3,), (2, 3), r"x must be a 2-D tensor, got shape \(3,\)"),
        ((1, 2, 3), (2, 3), "x must be a 2-D tensor"),
        ((2, 3), (3,), "prototypes must be a 2-D tensor"),
        ((2, 3), (4, 2), "x has 3 features but prototypes have 2"),
    ],
)
def test_distance_bad_shapes(x_shape, w_shape, message):
    with pytest.raises(ValueError, match=message):
        F.squared_euclidean_distance(torch.zeros(x_shape), torch.zeros(w_shape))


@pytest.mark.parametrize(
    ("distances", "targets", "labels", "message"),
    [
        (DIST[0], TARGETS, PLABELS, "distances must be a 2-D tensor"),
        (DIST, TARGETS[:, None], PLABELS, "targets must be a 1-D tensor"),
        (DIST, TARGETS, PLABELS[None], "prototype_labels must be a 1-D tensor"),
        (DIST, torch.tensor([0, 1, 2]), PLABELS, "targets has 3 entries but distances has 2"),
        (DIST, TARGETS, torch.tensor([0, 1, 2]), "prototype_labels has 3 entries but distances"),
    ],
)
def test_mu_and_loss_bad_shapes(distances, targets, labels, message):
    with pytest.raises(ValueError, match=message):
        F.glvq_mu(distances, targets, labels)
    with pytest.raises(ValueError, match=message):
        F.glvq_loss(distances, targets, labels)


def test_sample_weight_bad_shapes():
    with pytest.raises(ValueError, match="sample_weight must be a 1-D tensor"):
        F.glvq_loss(DIST, TARGETS, PLABELS, sample_weight=torch.ones(2, 1))
    with pytest.raises(ValueError, match="sample_weight has 3 entries but there are 2 samples"):
        F.glvq_loss(DIST, TARGETS, PLABELS, sample_weight=torch.ones(3))


def test_wtac_and_pooling_bad_ranks():
    with pytest.raises(ValueError, match="distances must be a 2-D tensor"):
        F.wtac(DIST[0], PLABELS)
    with pytest.raises(ValueError, match="prototype_labels must be a 1-D tensor"):
        F.wtac(DIST, PLABELS[None])
    with pytest.raises(ValueError, match="distances must be a 2-D tensor"):
        F.stratified_min_pooling(DIST[None], PLABELS, 3)
    with pytest.raises(ValueError, match="prototype_labels must be a 1-D tensor"):
        F.stratified_min_pooling(DIST, PLABELS[:, None], 3)


@pytest.mark.parametrize("n_labels", [3, 5])
def test_wtac_and_pooling_label_count_must_match_columns(n_labels):
    labels = torch.arange(n_labels) % 3
    message = f"prototype_labels has {n_labels} entries but distances has 4 columns"
    with pytest.raises(ValueError, match=message):
        F.wtac(DIST, labels)
    with pytest.raises(ValueError, match=message):
        F.stratified_min_pooling(DIST, labels, 3)
