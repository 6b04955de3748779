"""torch's built-in optimizers as NumPy update rules, for the numpy engine.

The numpy engine used to keep its optimizer state in a ``torch.optim`` optimizer over
shared-memory tensors. Constructing the first torch optimizer in a process imports
``torch._dynamo`` (``Optimizer.add_param_group`` is wrapped in ``torch._disable_dynamo``),
which pulls in sympy: about a second of every cold fit. These rules are the element-wise
updates of torch's CPU default implementation (``foreach=False``: ``_single_tensor_<name>``),
operation by operation, on NumPy arrays updated in place; the state scalars that torch keeps
in 0-dim tensors of its scalar dtype (Adam's step count, NAdam's μ product, ASGD's η and μ)
are rounded to that dtype as torch rounds them. The parameters agree with torch's to rounding
(step for step, every option; ``tests/sklearn/test_numpy_optim.py``), not bit for bit: torch's CPU
kernels fuse multiply-adds that NumPy rounds twice.

Implementation selectors (``foreach``, ``fused``, ``capturable``, ``differentiable``) choose
how torch computes the same update, so they are accepted and have no effect here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import numpy_rules as rules

__all__ = ["NUMPY_OPTIMIZERS", "NumpyOptimizer", "check_numpy_optimizer_kwargs"]

Array = np.ndarray
_IMPLEMENTATION_OPTIONS = frozenset({"foreach", "fused", "capturable", "differentiable"})
_BETAS = (0.9, 0.999)


def _nonnegative(*names: str) -> Callable[[Mapping], None]:
    """The check ``0 <= setting`` of torch's constructors, with their messages."""

    def check(s: Mapping) -> None:
        for name in names:
            if not s[name] >= 0.0:
                label = "learning rate:" if name == "lr" else f"{_LABELS.get(name, name)} value:"
                raise ValueError(f"Invalid {label} {s[name]}")

    return check


_LABELS = {"eps": "epsilon"}


