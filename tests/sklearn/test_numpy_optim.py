"""The numpy engine's optimizer rules against torch's optimizers, step for step."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _paths import ROOT

from lvqmln_torch.sklearn.numpy_optim import (
    NUMPY_OPTIMIZERS,
    NumpyOptimizer,
    check_numpy_optimizer_kwargs,
)
from lvqmln_torch.training.optimizers import OPTIMIZERS
from lvqmln_torch.training.schedules import ScheduleLR, build_schedule

# Every optimizer with its defaults, then every option its rule implements.
CASES: list[tuple[str, dict]] = [(name, {}) for name in OPTIMIZERS] + [
    ("adam", {"weight_decay": 0.1}),
    ("adam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adam", {"amsgrad": True, "betas": (0.8, 0.9), "eps": 1e-3}),
    ("adam", {"maximize": True, "foreach": True}),
    ("adamw", {"weight_decay": 0.3, "amsgrad": True}),
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    ("sgd", {"momentum": 0.8, "nesterov": True, "maximize": True}),
    ("rmsprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.1, "alpha": 0.9}),
    ("rmsprop", {"centered": True}),
    ("adagrad", {"lr_decay": 0.1, "weight_decay": 0.01, "initial_accumulator_value": 0.5}),
    ("adadelta", {"rho": 0.5, "eps": 1e-3, "weight_decay": 0.1, "maximize": True}),
    ("adamax", {"weight_decay": 0.1, "betas": (0.5, 0.9)}),
    ("nadam", {"weight_decay": 0.1, "momentum_decay": 0.1}),
    ("nadam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("radam", {"weight_decay": 0.1}),
    ("radam", {"weight_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.9, 0.9)}),
    ("asgd", {"lambd": 0.5, "alpha": 0.5, "t0": 3, "weight_decay": 0.1}),
    ("rprop", {"etas": (0.3, 1.5), "step_sizes": (1e-3, 0.05)}),
]
SHAPES = [(3, 4), (5,)]
STEPS = 15
# Float64: different operation fusion only (torch's CPU kernels fuse multiply-adds).
TOLERANCE = {np.float64: {"rtol": 1e-12, "atol": 1e-13}, np.float32: {"rtol": 2e-5, "atol": 2e-6}}


def _gradients(rng: np.random.Generator, step: int, dtype: type) -> list[np.ndarray]:
    grads = [rng.normal(size=shape).astype(dtype) for shape in SHAPES]
    grads[0][0, step % 4] = 0.0  # zeros, where sign-based rules (Rprop) branch
    if step % 5 == 4:
        grads[1] *= 1e3  # a large step, to move the Adam-family maxima
    return grads


def _run_both(name, kwargs, dtype, lrs, schedule=None):
    """Yield torch's and the NumPy rule's parameters after every step."""
    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype(dtype) for shape in SHAPES]
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in start]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    optimizer = OPTIMIZERS[name](groups, **kwargs)
    ours_params = [p.copy() for p in start]
    ours_grads = [np.zeros_like(p) for p in start]
    ours = NumpyOptimizer(name, ours_params, ours_grads, lrs, kwargs)
    schedules = None
    scheduler = None
    if schedule is not None:
        schedules = [build_schedule(schedule, lr, STEPS) for lr in lrs]
        scheduler = ScheduleLR(optimizer, schedules)
    for step in range(STEPS):
        grads = _gradients(rng, step, dtype)
        for param, grad in zip(params, grads):
            param.grad = torch.from_numpy(grad.copy())
        for buffer, grad in zip(ours_grads, grads):
            buffer[...] = grad
        if schedules is not None:
            ours.lrs = [s(step) for s in schedules]
            assert ours.lrs == pytest.approx([g["lr"] for g in optimizer.param_groups], rel=1e-15)
        optimizer.step()
        ours.step()
        if scheduler is not None:
            scheduler.step()
        yield [p.detach().numpy() for p in params], ours_params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}{k}" for n, k in CASES])
def test_numpy_rule_follows_torch_step_for_step(name, kwargs, dtype):
    lrs = [1.0, 0.5] if name == "adadelta" else [0.05, 0.01]  # two groups, two rates
    moved = False
    for step, (expected, got) in enumerate(_run_both(name, kwargs, dtype, lrs)):
        for e, g in zip(expected, got):
            assert g.dtype == e.dtype == dtype
            np.testing.assert_allclose(g, e, **TOLERANCE[dtype], err_msg=f"step {step}")
        moved = True
    assert moved


@pytest.mark.parametrize("schedule", ["warmup_cosine_decay", "exponential_decay", "sgdr"])
@pytest.mark.parametrize("name", ["adam", "sgd", "rprop", "asgd"])
def test_numpy_rule_follows_a_scheduled_torch_optimizer(name, schedule):
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    for expected, got in _run_both(name, kwargs, np.float64, [0.05, 0.01], schedule):
        for e, g in zip(expected, got):
            np.testing.assert_allclose(g, e, **TOLERANCE[np.float64])


@pytest.mark.parametrize("name", ["nadam", "asgd", "adam"])
def test_state_scalars_follow_torchs_default_dtype(name):
    # NAdam's μ product and ASGD's η are 0-dim tensors of torch's default float dtype.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rng = np.random.default_rng(1)
        p = rng.normal(size=50)
        tp = torch.nn.Parameter(torch.from_numpy(p.copy()))
        optimizer = OPTIMIZERS[name]([tp], lr=0.05, weight_decay=0.1)
        grad = np.zeros_like(p)
        ours = NumpyOptimizer(name, [p], [grad], [0.05], {"weight_decay": 0.1}, np.float64)
        for _ in range(20):
            grad[...] = rng.normal(size=50)
            tp.grad = torch.from_numpy(grad.copy())
            optimizer.step()
            ours.step()
        np.testing.assert_allclose(p, tp.detach().numpy(), **TOLERANCE[np.float64])
    finally:
        torch.set_default_dtype(previous)


_IMPLEMENTATION = {"params", "lr", "foreach", "fused", "capturable", "differentiable", "self"}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_rule_defaults_are_torchs(name):
    signature = inspect.signature(OPTIMIZERS[name].__init__).parameters
    torch_defaults = {k: v.default for k, v in signature.items() if k not in _IMPLEMENTATION}
    assert NUMPY_OPTIMIZERS[name].defaults == torch_defaults


BAD = [
    ("adam", {"betas": (1.0, 0.9)}),
    ("adam", {"eps": -1.0}),
    ("adamw", {"weight_decay": -0.1}),
    ("sgd", {"nesterov": True}),
    ("sgd", {"momentum": -0.5}),
    ("rmsprop", {"alpha": -0.1}),
    ("adagrad", {"initial_accumulator_value": -1.0}),
    ("adadelta", {"rho": 1.5}),
    ("nadam", {"momentum_decay": -1.0}),
    ("rprop", {"etas": (1.5, 2.0)}),
]


@pytest.mark.parametrize(("name", "kwargs"), BAD, ids=[f"{n}{k}" for n, k in BAD])
def test_bad_settings_fail_with_torchs_message(name, kwargs):
    with pytest.raises(ValueError) as torch_error:
        OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(ValueError) as ours:
        NumpyOptimizer(name, [np.zeros(2)], [np.zeros(2)], [0.01], kwargs)
    assert str(ours.value) == str(torch_error.value)


def test_negative_learning_rate_and_unknown_keywords_are_refused():
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        NumpyOptimizer("adam", [np.zeros(2)], [np.zeros(2)], [-0.1])
    with pytest.raises(ValueError, match=r"unknown keywords \['momentum'\]; valid keywords"):
        NumpyOptimizer("adam", [np.zeros(2)], [np.zeros(2)], [0.1], {"momentum": 0.9})
    with pytest.raises(ValueError, match="Unknown optimizer 'lbfgs'. Valid optimizers: adam"):
        NumpyOptimizer("lbfgs", [np.zeros(2)], [np.zeros(2)], [0.1])
    # torch's AdamW takes no decoupled_weight_decay: the engine leaves such keywords to torch.
    assert not check_numpy_optimizer_kwargs("adamw", {"decoupled_weight_decay": False})
    assert check_numpy_optimizer_kwargs("adam", {"fused": True, "weight_decay": 0.1})


_COLD_FIT = """
import json, sys
import numpy as np
from lvqmln_torch import LVQMLNClassifier
rng = np.random.default_rng(0)
X, y = rng.normal(size=(60, 4)), np.arange(60) % 3
for options in ({}, {"optimizer": "sgd", "lr_scheduler": "cosine_decay", "ema_decay": 0.9}):
    LVQMLNClassifier(engine="numpy", max_iter=3, **options).fit(X, y)
print(json.dumps({m: m in sys.modules for m in ("torch._dynamo", "sympy", "lightning")}))
"""


def test_a_numpy_engine_fit_imports_neither_dynamo_nor_sympy():
    # A fresh process: this test session has long imported both.
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_COLD_FIT)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert imported == {"torch._dynamo": False, "sympy": False, "lightning": False}
