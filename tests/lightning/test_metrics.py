"""The module's epoch metrics: EpochStats and its logged views."""

import math

import pytest
import torch

from lvqmln_torch.lightning.metrics import EpochStats


def test_epoch_stats_weighted_mean_loss_and_accuracy_by_hand():
    stats = EpochStats()
    stats.update(torch.tensor(0.5), 4, torch.tensor(3), 4)  # unweighted: weight = batch size
    stats.update(torch.tensor(-0.25), torch.tensor(2.0), torch.tensor(1), 2)  # weighted batch
    loss, accuracy = stats.compute()
    assert loss.item() == pytest.approx((0.5 * 4 - 0.25 * 2.0) / 6.0)
    assert accuracy.item() == pytest.approx(4 / 6)
    assert stats.loss.compute() == loss and stats.accuracy.compute() == accuracy


def test_views_track_updates_and_resetting_a_view_resets_the_sums():
    stats = EpochStats()
    assert not stats.loss.update_called
    stats.update(torch.tensor(1.0), 1, torch.tensor(1), 1)
    assert stats.loss.update_called and stats.loss.compute().item() == 1.0
    stats.update(torch.tensor(0.0), 1, torch.tensor(0), 1)  # no stale cached value
    assert stats.loss.compute().item() == 0.5 and stats.accuracy.compute().item() == 0.5
    stats.loss.reset()
    assert not stats.update_called and stats.count.item() == 0
    with pytest.raises(TypeError, match="update the EpochStats"):
        stats.accuracy.update()


def test_a_nan_loss_stays_in_the_epoch_total():
    stats = EpochStats()
    stats.update(torch.tensor(float("nan")), 1, torch.tensor(0), 1)
    stats.update(torch.tensor(0.5), 1, torch.tensor(1), 1)
    assert math.isnan(stats.compute()[0].item())
