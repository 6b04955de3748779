"""Training features of issue 4 on real runs: freezing, schedules, EMA, lookahead,
accumulation, mixed and double precision, epsilon / patience stopping, restore-best,
non-finite losses and exact resume from checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch import functional as F
from lvqmln_torch.lightning.callbacks import (
    ExponentialMovingAverage,
    Lookahead,
    LossConvergence,
    RestoreBest,
)
from lvqmln_torch.training.schedules import SCHEDULES, build_schedule

# ---------------------------------------------------------------- helpers


def _trainer(callbacks=(), **kw):
    return quiet_trainer(callbacks=list(callbacks), **{"num_sanity_val_steps": 0, **kw})


def _iris_dm(batch_size=None, val_size=None, seed=0, **kw):
    X, y = load_builtin("iris")
    return ArrayDataModule(
        X, y, test_size=0.3, val_size=val_size, batch_size=batch_size, seed=seed,
        standardize=True, **kw,
    )  # fmt: skip


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _assert_params_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _assert_params_close(a, b, atol=1e-7):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=atol, msg=name)


def _differs(a, b):
    return any(not torch.equal(a[n], b[n]) for n in a)


class Recorder(Callback):
    """Records a run: the parameters before and right after every optimizer step (before
    callbacks attached later, such as Lookahead, touch them), the step losses and learning
    rates, the weights validation runs on, and per-epoch metrics and parameters."""

    def __init__(self):
        self.before, self.after, self.losses, self.lrs, self.batches = [], [], [], [], []
        self.val_params, self.epoch_params, self.epoch_metrics, self.epoch_steps = [], [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before.append(_params(pl_module))
        self.batches.append(tuple(t.clone() for t in batch))
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after.append(_params(pl_module))
        self.losses.append(float(outputs["loss"]))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.val_params.append(_params(pl_module))

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_metrics.append({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.epoch_params.append(_params(pl_module))
        self.epoch_steps.append(len(self.after))


def _manual_ema(start, steps, decay):
    """EMA without bias correction, from the initial weights, one update per optimizer step:
    the arithmetic of ``optax.incremental_update(new, old, 1 - decay)``."""
    ema = {n: t.clone() for n, t in start.items()}
    history = []
    for params in steps:
        for name in ema:
            ema[name] = (1 - (1 - decay)) * ema[name] + (1 - decay) * params[name]
        history.append({n: t.clone() for n, t in ema.items()})
    return history


def _val_loss(module, params, x, y, sample_weight=None):
    """GLVQ loss of ``module``'s architecture with the given parameters."""
    saved = _params(module)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(params[name])
        d = module.distances(module.backbone(x))
        loss = F.glvq_loss(d, y, module.prototype_labels, F.identity, 10.0, 0.0, sample_weight)
        for name, p in module.named_parameters():
            p.copy_(saved[name])
    return float(loss)


# ---------------------------------------------------------------- freezing


@pytest.mark.parametrize(
    ("frozen", "moving"), [("backbone", "prototypes"), ("prototypes", "backbone")]
)
def test_freezing_keeps_frozen_tensors_bit_identical(frozen, moving):
    dm = _iris_dm(batch_size=32)
    model = LVQMLN(freeze=[frozen], seed=0)
    recorder = Recorder()
    _trainer([recorder], max_epochs=5).fit(model, dm)
    start, end = recorder.before[0], _params(model)
    for name in start:
        if name.startswith(frozen):
            assert torch.equal(start[name], end[name]), name
            assert not dict(model.named_parameters())[name].requires_grad
        else:
            assert name.startswith(moving)
    assert any(not torch.equal(start[n], end[n]) for n in start if n.startswith(moving))
    optimized = {id(p) for g in model.trainer.optimizers[0].param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in optimized) == name.startswith(moving), name


def test_freezing_survives_weight_decay_ema_lookahead_and_bb_lr():
    dm = _iris_dm(batch_size=32, val_size=0.2)
    model = LVQMLN(
        freeze=["backbone"],
        optimizer="adamw",
        optimizer_kwargs={"weight_decay": 0.5},
        bb_lr=0.1,
        ema_decay=0.9,
        lookahead={"sync_period": 3, "slow_step_size": 0.5},
        lr_scheduler="cosine_decay",
        seed=0,
    )
    recorder = Recorder()
    _trainer([recorder], max_epochs=4).fit(model, dm)
    start, end = recorder.before[0], _params(model)
    for name in start:
        if name.startswith("backbone"):
            assert torch.equal(start[name], end[name]), name
    assert not torch.equal(start["prototypes"], end["prototypes"])
    assert [g["name"] for g in model.trainer.optimizers[0].param_groups] == ["prototypes"]


