"""Temperature scaling and the conformal score on tensors: the fit finds the temperature
that generated the labels, sums shards, warns at a bound, checks its inputs; μ is GLVQ's μ of
each class; the reliability bins are torchmetrics' ECE."""

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from lvqmln_torch.core import functional as F
from lvqmln_torch.core.calibration import (
    fit_temperature,
    nonconformity,
    reliability_bins,
    temperature_nll,
)


def test_fit_recovers_the_temperature_that_generated_the_labels():
    g = torch.Generator().manual_seed(0)
    pooled = torch.rand(20000, 4, generator=g, dtype=torch.float64) * 3
    y = torch.multinomial(torch.softmax(-pooled / 0.4, dim=1), 1, generator=g)[:, 0]
    t = fit_temperature(pooled, y)
    assert abs(t - 0.4) < 0.03
    assert fit_temperature(pooled, y) == t  # deterministic
    # The minimum: both neighbours are worse.
    nll = [float(temperature_nll(pooled, y, t * f)) for f in (0.97, 1.0, 1.03)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_fit_sums_shards_through_reduce():
    g = torch.Generator().manual_seed(1)
    pooled = torch.rand(600, 3, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(-pooled / 0.3, dim=1), 1, generator=g)[:, 0]
    calls = []

    def reduce(t):  # two "ranks" holding identical shards: sums double, the minimiser does not
        calls.append(1)
        return 2 * t

    assert fit_temperature(pooled, y, reduce=reduce) == pytest.approx(
        fit_temperature(pooled, y), rel=1e-6
    )
    assert calls


def test_separable_data_warn_at_the_bound():
    pooled = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 10)
    y = torch.tensor([0, 1] * 10)
    with pytest.warns(UserWarning, match="no lower than at a bound"):
        t = fit_temperature(pooled, y, bounds=(1e-3, 10.0))
    assert t < 0.01  # every sample at probability 1: NLL 0
    with pytest.warns(UserWarning, match="no lower than at a bound"):  # no signal
        fit_temperature(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize(
    "bounds, match",
    [((0, 1), "0 < low < high"), ((2, 1), "0 < low < high"), ("x", "pair"), ((1,), "pair")],
)
def test_bad_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0, 1]), bounds=bounds)


def test_bad_calibration_data():
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one per sample"):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="empty"):
        fit_temperature(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_temperature(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))


def test_nonconformity_is_glvq_mu_of_each_class():
    g = torch.Generator().manual_seed(2)
    distances = torch.rand(50, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2, 3, 1])
    pooled = F.stratified_min_pooling(distances, labels, 4)
    scores = nonconformity(pooled)
    for c in range(4):
        target = torch.full((50,), c)
        torch.testing.assert_close(scores[:, c], F.glvq_mu(distances, target, labels))
    assert ((scores < 0).sum(dim=1) <= 1).all()  # only the nearest class is negative


def test_reliability_bins_match_torchmetrics():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(500, 5, generator=g) * 2, dim=1)
    y = torch.randint(0, 5, (500,), generator=g)
    bins = reliability_bins(p, y, 15)
    expected = multiclass_calibration_error(p, y, 5, n_bins=15)
    assert float(bins["ece"]) == pytest.approx(float(expected), abs=1e-6)
    assert int(bins["count"].sum()) == 500
