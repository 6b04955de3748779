"""The update rules of torch's built-in optimizers in NumPy, one function per optimizer:
``rule(param, grad, state, lr, settings, scalar_dtype)`` updates ``param`` (and ``state``, a
dict filled on the first call) in place, as torch's ``_single_tensor_<name>`` (its CPU
default) updates one parameter tensor. ``grad`` is already negated for ``maximize``. State
scalars that torch keeps in 0-dim tensors of its scalar dtype (step counts, NAdam's μ
product, ASGD's η and μ) are rounded to ``scalar_dtype`` as torch rounds them. Used through
[`NumpyOptimizer`][lvqmln_torch.sklearn.numpy_optim.NumpyOptimizer]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "asgd",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
]

Array = np.ndarray


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


def adam(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def sgd(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def rmsprop(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def adagrad(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
    if not st:
        st["sum"] = np.full_like(p, s["initial_accumulator_value"])
    step = _count(st, scalar)
    g = _coupled_decay(p, g, s)
    clr = lr / (1 + (step - 1) * s["lr_decay"])
    st["sum"] += g * g
    std = np.sqrt(st["sum"])
    std += s["eps"]
    p += -clr * (g / std)


def adadelta(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def adamax(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def nadam(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def radam(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def asgd(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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


def rprop(p: Array, g: Array, st: dict, lr: float, s: Mapping, scalar: type) -> None:
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
