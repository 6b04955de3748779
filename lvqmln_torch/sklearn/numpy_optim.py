"""torch's built-in optimizers as NumPy update rules, for the numpy engine.

The numpy engine used to keep its optimizer state in a ``torch.optim`` optimizer over
shared-memory tensors. Constructing the first torch optimizer in a process imports
``torch._dynamo`` (``Optimizer.add_param_group`` is wrapped in ``torch._disable_dynamo``),
which pulls in sympy: about a second of every cold fit. These rules are the element-wise
updates of torch's CPU default implementation (``foreach=False``: ``_single_tensor_<name>``),
operation by operation, on NumPy arrays updated in place; the state scalars that torch keeps
in 0-dim tensors of its scalar dtype (Adam's step count, NAdam's μ product, ASGD's η and μ)
are rounded to that dtype as torch rounds them. The parameters agree with torch's to rounding
(step for step, every option; ``tests/test_numpy_optim.py``), not bit for bit: torch's CPU
kernels fuse multiply-adds that NumPy rounds twice.

Implementation selectors (``foreach``, ``fused``, ``capturable``, ``differentiable``) choose
how torch computes the same update, so they are accepted and have no effect here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["NUMPY_OPTIMIZERS", "NumpyOptimizer", "check_numpy_optimizer_kwargs"]

Array = np.ndarray
_IMPLEMENTATION_OPTIONS = frozenset({"foreach", "fused", "capturable", "differentiable"})
_BETAS = (0.9, 0.999)


def _lerp_(start: Array, end: Array, weight: float) -> None:
    """``start.lerp_(end, weight)`` with torch's CPU formula (two branches for accuracy)."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


def _coupled_decay(p: Array, g: Array, s: Mapping[str, Any]) -> Array:
    """``grad + weight_decay · param`` (L2 in the gradient), or ``grad`` without decay."""
    return g + s["weight_decay"] * p if s["weight_decay"] != 0 else g


def _decay(p: Array, g: Array, lr: float, s: Mapping[str, Any]) -> Array:
    """Weight decay as the Adam family applies it: decoupled (``param ·= 1 − lr·wd``) or
    coupled (returned gradient)."""
    if s["weight_decay"] != 0 and s.get("decoupled_weight_decay"):
        p *= 1 - lr * s["weight_decay"]
        return g
    return _coupled_decay(p, g, s)


def _count(st: dict[str, Any], scalar: type) -> float:
    """Increment the step counter, kept in torch's scalar dtype (a 0-dim tensor there)."""
    st["step"] = float(scalar(st.get("step", 0.0) + 1))
    return st["step"]