def test_freezing_everything_is_a_clear_error():
    with pytest.raises(ValueError, match="freeze covers every parameter"):
        _trainer(max_epochs=1).fit(LVQMLN(freeze=["backbone", "prototypes"]), _iris_dm())


# ---------------------------------------------------------------- learning-rate schedules

SCHEDULE_KWARGS = {
    "piecewise_constant": {"boundaries_and_scales": {4: 0.5, 9: 0.1}},
    "warmup_cosine_decay": {"warmup_steps": 3},
    "warmup_exponential_decay": {"warmup_steps": 3, "decay_rate": 0.9},
    "warmup_constant": {"warmup_steps": 5},
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_follows_build_schedule_per_optimizer_step(name):
    dm = _iris_dm(batch_size=32)  # 105 training samples: 4 batches per epoch
    kwargs = SCHEDULE_KWARGS.get(name)
    model = LVQMLN(lr=0.02, lr_scheduler=name, lr_scheduler_kwargs=kwargs, seed=0)
    recorder = Recorder()
    trainer = _trainer([recorder], max_epochs=3)
    trainer.fit(model, dm)
    total = 12
    assert trainer.global_step == total
    schedule = build_schedule(name, 0.02, total, kwargs)  # default horizon: the run's steps
    # lr == bb_lr: one parameter group over the prototypes and the backbone
    assert [g["name"] for g in trainer.optimizers[0].param_groups] == ["all"]
    for step, lrs in enumerate(recorder.lrs):
        assert lrs == [pytest.approx(schedule(step), rel=1e-12, abs=1e-15)], step
    final = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert final == [pytest.approx(schedule(total), rel=1e-12, abs=1e-15)]
    assert len({round(lr[0], 12) for lr in recorder.lrs}) > 1  # the schedule did change the lr


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rmsprop"])
def test_schedule_with_other_optimizers_and_bb_lr(optimizer):
    dm = _iris_dm(batch_size=32)
    model = LVQMLN(
        optimizer=optimizer,
        lr=0.05,
        bb_lr=0.005,
        lr_scheduler="warmup_cosine_decay",
        lr_scheduler_kwargs={"warmup_steps": 4},
        seed=0,
    )
    recorder = Recorder()
    trainer = _trainer([recorder], max_epochs=5)
    trainer.fit(model, dm)
    optimizer_obj = trainer.optimizers[0]
    assert type(optimizer_obj).__name__.lower() == optimizer
    assert [g["name"] for g in optimizer_obj.param_groups] == ["prototypes", "backbone"]
    protos = build_schedule("warmup_cosine_decay", 0.05, 20, {"warmup_steps": 4})
    backbone = build_schedule("warmup_cosine_decay", 0.005, 20, {"warmup_steps": 4})
    for step, lrs in enumerate(recorder.lrs):
        assert lrs == [pytest.approx(protos(step)), pytest.approx(backbone(step))]
    assert [g["lr"] for g in optimizer_obj.param_groups] == [
        pytest.approx(protos(20), abs=1e-15),
        pytest.approx(backbone(20), abs=1e-15),
    ]
    assert _differs(recorder.before[0], _params(model))


def test_schedule_horizon_counts_optimizer_steps_under_accumulation():
    dm = _iris_dm(batch_size=16)  # 7 batches per epoch; with accumulation 2: 4 steps
    model = LVQMLN(lr_scheduler="linear", seed=0)
    trainer = _trainer(max_epochs=3, accumulate_grad_batches=2)
    trainer.fit(model, dm)
    assert trainer.global_step == 12
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------- EMA and lookahead


def test_ema_validates_on_ema_weights_and_ends_on_them():
    decay = 0.8
    dm = _iris_dm(batch_size=32, val_size=0.2)
    model = LVQMLN(ema_decay=decay, lr=0.05, seed=0)
    recorder = Recorder()
    _trainer([recorder], max_epochs=4).fit(model, dm)
    assert any(isinstance(c, ExponentialMovingAverage) for c in model.trainer.callbacks)
    ema = _manual_ema(recorder.before[0], recorder.after, decay)
    # Training continues from the raw weights (validation swaps back).
    for k in range(1, len(recorder.before)):
        _assert_params_equal(recorder.before[k], recorder.after[k - 1])
    # Validation runs on the EMA weights, and its logged loss is theirs.
    x_val, y_val = dm._tensors["val"][:2]
    for epoch, steps in enumerate(recorder.epoch_steps):
        expected = ema[steps - 1]
        _assert_params_close(recorder.val_params[epoch], expected)
        assert recorder.epoch_metrics[epoch]["val_loss"] == pytest.approx(
            _val_loss(model, expected, x_val, y_val), abs=1e-5
        )
        assert _differs(recorder.val_params[epoch], recorder.after[steps - 1])
    # The fitted model ends on the EMA weights, not on the raw ones.
    _assert_params_close(_params(model), ema[-1])
    assert _differs(_params(model), recorder.after[-1])


def test_lookahead_syncs_every_k_steps_validates_and_ends_on_slow_weights():
    sync, alpha = 5, 0.5
    dm = _iris_dm(batch_size=32, val_size=0.2)  # 84 training samples: 3 steps per epoch
    model = LVQMLN(lookahead={"sync_period": sync, "slow_step_size": alpha}, lr=0.05, seed=0)
    recorder = Recorder()
    trainer = _trainer([recorder], max_epochs=5, max_steps=14)  # ends between two syncs
    trainer.fit(model, dm)
    assert trainer.global_step == 14
    slow, slow_after = recorder.before[0], []
    for k, fast in enumerate(recorder.after):
        step = k + 1
        if step % sync == 0:
            slow = {n: slow[n] + alpha * (fast[n] - slow[n]) for n in slow}
            expected_next = slow
        else:
            expected_next = fast
        slow_after.append(slow)
        if k + 1 < len(recorder.before):
            _assert_params_close(recorder.before[k + 1], expected_next)
    # Validation runs on the slow weights of that moment (epoch 0 ends before any sync).
    assert len(recorder.val_params) >= 4
    for val_params, steps in zip(recorder.val_params, recorder.epoch_steps):
        _assert_params_close(val_params, slow_after[steps - 1])
    _assert_params_close(_params(model), slow)
    assert _differs(_params(model), recorder.after[-1])  # not the last fast weights


def test_callbacks_passed_to_the_trainer_equal_the_constructor_arguments():
    def run(model, callbacks):
        _trainer(callbacks, max_epochs=3).fit(model, _iris_dm(batch_size=32, val_size=0.2))
        return _params(model)

    via_args = run(LVQMLN(ema_decay=0.8, lr=0.05, seed=0), [])
    via_trainer = run(LVQMLN(lr=0.05, seed=0), [ExponentialMovingAverage(0.8)])
    _assert_params_equal(via_args, via_trainer)
    lookahead = {"sync_period": 4, "slow_step_size": 0.3}
    via_args = run(LVQMLN(lookahead=lookahead, lr=0.05, seed=0), [])
    via_trainer = run(LVQMLN(lr=0.05, seed=0), [Lookahead(**lookahead)])
    _assert_params_equal(via_args, via_trainer)


def test_lookahead_with_ema_ends_on_ema():
    dm = _iris_dm(batch_size=32)
    model = LVQMLN(ema_decay=0.7, lookahead={"sync_period": 3, "slow_step_size": 0.5}, seed=0)
    recorder = Recorder()
    _trainer([recorder], max_epochs=3).fit(model, dm)
    callbacks = [type(c) for c in model.trainer.callbacks]
    assert Lookahead in callbacks and ExponentialMovingAverage in callbacks
    # The EMA follows the weights after each step including lookahead's syncs: rebuild the
    # post-sync weights from the next step's starting point.
    post = [recorder.before[k + 1] for k in range(len(recorder.after) - 1)]
    post.append(_lookahead_post_last(recorder, sync=3, alpha=0.5))
    ema = _manual_ema(recorder.before[0], post, 0.7)
    _assert_params_close(_params(model), ema[-1])


def _lookahead_post_last(recorder, sync, alpha):
    slow = recorder.before[0]
    fast = recorder.after[0]
    for k, fast in enumerate(recorder.after):
        if (k + 1) % sync == 0:
            slow = {n: slow[n] + alpha * (fast[n] - slow[n]) for n in slow}
            fast = slow
    return fast


# ---------------------------------------------------------------- accumulation


def test_accumulation_in_full_batch_mode_is_a_clear_error():
    model = LVQMLN(seed=0)
    with pytest.raises(ValueError, match="gradient accumulation needs mini-batches.*batch_size"):
        _trainer(max_epochs=2, accumulate_grad_batches=2).fit(model, _iris_dm())


def test_accumulation_with_mini_batches_steps_every_k_batches():
    recorder = Recorder()
    model = LVQMLN(seed=0, lr=0.05)
    trainer = _trainer([recorder], max_epochs=30, accumulate_grad_batches=3)
    trainer.fit(model, _iris_dm(batch_size=16))  # 7 batches: steps after 3, 6 and 7
    assert trainer.global_step == 30 * 3
    # No step between the batches of one accumulation window.
    _assert_params_equal(recorder.before[1], recorder.before[0])
    _assert_params_equal(recorder.before[2], recorder.before[0])
    assert _differs(recorder.before[3], recorder.before[0])
    (metrics,) = trainer.test(model, model.trainer.datamodule, verbose=False)
    assert metrics["test_acc"] >= 0.9


# ---------------------------------------------------------------- precision


def test_bf16_mixed_on_cpu_reaches_the_iris_threshold():
    dm = _iris_dm()
    model = LVQMLN(seed=0)
    recorder = Recorder()
    trainer = _trainer([recorder], max_epochs=300, precision="bf16-mixed")
    trainer.fit(model, dm)
    (metrics,) = trainer.test(model, dm, verbose=False)
    assert metrics["test_acc"] >= 0.93
    assert model.prototypes.dtype == torch.float32  # master weights stay float32


def test_bf16_mixed_computes_distances_and_loss_in_float32():
    dm = _iris_dm()
    model = LVQMLN(seed=0)
    seen = {}

    class Check(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["loss"] = outputs["loss"].dtype
            with torch.autocast("cpu", dtype=torch.bfloat16):
                z = pl_module.backbone(batch[0])
                seen["latent"] = z.dtype
                seen["distances"] = pl_module.distances(z).dtype

    _trainer([Check()], max_epochs=1, precision="bf16-mixed").fit(model, dm)
    assert seen == {"loss": torch.float32, "latent": torch.bfloat16, "distances": torch.float32}


def test_float64_end_to_end():
    dm = _iris_dm(dtype=torch.float64)
    model = LVQMLN(seed=0)
    trainer = _trainer(max_epochs=300, precision="64-true")
    trainer.fit(model, dm)
    assert model.prototypes.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in model.parameters())
    (metrics,) = trainer.test(model, dm, verbose=False)
    assert metrics["test_acc"] >= 0.93
    x_test = dm._tensors["test"][0]
    assert model.predict_proba(x_test).dtype == torch.float64
    assert model.transform(x_test).dtype == torch.float64


# ---------------------------------------------------------------- epsilon, patience, restore-best


@pytest.mark.parametrize(
    ("batch_size", "val_size", "monitor", "key"),
    [(None, None, "train_loss", "train_loss"), (32, None, "train_loss", "train_loss"),
     (32, 0.3, "auto", "val_loss")],
)  # fmt: skip
def test_epsilon_stops_at_the_first_small_loss_change(batch_size, val_size, monitor, key):
    epsilon = 2e-3
    recorder = Recorder()
    convergence = LossConvergence(epsilon=epsilon, monitor=monitor)
    trainer = _trainer([recorder, convergence], max_epochs=300)
    trainer.fit(LVQMLN(seed=0), _iris_dm(batch_size=batch_size, val_size=val_size))
    losses = [m[key] for m in recorder.epoch_metrics]
    changes = [abs(b - a) for a, b in zip(losses, losses[1:])]
    expected = next(e + 1 for e, change in enumerate(changes) if change < epsilon)
    assert 1 <= expected < 299  # the test must stop early to mean anything
    assert convergence.stopped_epoch == expected
    assert len(losses) == expected + 1  # no epoch ran after the stop epoch


def _patience_stop(history, patience, min_delta):
    """Standard early stopping: an improvement is a value below best - min_delta; stop after
    ``patience`` epochs without one. Returns the stop epoch or None."""
    best, wait = math.inf, 0
    for epoch, value in enumerate(history):
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


@pytest.mark.parametrize(
    ("monitor", "val_size", "patience", "min_delta"),
    [("val_loss", 0.3, 3, 1e-3), ("train_loss", None, 2, 5e-3)],
)
def test_patience_matches_standard_semantics(monitor, val_size, patience, min_delta):
    recorder = Recorder()
    stopper = EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta)
    trainer = _trainer([recorder, stopper], max_epochs=300)
    trainer.fit(LVQMLN(lr=0.05, seed=0), _iris_dm(batch_size=16, val_size=val_size))
    history = [m[monitor] for m in recorder.epoch_metrics]
    expected = _patience_stop(history, patience, min_delta)
    assert expected is not None and expected < 299
    assert stopper.stopped_epoch == expected
    assert len(history) == expected + 1


