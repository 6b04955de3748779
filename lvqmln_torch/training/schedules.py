"""The nine learning-rate schedules of upstream, as plain functions of the optimizer step.

Each mirrors optax's schedule of the same name (formulas and defaults as upstream passes them)
and is evaluated in Python floats, so a torch run follows the optax run step for step. The
default horizon (``decay_steps`` / ``transition_steps`` where upstream used ``max_iter``) is
the run's total number of optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["SCHEDULES", "ScheduleLR", "build_schedule", "check_schedule_args"]

Schedule = Callable[[int], float]


def _polynomial(init: float, end: float, power: float, steps: int, begin: int = 0) -> Schedule:
    if steps <= 0:
        return lambda count: init

    def schedule(count: int) -> float:
        count = min(max(count - max(begin, 0), 0), steps)
        return (init - end) * (1 - count / steps) ** power + end

    return schedule


def _exponential(
    init: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    if transition_steps <= 0 or decay_rate == 0:
        return lambda count: init
    begin = max(transition_begin, 0)

    def schedule(count: int) -> float:
        shifted = count - begin
        p = shifted / transition_steps
        if staircase:
            p = math.floor(p)
        value = init if shifted <= 0 else init * decay_rate**p
        if end_value is not None:
            value = max(value, end_value) if decay_rate < 1.0 else min(value, end_value)
        return value

    return schedule


def _cosine(init: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0) -> Schedule:
    if not decay_steps > 0:
        raise ValueError(f"cosine decay needs positive decay_steps, got {decay_steps}")

    def schedule(count: int) -> float:
        count = min(float(count), float(decay_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * count / decay_steps))
        return init * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def _join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    def schedule(count: int) -> float:
        value = schedules[0](count)
        for boundary, later in zip(boundaries, schedules[1:]):
            if count >= boundary:
                value = later(count - boundary)
        return value

    return schedule


def _warmup_cosine(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"warmup_cosine_decay needs decay_steps ({decay_steps}) > warmup_steps ({warmup_steps}); "
            "decay_steps defaults to the run's total optimizer steps, so lengthen the run or set "
            "lr_scheduler_kwargs"
        )
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return _join(
        [
            _polynomial(init_value, peak_value, 1, warmup_steps),
            _cosine(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def _piecewise_constant(init: float, boundaries_and_scales: Mapping[Any, float]) -> Schedule:
    items = sorted((int(b), float(s)) for b, s in boundaries_and_scales.items())
    if any(s < 0 for _, s in items):
        raise ValueError("piecewise_constant expects non-negative scale factors")

    def schedule(count: int) -> float:
        value = init
        for threshold, scale in items:
            if count >= threshold:
                value *= scale
        return value

    return schedule


def _sgdr(cosine_kwargs: Sequence[Mapping[str, Any]]) -> Schedule:
    schedules, boundaries, step = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(_warmup_cosine(**kwargs))
        step += int(kwargs["decay_steps"])
        boundaries.append(step)
    return _join(schedules, boundaries[:-1])


def _warmup_then(lr: float, kw: Mapping[str, Any], after: Callable[[float], Schedule]) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then ``after(peak_value)``."""
    warmup, peak = kw.get("warmup_steps", 10), kw.get("peak_value", lr)
    return _join([_polynomial(kw.get("init_value", 0.0), peak, 1, warmup), after(peak)], [warmup])


def _decay_rate(kw: Mapping[str, Any]) -> float:
    return kw.get("gamma", kw.get("decay_rate", 0.99))