def _check_betas(s: Mapping) -> None:
    for i, beta in enumerate(s["betas"]):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def _check_sgd(s: Mapping) -> None:
    if s["nesterov"] and (s["momentum"] <= 0 or s["dampening"] != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def _check_rho(s: Mapping) -> None:
    if not 0.0 <= s["rho"] <= 1.0:
        raise ValueError(f"Invalid rho value: {s['rho']}")


def _check_etas(s: Mapping) -> None:
    if not 0.0 < s["etas"][0] < 1.0 < s["etas"][1]:
        raise ValueError(f"Invalid eta values: {s['etas'][0]}, {s['etas'][1]}")


@dataclass(frozen=True)
class _Rule:
    """An optimizer: the defaults of the keywords its torch constructor takes (``lr`` aside,
    implementation selectors aside), settings fixed by the class, the checks torch's
    constructor makes, and the update of one parameter array."""

    defaults: Mapping[str, Any]
    checks: tuple[Callable[[Mapping], None], ...]
    update: Callable[[Array, Array, dict, float, Mapping, type], None]
    fixed: Mapping[str, Any] = field(default_factory=dict)


_ADAM = {"betas": _BETAS, "eps": 1e-8, "amsgrad": False, "maximize": False}
_ADAM_CHECKS = (_nonnegative("lr", "eps"), _check_betas, _nonnegative("weight_decay"))
NUMPY_OPTIMIZERS: dict[str, _Rule] = {
    "adam": _Rule(
        {**_ADAM, "weight_decay": 0.0, "decoupled_weight_decay": False}, _ADAM_CHECKS, rules.adam
    ),
    # torch's AdamW is its Adam with decoupled weight decay (and another default decay).
    "adamw": _Rule(
        {**_ADAM, "weight_decay": 1e-2}, _ADAM_CHECKS, rules.adam, {"decoupled_weight_decay": True}
    ),
    "sgd": _Rule(
        {
            "momentum": 0.0,
            "dampening": 0.0,
            "weight_decay": 0.0,
            "nesterov": False,
            "maximize": False,
        },
        (_nonnegative("lr", "momentum", "weight_decay"), _check_sgd),
        rules.sgd,
    ),
    "rmsprop": _Rule(
        {
            "alpha": 0.99,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum": 0.0,
            "centered": False,
            "maximize": False,
        },
        (_nonnegative("lr", "eps", "momentum", "weight_decay", "alpha"),),
        rules.rmsprop,
    ),
    "adagrad": _Rule(
        {
            "lr_decay": 0.0,
            "weight_decay": 0.0,
            "initial_accumulator_value": 0.0,
            "eps": 1e-10,
            "maximize": False,
        },
        (_nonnegative("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"),),
        rules.adagrad,
    ),
    "adadelta": _Rule(
        {"rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False},
        (_nonnegative("lr"), _check_rho, _nonnegative("eps", "weight_decay")),
        rules.adadelta,
    ),
    "adamax": _Rule(
        {"betas": _BETAS, "eps": 1e-8, "weight_decay": 0.0, "maximize": False},
        _ADAM_CHECKS,
        rules.adamax,
    ),
    "nadam": _Rule(
        {
            "betas": _BETAS,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum_decay": 4e-3,
            "decoupled_weight_decay": False,
            "maximize": False,
        },
        (*_ADAM_CHECKS, _nonnegative("momentum_decay")),
        rules.nadam,
    ),
    "radam": _Rule(
        {
            "betas": _BETAS,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "decoupled_weight_decay": False,
            "maximize": False,
        },
        _ADAM_CHECKS,
        rules.radam,
    ),
    "asgd": _Rule(
        {"lambd": 1e-4, "alpha": 0.75, "t0": 1e6, "weight_decay": 0.0, "maximize": False},
        (_nonnegative("lr", "weight_decay"),),
        rules.asgd,
    ),
    "rprop": _Rule(
        {"etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0), "maximize": False},
        (_nonnegative("lr"), _check_etas),
        rules.rprop,
    ),
}


def check_numpy_optimizer_kwargs(name: str, kwargs: Mapping[str, Any] | None) -> bool:
    """Whether the rule ``name`` knows every keyword in ``kwargs`` (else the engine keeps
    torch's optimizer, which then reports a keyword it does not take either)."""
    if name not in NUMPY_OPTIMIZERS:
        return False
    return set(kwargs or {}) <= set(NUMPY_OPTIMIZERS[name].defaults) | _IMPLEMENTATION_OPTIONS


class NumpyOptimizer:
    """One of torch's built-in optimizers over NumPy parameter arrays, updated in place.

    Args:
        name: a key of ``NUMPY_OPTIMIZERS``.
        params: the parameter groups' arrays (any shape; one array per group).
        grads: their gradients, arrays of the same shapes, read at every step (the caller
            fills them in place).
        lrs: each group's learning rate (``lrs`` may be reassigned between steps, as a
            schedule sets torch's ``param_groups[i]["lr"]``).
        kwargs: the optimizer's other keyword arguments, as torch's constructor takes them.
        scalar_dtype: torch's scalar dtype for its 0-dim state tensors (float32 unless
            torch's default dtype is float64).

    Raises:
        ValueError: for an unknown name, a setting torch's constructor refuses (with torch's
            message) or a keyword the rule does not take.
    """

    def __init__(
        self,
        name: str,
        params: Sequence[Array],
        grads: Sequence[Array],
        lrs: Sequence[float],
        kwargs: Mapping[str, Any] | None = None,
        scalar_dtype: type = np.float32,
    ) -> None:
        if name not in NUMPY_OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {name!r}. Valid optimizers: {', '.join(NUMPY_OPTIMIZERS)}"
            )
        if not check_numpy_optimizer_kwargs(name, kwargs):
            rule_keys = set(NUMPY_OPTIMIZERS[name].defaults) | _IMPLEMENTATION_OPTIONS
            raise ValueError(
                f"optimizer {name!r} got unknown keywords {sorted(set(kwargs or {}) - rule_keys)}"
                f"; valid keywords: {sorted(rule_keys)}"
            )
        if not len(params) == len(grads) == len(lrs):
            raise ValueError(
                f"got {len(params)} parameter arrays, {len(grads)} gradients, {len(lrs)} lrs"
            )
        self.rule = NUMPY_OPTIMIZERS[name]
        given = {k: v for k, v in (kwargs or {}).items() if k not in _IMPLEMENTATION_OPTIONS}
        self.settings = {**self.rule.defaults, **given, **self.rule.fixed}
        for check in self.rule.checks:
            for lr in lrs:
                check({**self.settings, "lr": float(lr)})
        self.params, self.grads = list(params), list(grads)
        self.lrs = [float(lr) for lr in lrs]
        self.scalar_dtype = scalar_dtype
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def step(self) -> None:
        """One optimizer step of every group from the current gradients."""
        for param, grad, state, lr in zip(self.params, self.grads, self.state, self.lrs):
            grad = -grad if self.settings["maximize"] else grad
            self.rule.update(param, grad, state, float(lr), self.settings, self.scalar_dtype)