@pytest.mark.parametrize("val_size", [0.3, None])
def test_restore_best_ends_on_the_best_epoch(val_size):
    monitor = "val_loss" if val_size else "train_loss"
    recorder = Recorder()
    restore = RestoreBest()
    trainer = _trainer([recorder, restore], max_epochs=25)
    trainer.fit(LVQMLN(lr=0.2, seed=0), _iris_dm(batch_size=16, val_size=val_size))
    history = [m[monitor] for m in recorder.epoch_metrics]
    best = int(np.argmin(history))
    assert best < len(history) - 1  # a later epoch was worse: restoring means something
    assert restore.best_epoch == best
    _assert_params_equal(_params(trainer.lightning_module), recorder.epoch_params[best])
    assert _differs(recorder.epoch_params[-1], recorder.epoch_params[best])


def test_restore_best_with_ema_restores_the_ema_weights_of_the_best_epoch():
    decay = 0.5
    recorder = Recorder()
    restore = RestoreBest()
    model = LVQMLN(lr=0.2, ema_decay=decay, seed=0)
    trainer = _trainer([recorder, restore], max_epochs=25)
    trainer.fit(model, _iris_dm(batch_size=16, val_size=0.3))
    history = [m["val_loss"] for m in recorder.epoch_metrics]
    best = int(np.argmin(history))
    assert best < len(history) - 1
    ema = _manual_ema(recorder.before[0], recorder.after, decay)
    expected = ema[recorder.epoch_steps[best] - 1]
    _assert_params_close(recorder.val_params[best], expected)  # val_loss was the EMA's
    _assert_params_close(_params(model), expected)


