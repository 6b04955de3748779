"""The training rules of ``lvqmln_torch.training.rules`` by hand, without Lightning: the epoch
mean, patience, convergence, best-epoch tracking, the EMA and lookahead updates and which of them
evaluates, and the stall detection. Real runs through the callbacks and the numpy engine are in
tests/lightning/ and tests/sklearn/."""

import pytest
import torch

from lvqmln_torch.lightning.metrics import EpochStats
from lvqmln_torch.training.rules import (
    BestTracker,
    ConvergenceRule,
    EMARule,
    EpochMean,
    LookaheadRule,
    PatienceRule,
    StallRule,
    evaluating_rule,
    shadow_rules,
)


def test_epoch_stats_agree_with_the_numpy_engines_epoch_mean():
    stats, mean = EpochStats(), EpochMean()
    for loss, weight in ((0.3, 64), (0.1, 64), (0.7, 17)):
        stats.update(torch.tensor(loss), weight, torch.tensor(0), weight)
        mean.update(loss, weight)
    assert stats.compute()[0].item() == pytest.approx(mean.compute(), rel=1e-6)


def test_patience_rule_counts_epochs_without_improvement():
    rule = PatienceRule(patience=2, min_delta=0.1)
    decisions = [rule.update(v) for v in (1.0, 0.95, 0.8, 0.75, 0.9)]
    # 0.95 and 0.75 improve by less than 0.1; the second miss in a row stops.
    assert decisions == [False, False, False, False, True]
    assert PatienceRule(5).update(float("nan")) is True


def test_convergence_and_best_tracking():
    rule = ConvergenceRule(0.01)
    assert [rule.update(v) for v in (1.0, 0.5, 0.495)] == [False, False, True]
    best = BestTracker()
    snapshots = iter(["s0", "s1", "s2", "s3"])
    for epoch, score in enumerate((0.5, 0.4, 0.4, 0.6)):
        best.update(score, epoch, lambda: next(snapshots))
    assert (best.score, best.epoch, best.state) == (0.4, 1, "s1")  # ties keep the first


def test_shadow_rules_by_hand():
    ema = EMARule(0.9)
    shadow, params = {"w": torch.tensor([1.0])}, {"w": torch.tensor([3.0])}
    ema.after_step(shadow, params, 1)
    assert shadow["w"].item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    look = LookaheadRule(sync_period=2, slow_step_size=0.5)
    slow, fast = {"w": torch.tensor([0.0])}, {"w": torch.tensor([4.0])}
    look.after_step(slow, fast, 1)
    assert slow["w"].item() == 0.0 and fast["w"].item() == 4.0
    look.after_step(slow, fast, 2)
    assert slow["w"].item() == 2.0 and fast["w"].item() == 2.0
    rules = shadow_rules(0.99, {"sync_period": 6, "slow_step_size": 0.5})
    assert isinstance(evaluating_rule(rules), EMARule)  # EMA decides when both are on
    assert isinstance(evaluating_rule(shadow_rules(None, {})), LookaheadRule)
    assert evaluating_rule([]) is None


def _recorded(losses, steps_per_epoch=10, **kwargs):
    rule = StallRule(**kwargs)
    for epoch, loss in enumerate(losses, 1):
        rule.record(loss, epoch * steps_per_epoch)
    return rule


def test_stall_rule():
    rule = _recorded((0.3, 0.01, 0.005), after=3, min_steps=30)
    assert rule.due(last=False)
    assert rule.check(accuracy=0.5, majority=0.1) is None  # learning: no warning
    rule = _recorded((0.3, 0.01, 0.005), after=3, min_steps=30)
    message = rule.check(accuracy=0.11, majority=0.1)
    assert "stalled after 3 epochs" in message and "latent collapse" in message
    assert "input scale" in message and "activation" in message
    assert rule.check(accuracy=0.11, majority=0.1) is None  # once
    moving = _recorded((0.3, 0.1), after=2, min_steps=0)
    assert moving.check(accuracy=0.1, majority=0.1) is None  # the loss still moves
    # A full-batch fit (one step per epoch) is not judged before min_steps steps...
    full_batch = _recorded((0.3, 0.3, 0.3, 0.3, 0.3), steps_per_epoch=1, after=5, min_steps=50)
    assert not full_batch.due(last=False)
    assert full_batch.due(last=True)  # ...but at its end
    early = _recorded((0.3, 0.3, 0.3, 0.3, 0.3), after=5, min_steps=50)
    assert early.due(last=False) and not early.due(last=False)  # the early check comes once
    assert not _recorded((0.3, 0.3), after=1, min_steps=0).due(last=True)  # 3 epochs at least
    with pytest.raises(ValueError, match="after"):
        StallRule(after=0)