SCHEDULES: dict[str, tuple[Callable[[float, int, Mapping[str, Any]], Schedule], set[str]]] = {
    "exponential_decay": (
        lambda lr, n, kw: _exponential(lr, kw.get("transition_steps", 1), _decay_rate(kw)),
        {"transition_steps", "decay_rate", "gamma"},
    ),
    "cosine_decay": (
        lambda lr, n, kw: _cosine(lr, kw.get("decay_steps", n)),
        {"decay_steps"},
    ),
    "warmup_cosine_decay": (
        lambda lr, n, kw: _warmup_cosine(
            kw.get("init_value", 0.0),
            kw.get("peak_value", lr),
            kw.get("warmup_steps", 10),
            kw.get("decay_steps", n),
            kw.get("end_value", 0.0),
        ),
        {"init_value", "peak_value", "warmup_steps", "decay_steps", "end_value"},
    ),
    "warmup_exponential_decay": (
        lambda lr, n, kw: _warmup_then(
            lr, kw, lambda peak: _exponential(peak, kw.get("transition_steps", 1), _decay_rate(kw))
        ),
        {"init_value", "peak_value", "warmup_steps", "transition_steps", "decay_rate", "gamma"},
    ),
    "warmup_constant": (
        lambda lr, n, kw: _warmup_then(lr, kw, lambda peak: lambda count: peak),
        {"init_value", "peak_value", "warmup_steps"},
    ),
    "polynomial": (
        lambda lr, n, kw: _polynomial(
            lr, kw.get("end_value", 0.0), kw.get("power", 1.0), kw.get("transition_steps", n)
        ),
        {"end_value", "power", "transition_steps"},
    ),
    "linear": (
        lambda lr, n, kw: _polynomial(
            lr, kw.get("end_value", 0.0), 1, kw.get("transition_steps", n)
        ),
        {"end_value", "transition_steps"},
    ),
    "piecewise_constant": (
        lambda lr, n, kw: _piecewise_constant(lr, kw.get("boundaries_and_scales", {})),
        {"boundaries_and_scales"},
    ),
    "sgdr": (
        lambda lr, n, kw: _sgdr(
            kw.get(
                "cosine_kwargs",
                [
                    {
                        "init_value": 0.0,
                        "peak_value": lr,
                        "warmup_steps": 0,
                        "decay_steps": n,
                        "end_value": 0.0,
                    }
                ],
            )
        ),
        {"cosine_kwargs"},
    ),
}
"""Schedule name → ``(builder(lr, total_steps, kwargs), accepted kwargs)``; the defaults
of the keyword arguments are upstream's. The names: ``exponential_decay``, ``cosine_decay``,
``warmup_cosine_decay``, ``warmup_exponential_decay``, ``warmup_constant``, ``polynomial``,
``linear``, ``piecewise_constant`` and ``sgdr``."""


def check_schedule_args(name: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a schedule name and its keyword arguments (without building it).

    Raises:
        ValueError: for an unknown name or keyword, listing the valid ones.
    """
    if name not in SCHEDULES:
        raise ValueError(f"Unknown lr_scheduler {name!r}. Valid schedulers: {', '.join(SCHEDULES)}")
    kwargs = dict(kwargs or {})
    unknown = set(kwargs) - SCHEDULES[name][1]
    if unknown:
        raise ValueError(
            f"lr_scheduler {name!r} got unknown lr_scheduler_kwargs {sorted(unknown)}; "
            f"valid keys: {sorted(SCHEDULES[name][1])}"
        )
    return kwargs


def build_schedule(
    name: str, lr: float, total_steps: int, kwargs: Mapping[str, Any] | None = None
) -> Schedule:
    """A schedule ``step -> learning rate`` by upstream name.

    Args:
        name: one of [`SCHEDULES`][lvqmln_torch.training.schedules.SCHEDULES].
        lr: the group's learning rate (the schedule's initial or peak value).
        total_steps: the default horizon: the run's total optimizer steps.
        kwargs: the schedule's keyword arguments (upstream's names).

    Raises:
        ValueError: for an unknown name or keyword, listing the valid ones.
    """
    kwargs = check_schedule_args(name, kwargs)
    return SCHEDULES[name][0](float(lr), int(total_steps), kwargs)


class ScheduleLR(LRScheduler):
    """Sets each parameter group's learning rate to ``schedule_g(step)`` exactly.

    Stepped once per optimizer step (Lightning ``interval="step"``). Only the step counter is
    checkpointed; the schedules are rebuilt from the hyperparameters.

    Args:
        optimizer: the wrapped optimizer.
        schedules: one schedule per parameter group.
    """

    def __init__(self, optimizer: Optimizer, schedules: Sequence[Schedule]) -> None:
        if len(schedules) != len(optimizer.param_groups):
            raise ValueError(
                f"got {len(schedules)} schedules for {len(optimizer.param_groups)} parameter groups"
            )
        self.schedules = list(schedules)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [schedule(self.last_epoch) for schedule in self.schedules]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedules")}