def test_restore_best_with_an_unlogged_monitor_explains():
    with pytest.raises(KeyError, match="RestoreBest monitors 'val_acc' but it was not logged"):
        _trainer([RestoreBest(monitor="val_acc")], max_epochs=1).fit(LVQMLN(), _iris_dm())


# ---------------------------------------------------------------- class weights


def test_class_weights_are_loss_weights_per_step_and_per_epoch():
    X, y = load_builtin("iris")
    keep = np.r_[0:50, 50:70, 100:110]  # imbalanced: 50 / 20 / 10
    dm = ArrayDataModule(
        X[keep], y[keep], class_weight="balanced", batch_size=16, standardize=True, seed=0
    )
    recorder = Recorder()
    model = LVQMLN(lr=0.05, seed=0)
    _trainer([recorder], max_epochs=3).fit(model, dm)
    weighted_sum = unweighted = 0.0
    epoch_end = recorder.epoch_steps[0]
    for k in range(epoch_end):
        x, y_idx, w = recorder.batches[k]
        assert torch.allclose(w, (80 / (3 * torch.tensor([50.0, 20.0, 10.0])))[y_idx])
        step_loss = _val_loss(model, recorder.before[k], x, y_idx, w)
        assert recorder.losses[k] == pytest.approx(step_loss, abs=1e-6)
        weighted_sum += step_loss * float(w.sum())
        unweighted += _val_loss(model, recorder.before[k], x, y_idx) * len(y_idx)
    # The epoch loss is the per-sample weighted mean: sum(w_i f_i) / sum(w_i).
    epoch_loss = weighted_sum / 80.0  # balanced weights sum to n
    assert recorder.epoch_metrics[0]["train_loss"] == pytest.approx(epoch_loss, abs=1e-6)
    assert abs(epoch_loss - unweighted / 80) > 1e-3  # the weights did change the loss