def _adam(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["exp_avg"], st["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
        if s["amsgrad"]:
            st["max_exp_avg_sq"] = np.zeros_like(p)
    step = _count(st, scalar)
    g = _decay(p, g, lr, s)
    beta1, beta2 = s["betas"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    _lerp_(m, g, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * (g * g)
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    if s["amsgrad"]:
        np.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
        v = st["max_exp_avg_sq"]
    denom = np.sqrt(v) / bias_correction2_sqrt
    denom += s["eps"]
    p += -step_size * (m / denom)


def _sgd(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    g = _coupled_decay(p, g, s)
    momentum = s["momentum"]
    if momentum != 0:
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = g.copy()
        else:
            buf = st["momentum_buffer"]
            buf *= momentum
            buf += (1 - s["dampening"]) * g
        g = g + momentum * st["momentum_buffer"] if s["nesterov"] else st["momentum_buffer"]
    p += -lr * g


def _rmsprop(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["square_avg"] = np.zeros_like(p)
        if s["momentum"] > 0:
            st["momentum_buffer"] = np.zeros_like(p)
        if s["centered"]:
            st["grad_avg"] = np.zeros_like(p)
    _count(st, scalar)
    g = _coupled_decay(p, g, s)
    alpha, square_avg = s["alpha"], st["square_avg"]
    square_avg *= alpha
    square_avg += (1 - alpha) * (g * g)
    if s["centered"]:
        _lerp_(st["grad_avg"], g, 1 - alpha)
        avg = np.sqrt(square_avg - st["grad_avg"] * st["grad_avg"])
    else:
        avg = np.sqrt(square_avg)
    avg += s["eps"]
    if s["momentum"] > 0:
        buf = st["momentum_buffer"]
        buf *= s["momentum"]
        buf += g / avg
        p += -lr * buf
    else:
        p += -lr * (g / avg)


def _adagrad(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["sum"] = np.full_like(p, s["initial_accumulator_value"])
    step = _count(st, scalar)
    g = _coupled_decay(p, g, s)
    clr = lr / (1 + (step - 1) * s["lr_decay"])
    st["sum"] += g * g
    std = np.sqrt(st["sum"])
    std += s["eps"]
    p += -clr * (g / std)


def _adadelta(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["square_avg"], st["acc_delta"] = np.zeros_like(p), np.zeros_like(p)
    _count(st, scalar)
    g = _coupled_decay(p, g, s)
    rho, eps = s["rho"], s["eps"]
    square_avg, acc_delta = st["square_avg"], st["acc_delta"]
    square_avg *= rho
    square_avg += (1 - rho) * (g * g)
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta *= rho
    acc_delta += (1 - rho) * (delta * delta)
    p += -lr * delta


def _adamax(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["exp_avg"], st["exp_inf"] = np.zeros_like(p), np.zeros_like(p)
    step = _count(st, scalar)
    g = _coupled_decay(p, g, s)
    beta1, beta2 = s["betas"]
    _lerp_(st["exp_avg"], g, 1 - beta1)
    st["exp_inf"] *= beta2
    np.maximum(st["exp_inf"], np.abs(g) + s["eps"], out=st["exp_inf"])
    clr = lr / (1 - beta1**step)
    p += -clr * (st["exp_avg"] / st["exp_inf"])


def _nadam(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["mu_product"] = 1.0
        st["exp_avg"], st["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
    step = _count(st, scalar)
    beta1, beta2 = s["betas"]
    bias_correction2 = 1 - beta2**step
    g = _decay(p, g, lr, s)
    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * s["momentum_decay"])))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * s["momentum_decay"])))
    # torch multiplies its 0-dim μ-product tensor in the scalar dtype.
    mu_product = st["mu_product"] = float(scalar(st["mu_product"]) * scalar(mu))
    _lerp_(st["exp_avg"], g, 1 - beta1)
    st["exp_avg_sq"] *= beta2
    st["exp_avg_sq"] += (1 - beta2) * (g * g)
    denom = np.sqrt(st["exp_avg_sq"] / bias_correction2)
    denom += s["eps"]
    p += (-lr * (1.0 - mu) / (1.0 - mu_product)) * (g / denom)
    p += ((-lr * mu_next) / (1.0 - mu_product * mu_next)) * (st["exp_avg"] / denom)


def _radam(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["exp_avg"], st["exp_avg_sq"] = np.zeros_like(p), np.zeros_like(p)
    step = _count(st, scalar)
    g = _decay(p, g, lr, s)
    beta1, beta2 = s["betas"]
    _lerp_(st["exp_avg"], g, 1 - beta1)
    st["exp_avg_sq"] *= beta2
    st["exp_avg_sq"] += (1 - beta2) * (g * g)
    bias_correction1, bias_correction2 = 1 - beta1**step, 1 - beta2**step
    corrected = st["exp_avg"] / bias_correction1
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    if rho_t > 5.0:
        rect = (
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        ) ** 0.5
        root = np.sqrt(st["exp_avg_sq"])
        root += s["eps"]
        p -= corrected * lr * ((bias_correction2**0.5) / root) * rect
    else:
        p -= corrected * lr


def _asgd(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    # torch's ASGD also averages the iterates (its state "ax"); the parameters do not depend
    # on that average and the engine never reads it, so it is not kept here.
    if not st:
        st["eta"], st["mu"] = float(scalar(lr)), 1.0
    step = _count(st, scalar)
    g = _coupled_decay(p, g, s)
    eta = st["eta"]
    p *= 1 - s["lambd"] * eta
    p += -eta * g
    st["eta"] = float(scalar(lr / ((1 + s["lambd"] * lr * step) ** s["alpha"])))
    st["mu"] = float(scalar(1 / max(1, step - s["t0"])))


def _rprop(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["prev"], st["step_size"] = np.zeros_like(p), np.full_like(p, lr)
    _count(st, scalar)
    etaminus, etaplus = s["etas"]
    sign = np.sign(g * st["prev"])
    sign[sign > 0] = etaplus
    sign[sign < 0] = etaminus
    sign[sign == 0] = 1
    st["step_size"] *= sign
    np.clip(st["step_size"], *s["step_sizes"], out=st["step_size"])
    g = g.copy()
    g[sign == etaminus] = 0
    p -= np.sign(g) * st["step_size"]
    st["prev"][...] = g


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
        {**_ADAM, "weight_decay": 0.0, "decoupled_weight_decay": False}, _ADAM_CHECKS, _adam
    ),
    # torch's AdamW is its Adam with decoupled weight decay (and another default decay).
    "adamw": _Rule(
        {**_ADAM, "weight_decay": 1e-2}, _ADAM_CHECKS, _adam, {"decoupled_weight_decay": True}
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
        _sgd,
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
        _rmsprop,
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
        _adagrad,
    ),
    "adadelta": _Rule(
        {"rho": 0.9, "eps": 1e-6, "weight_decay": 0.0, "maximize": False},
        (_nonnegative("lr"), _check_rho, _nonnegative("eps", "weight_decay")),
        _adadelta,
    ),
    "adamax": _Rule(
        {"betas": _BETAS, "eps": 1e-8, "weight_decay": 0.0, "maximize": False},
        _ADAM_CHECKS,
        _adamax,
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
        _nadam,
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
        _radam,
    ),
    "asgd": _Rule(
        {"lambd": 1e-4, "alpha": 0.75, "t0": 1e6, "weight_decay": 0.0, "maximize": False},
        (_nonnegative("lr", "weight_decay"),),
        _asgd,
    ),
    "rprop": _Rule(
        {"etas": (0.5, 1.2), "step_sizes": (1e-6, 50.0), "maximize": False},
        (_nonnegative("lr"), _check_etas),
        _rprop,
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
        name: a key of [`NUMPY_OPTIMIZERS`][lvqmln_torch.sklearn.numpy_optim.NUMPY_OPTIMIZERS].
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
