"""Trajectory parity: Lightning (``LVQMLN`` + ``Trainer``) and the JAX reference
(``lvqmln_jax_ref.train``) started from the same parameters and fed the same batches take the
same steps: per-step losses, the learning rate of every group at every step and the final
parameters agree to 1e-10 in float64 (1e-4 in float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _parity_utils import (
    assert_params_close,
    assert_trajectory,
    batch_order,
    blobs,
    final_params,
    fit,
    images,
    leaves,
    reference,
    setup_run,
)

TOL = 1e-10


def _parity(
    X,
    y,
    *,
    epochs,
    batch_size=None,
    shuffle=True,
    trainer_kwargs=None,
    ref_kwargs=None,
    **run_kwargs,
):
    run = setup_run(X, y, batch_size=batch_size, shuffle=shuffle, **run_kwargs)
    fit(run, epochs, **(trainer_kwargs or {}))
    order = batch_order(len(X), batch_size, shuffle, run.datamodule.seed, epochs)
    ref = reference(run, order, **(ref_kwargs or {}))
    assert_trajectory(run, ref, TOL)
    return run, ref


def test_full_batch_adam_100_steps():
    X, y = blobs(n=30)
    run, ref = _parity(X, y, epochs=100, hidden_sizes=[5], lr=0.05)
    assert len(ref["losses"]) == 100
    # the run is not trivial: the loss fell and every tensor moved
    assert ref["losses"][-1] < ref["losses"][0] - 0.1
    assert not np.allclose(run.init_params["prototypes"], ref["params"]["prototypes"], atol=1e-3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mini_batch_shuffled_uneven_last_batch(optimizer):
    X, y = blobs(n=30)  # batches 8, 8, 8, 6
    run, ref = _parity(
        X,
        y,
        epochs=3,
        batch_size=8,
        optimizer=optimizer,
        lr=0.2 if optimizer == "sgd" else 0.05,
        hidden_sizes=[5],
    )
    assert len(ref["losses"]) == 12
    assert [len(b) for b in batch_order(30, 8, True, run.datamodule.seed, 1)] == [8, 8, 8, 6]


def test_bb_lr_and_several_prototypes_per_class():
    X, y = blobs(n=36)
    _parity(
        X,
        y,
        epochs=4,
        batch_size=12,
        per_class=3,
        n_prototypes_per_class=3,
        lr=0.03,
        bb_lr=0.1,
        hidden_sizes=[5],
    )


@pytest.mark.parametrize("transfer", ["sigmoid_beta", "swish_beta"])
def test_transfer_with_margin(transfer):
    X, y = blobs(n=24)
    _parity(X, y, epochs=12, transfer=transfer, beta=3.0, margin=0.1, lr=0.05, hidden_sizes=[5])


def test_cnn_mini_batch():
    X, y = images(n=24)
    _parity(
        X,
        y,
        epochs=3,
        batch_size=8,
        channels=[3],
        kernel_sizes=[3],
        latent_dim=2,
        activation="relu",
        latent_activation=False,
        lr=0.05,
    )


# Keyword arguments chosen so each schedule changes within the 16 steps of the run.
SCHEDULE_CASES = {
    "exponential_decay": {"decay_rate": 0.8},
    "cosine_decay": None,
    "warmup_cosine_decay": {"warmup_steps": 4},
    "warmup_exponential_decay": {"warmup_steps": 4, "gamma": 0.85},
    "warmup_constant": {"warmup_steps": 5, "init_value": 0.01},
    "polynomial": {"power": 2.0, "end_value": 0.001},
    "linear": {"transition_steps": 10, "end_value": 0.005},
    "piecewise_constant": {"boundaries_and_scales": {"5": 0.5, "11": 0.2}},
    "sgdr": {
        "cosine_kwargs": [
            {
                "init_value": 0.0,
                "peak_value": 0.08,
                "warmup_steps": 2,
                "decay_steps": 8,
                "end_value": 0.002,
            },
            {
                "init_value": 0.002,
                "peak_value": 0.04,
                "warmup_steps": 2,
                "decay_steps": 8,
                "end_value": 0.0,
            },
        ]
    },
}


@pytest.mark.parametrize("name", list(SCHEDULE_CASES))
def test_schedule(name):
    X, y = blobs(n=32)
    run, ref = _parity(
        X,
        y,
        epochs=4,
        batch_size=8,
        lr=0.08,
        bb_lr=0.04,
        lr_scheduler=name,
        lr_scheduler_kwargs=SCHEDULE_CASES[name],
        hidden_sizes=[5],
    )
    lrs = run.recorder.lr_matrix(["prototypes", "backbone"])
    assert lrs.shape == (16, 2)
    assert np.ptp(lrs[:, 0]) > 1e-3  # the schedule really changes the learning rate


def test_ema_final_weights_are_the_average():
    X, y = blobs(n=24)
    run, ref = _parity(X, y, epochs=3, batch_size=8, ema_decay=0.7, lr=0.1, hidden_sizes=[5])
    # ends on the EMA, not on the raw weights of the last step
    raw = run.recorder.last_raw_prototypes
    assert not np.allclose(raw, ref["params"]["prototypes"], atol=1e-4)


def test_lookahead_final_weights_are_the_slow_ones():
    X, y = blobs(n=24)
    # 14 steps, sync every 4: the run ends two steps after the last sync
    run, ref = _parity(
        X,
        y,
        epochs=14,
        lookahead={"sync_period": 4, "slow_step_size": 0.5},
        lr=0.05,
        hidden_sizes=[5],
    )
    fast = run.recorder.last_raw_prototypes
    assert not np.allclose(fast, ref["params"]["prototypes"], atol=1e-4)


def test_lookahead_with_ema():
    X, y = blobs(n=24)
    _parity(
        X,
        y,
        epochs=3,
        batch_size=6,
        lookahead={"sync_period": 3, "slow_step_size": 0.4},
        ema_decay=0.8,
        lr=0.05,
        hidden_sizes=[5],
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_gradient_accumulation(optimizer):
    X, y = blobs(n=36)  # 6 equal batches per epoch, an update every 3
    run, ref = _parity(
        X,
        y,
        epochs=3,
        batch_size=6,
        optimizer=optimizer,
        lr=0.1,
        hidden_sizes=[5],
        trainer_kwargs={"accumulate_grad_batches": 3},
        ref_kwargs={"accumulation_steps": 3},
    )
    assert len(run.recorder.losses) == 18 and len(run.recorder.lrs) == 6


def test_weighted_loss_sample_and_balanced_class_weights():
    X, y = blobs(n=40)
    y = np.where(np.arange(40) < 28, y, 0)  # imbalanced classes
    w = np.random.default_rng(3).uniform(0.2, 2.0, size=40)
    counts = np.bincount(y)
    expected_w = w * (len(y) / (len(counts) * counts))[y]  # 'balanced' times sample weights
    run, ref = _parity(
        X,
        y,
        epochs=3,
        batch_size=10,
        sample_weight=w,
        class_weight="balanced",
        lr=0.05,
        hidden_sizes=[5],
        ref_kwargs={"sample_weight": expected_w},
    )
    # by hand: the first step's loss is the weighted mean, not the plain one
    first = batch_order(40, 10, True, run.datamodule.seed, 1)[0]
    z = run.X_ref[first]
    for weight, bias in run.init_params["backbone"]:
        z = 1.0 / (1.0 + np.exp(-(z @ weight + bias)))
    distances = ((z[:, None, :] - run.init_params["prototypes"][None]) ** 2).sum(-1)
    same = y[first][:, None] == run.prototype_labels[None, :]
    d_plus = np.where(same, distances, np.inf).min(1)
    d_minus = np.where(same, np.inf, distances).min(1)
    mu = (d_plus - d_minus) / (d_plus + d_minus + 1e-10)
    w_first = expected_w[first]
    np.testing.assert_allclose(run.recorder.losses[0], (w_first * mu).sum() / w_first.sum())
    assert abs(mu.mean() - run.recorder.losses[0]) > 1e-3


def test_bb_lr_with_schedule_and_accumulation():
    X, y = blobs(n=32)
    _parity(
        X,
        y,
        epochs=3,
        batch_size=8,
        lr=0.05,
        bb_lr=0.15,
        lr_scheduler="warmup_cosine_decay",
        lr_scheduler_kwargs={"warmup_steps": 2},
        hidden_sizes=[5],
        trainer_kwargs={"accumulate_grad_batches": 2},
        ref_kwargs={"accumulation_steps": 2},
    )


@pytest.mark.parametrize("frozen", ["backbone", "prototypes"])
def test_freezing_is_bit_identical(frozen):
    X, y = blobs(n=24)
    run, ref = _parity(
        X,
        y,
        epochs=3,
        batch_size=8,
        freeze=[frozen],
        lr=0.05,
        lr_scheduler="cosine_decay",
        hidden_sizes=[5],
    )
    got, start = final_params(run.model), run.init_params
    for a, b, c in zip(*(leaves(t[frozen]) for t in (got, ref["params"], start))):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    other = "prototypes" if frozen == "backbone" else "backbone"
    assert any(not np.allclose(a, c) for a, c in zip(leaves(got[other]), leaves(start[other])))


def test_float32_default_precision():
    X, y = blobs(n=30)
    run = setup_run(X, y, dtype=torch.float32, hidden_sizes=[5], lr=0.05)
    fit(run, 40, precision="32-true")
    assert run.model.prototypes.dtype == torch.float32
    ref = reference(run, batch_order(30, None, True, run.datamodule.seed, 40))
    np.testing.assert_allclose(run.recorder.losses, ref["losses"], rtol=1e-4, atol=1e-4)
    assert_params_close(final_params(run.model), ref["params"], 1e-4)