# ---------------------------------------------------------------- non-finite losses


def test_exploding_learning_rate_raises_floating_point_error_naming_the_step():
    recorder = Recorder()
    model = LVQMLN(lr=1e30, seed=0)
    with pytest.raises(FloatingPointError, match="non-finite") as info:
        _trainer([recorder], max_epochs=20).fit(model, _iris_dm(batch_size=32))
    first_bad = next(k for k, loss in enumerate(recorder.losses) if not math.isfinite(loss))
    assert f"optimizer step {first_bad}" in str(info.value)
    assert f"(epoch {first_bad // 4})" in str(info.value)


def test_batch_with_huge_values_raises_floating_point_error_naming_the_step():
    X, y = load_builtin("iris")
    X = (X - X.mean(0)) / X.std(0)
    X[100] = 3e38  # finite in float32, but its activations overflow
    order = np.r_[0:50, 100, 50:100, 101:150]  # the huge sample lands in the second batch
    x = torch.tensor(X[order], dtype=torch.float32)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.tensor(y[order])), batch_size=50
    )
    model = LVQMLN(in_features=4, n_classes=3, activation="relu", latent_activation=False)
    recorder = Recorder()
    with pytest.raises(FloatingPointError, match="optimizer step 1 \\(epoch 0\\)"):
        _trainer([recorder], max_epochs=3).fit(model, loader)
    assert math.isfinite(recorder.losses[0]) and not math.isfinite(recorder.losses[1])


