"""Every stateful callback keys its checkpoint state by the settings that distinguish two
instances: two instances with different monitors coexist in one checkpoint and each resumes
its own state exactly; a checkpoint keyed by the bare class name (before the keys carried
settings) still restores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.lightning.callbacks import (
    ExponentialMovingAverage,
    Lookahead,
    LossConvergence,
    PatienceStopping,
    PrototypeProjection,
    RestoreBest,
    StallDetection,
)

PAIRS = [
    (PatienceStopping(5, monitor="val_loss"), PatienceStopping(5, monitor="train_loss")),
    (PatienceStopping(5), PatienceStopping(6)),
    (PatienceStopping(5), PatienceStopping(5, min_delta=0.1)),
    (RestoreBest("val_loss"), RestoreBest("train_loss")),
    (LossConvergence(1e-6), LossConvergence(1e-6, monitor="val_loss")),
    (LossConvergence(1e-6), LossConvergence(1e-3)),
    (ExponentialMovingAverage(0.9), ExponentialMovingAverage(0.99)),
    (Lookahead(6), Lookahead(5)),
    (Lookahead(6, 0.5), Lookahead(6, 0.8)),
    (PrototypeProjection(every_n_epochs=2), PrototypeProjection(every_n_epochs=3)),
    (StallDetection(after=5), StallDetection(after=6)),
]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=lambda c: c.state_key)
def test_keys_tell_instances_with_different_settings_apart(a, b):
    assert a.state_key != b.state_key
    assert a.state_key.startswith(type(a).__name__ + "{")
    assert type(a)(**_settings(a)).state_key == a.state_key  # same settings: same key


def _settings(callback) -> dict:
    return {name: getattr(callback, name) for name in callback.state_settings}


def blobs(n: int = 120, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return rng.normal(scale=1.5, size=(3, 4))[y] + rng.normal(size=(n, 4)), y


def datamodule() -> ArrayDataModule:
    X, y = blobs()
    return ArrayDataModule(X, y, val_size=0.25, batch_size=16, seed=0, dtype=torch.float64)


def callbacks() -> list:
    return [
        RestoreBest("val_loss"),
        RestoreBest("train_loss"),
        PatienceStopping(50, monitor="val_loss"),
        PatienceStopping(40, monitor="train_loss"),
        LossConvergence(0.0, monitor="val_loss"),
        LossConvergence(0.0, monitor="train_loss"),
    ]


def fit(epochs: int, tmp_path, ckpt_path=None) -> tuple[list, LVQMLN]:
    model = LVQMLN(n_prototypes_per_class=2, lr=0.05, seed=1)
    mine = callbacks()
    save = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(
        max_epochs=epochs, precision="64-true", callbacks=[*mine, save], enable_checkpointing=True
    )
    trainer.fit(model, datamodule(), ckpt_path=ckpt_path, weights_only=True)
    return mine, model


def summary(callback) -> dict:
    state = callback.state_dict()
    return {k: v for k, v in state.items() if k != "best_state"}


def test_two_instances_save_and_resume_their_own_state(tmp_path):
    straight, model = fit(6, tmp_path / "straight")
    saved = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)["callbacks"]
    for callback in straight:  # one entry each, holding that instance's state
        assert summary(callback) == {
            k: v for k, v in saved[callback.state_key].items() if k != "best_state"
        }
    # The two monitors really differ, so a mix-up would show.
    assert straight[0].best_score != straight[1].best_score
    assert straight[2].rule.best != straight[3].rule.best
    assert straight[4].previous != straight[5].previous

    fit(3, tmp_path / "halves")
    resumed, again = fit(6, tmp_path / "halves", ckpt_path=tmp_path / "halves" / "last.ckpt")
    for a, b in zip(straight, resumed, strict=True):
        assert summary(a) == summary(b), a.state_key
    for key, value in straight[0].best_state.items():
        torch.testing.assert_close(resumed[0].best_state[key], value, rtol=0, atol=1e-12)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=1e-12)


def test_a_checkpoint_keyed_by_class_name_still_restores(tmp_path):
    fit(2, tmp_path)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    old = RestoreBest("val_loss")
    checkpoint["callbacks"] = {"RestoreBest": checkpoint["callbacks"][old.state_key]}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    model = LVQMLN(n_prototypes_per_class=2, lr=0.05, seed=1)
    trainer = quiet_trainer(max_epochs=2, precision="64-true", callbacks=[old])
    trainer.fit(model, datamodule(), ckpt_path=tmp_path / "old.ckpt", weights_only=True)
    assert old.best_epoch is not None and old.best_state is not None


def test_stall_detection_resumes_its_progress():
    stall = StallDetection(after=2, min_steps=0)
    stall.rule.record(0.5, 10)
    stall.rule.record(0.4, 20)
    restored = StallDetection(after=2, min_steps=0)
    restored.load_state_dict(stall.state_dict())
    assert restored.state_dict() == stall.state_dict()
    assert (restored.rule.epochs, restored.rule.steps, restored.rule.previous) == (2, 20, 0.4)


OVERRIDE = "will override existing callbacks passed to Trainer"


def test_no_override_message_when_nothing_conflicts(caplog):
    """The module's default callbacks are attached once per Trainer: fit, validate, test,
    predict and fit again on one Trainer replace nothing and say nothing about it."""
    model = LVQMLN(n_prototypes_per_class=2, lr=0.05, ema_decay=0.5, lookahead={"sync_period": 3})
    X, y = blobs()
    data = ArrayDataModule(X, y, val_size=0.2, test_size=0.2, batch_size=16, seed=0)
    trainer = quiet_trainer(max_epochs=1)
    with caplog.at_level("INFO"):
        trainer.fit(model, data)
        trainer.validate(model, data, verbose=False)
        trainer.test(model, data, verbose=False)
        trainer.predict(model, data)
        trainer.fit_loop.max_epochs = 2
        trainer.fit(model, data)
    assert OVERRIDE not in caplog.text
    kinds = [type(c) for c in trainer.callbacks]
    for kind in (StallDetection, ExponentialMovingAverage, Lookahead):
        assert kinds.count(kind) == 1, kind


def test_the_users_stall_detection_is_kept(caplog):
    mine = StallDetection(after=10)
    trainer = quiet_trainer(max_epochs=1, callbacks=[mine])
    with caplog.at_level("INFO"):
        trainer.fit(LVQMLN(lr=0.05), datamodule())
    assert OVERRIDE not in caplog.text
    assert [c for c in trainer.callbacks if isinstance(c, StallDetection)] == [mine]


def test_a_conflicting_callback_is_replaced_and_reported(caplog):
    trainer = quiet_trainer(max_epochs=1, callbacks=[ExponentialMovingAverage(0.9)])
    with caplog.at_level("INFO"):
        trainer.fit(LVQMLN(lr=0.05, ema_decay=0.5), datamodule())
    assert OVERRIDE in caplog.text  # ema_decay=0.5 and a user's EMA(0.9): the model's wins
    assert [c.decay for c in trainer.callbacks if isinstance(c, ExponentialMovingAverage)] == [0.5]