# ---------------------------------------------------------------- resume

RESUME_CASES = {
    "adam": {},
    "scheduler": {
        "lr_scheduler": "warmup_cosine_decay",
        "lr_scheduler_kwargs": {"warmup_steps": 5},
    },
    "ema": {"ema_decay": 0.8},
    "lookahead": {"lookahead": {"sync_period": 5, "slow_step_size": 0.5}},
    "bb_lr_sgd_momentum": {
        "optimizer": "sgd",
        "optimizer_kwargs": {"momentum": 0.9},
        "bb_lr": 0.05,
    },
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_from_a_checkpoint_continues_exactly(case, tmp_path):
    n_epochs = 6
    kwargs = dict(RESUME_CASES[case], lr=0.05, seed=0)

    def dm():
        return _iris_dm(batch_size=32, val_size=0.2, seed=3)  # shuffled mini-batches

    checkpoints = ModelCheckpoint(
        dirpath=tmp_path, filename="{epoch}", every_n_epochs=1, save_top_k=-1, save_last=True
    )
    full = LVQMLN(**kwargs)
    trainer = _trainer([checkpoints], max_epochs=n_epochs, enable_checkpointing=True)
    trainer.fit(full, dm())
    middle = tmp_path / f"epoch={n_epochs // 2 - 1}.ckpt"
    assert middle.exists() and (tmp_path / "last.ckpt").exists()

    raw = torch.load(middle, weights_only=True)  # primitives and tensors only
    assert raw["epoch"] == n_epochs // 2 - 1

    resumed = LVQMLN(**kwargs)
    trainer2 = _trainer(max_epochs=n_epochs)
    trainer2.fit(resumed, dm(), ckpt_path=middle, weights_only=True)
    assert trainer2.global_step == trainer.global_step
    _assert_params_equal(_params(resumed), _params(full))
    assert torch.equal(resumed.prototype_labels, full.prototype_labels)

    # The last checkpoint reloads (weights only) into the fitted model's predictions.
    loaded = LVQMLN.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    x = dm()._tensors["test"][0]
    np.testing.assert_array_equal(loaded.predict(x), full.predict(x))
    assert torch.equal(loaded.predict_proba(x), full.predict_proba(x))


def test_resume_differs_from_a_fresh_start(tmp_path):
    """Guard for the resume test: restarting without the checkpoint gives other weights."""
    dm = _iris_dm(batch_size=32, seed=3)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    full = LVQMLN(lr=0.05, seed=0)
    _trainer([checkpoints], max_epochs=4, enable_checkpointing=True).fit(full, dm)
    fresh = LVQMLN(lr=0.05, seed=0)
    _trainer(max_epochs=2).fit(fresh, _iris_dm(batch_size=32, seed=3))
    assert _differs(_params(fresh), _params(full))
