"""Learning-rate schedules by name, copying upstream ``SupervisedPrototypeModel._build_schedule``.

Changes: upstream's ``self.max_iter`` horizon is ``total_steps`` here (the number of real
optimizer updates), and the returned schedule casts its count to the default float dtype
before calling optax's schedule. Optax's optimizer count is int32, and ``int32 / int`` gives
float32 in JAX even under ``jax_enable_x64``, so uncast, a float64 run would use learning rates
rounded to float32; with the cast the schedule is the plain formula in float64 (what a torch
scheduler computes in Python floats). Schedules are evaluated at the update count 0, 1, 2, ...
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

SCHEDULES = (
    "exponential_decay",
    "cosine_decay",
    "warmup_cosine_decay",
    "warmup_exponential_decay",
    "warmup_constant",
    "polynomial",
    "linear",
    "piecewise_constant",
    "sgdr",
)


def build_schedule(
    name: str, lr: float, total_steps: int, kwargs: dict[str, Any] | None = None
) -> optax.Schedule:
    """Build the optax schedule ``name`` for a group whose base learning rate is ``lr``.

    Keyword names and defaults are upstream's (``gamma`` is an alias of ``decay_rate``).
    ``boundaries_and_scales`` keys may be strings (YAML); they are converted to int.
    Raises ValueError (listing the valid names) for an unknown name.
    """
    return _float_count(_build_optax_schedule(name, lr, total_steps, dict(kwargs or {})))


def _float_count(schedule: optax.Schedule) -> optax.Schedule:
    """Evaluate ``schedule`` at the count cast to the default float dtype (float64 under x64)."""
    return lambda count: schedule(jnp.asarray(count).astype(jnp.result_type(float)))


def _build_optax_schedule(name: str, lr: float, total_steps: int, kw: dict) -> optax.Schedule:
    """Upstream's ``_build_schedule`` body (``self.max_iter`` -> ``total_steps``)."""
    decay_rate = kw.get("gamma", kw.get("decay_rate", 0.99))
    if name == "exponential_decay":
        return optax.exponential_decay(
            init_value=lr,
            transition_steps=kw.get("transition_steps", 1),
            decay_rate=decay_rate,
        )
    if name == "cosine_decay":
        return optax.cosine_decay_schedule(
            init_value=lr, decay_steps=kw.get("decay_steps", total_steps)
        )
    if name == "warmup_cosine_decay":
        return optax.warmup_cosine_decay_schedule(
            init_value=kw.get("init_value", 0.0),
            peak_value=kw.get("peak_value", lr),
            warmup_steps=kw.get("warmup_steps", 10),
            decay_steps=kw.get("decay_steps", total_steps),
            end_value=kw.get("end_value", 0.0),
        )
    if name == "warmup_exponential_decay":
        return optax.warmup_exponential_decay_schedule(
            init_value=kw.get("init_value", 0.0),
            peak_value=kw.get("peak_value", lr),
            warmup_steps=kw.get("warmup_steps", 10),
            transition_steps=kw.get("transition_steps", 1),
            decay_rate=decay_rate,
        )
    if name == "warmup_constant":
        return optax.warmup_constant_schedule(
            init_value=kw.get("init_value", 0.0),
            peak_value=kw.get("peak_value", lr),
            warmup_steps=kw.get("warmup_steps", 10),
        )
    if name == "polynomial":
        return optax.polynomial_schedule(
            init_value=lr,
            end_value=kw.get("end_value", 0.0),
            power=kw.get("power", 1.0),
            transition_steps=kw.get("transition_steps", total_steps),
        )
    if name == "linear":
        return optax.linear_schedule(
            init_value=lr,
            end_value=kw.get("end_value", 0.0),
            transition_steps=kw.get("transition_steps", total_steps),
        )
    if name == "piecewise_constant":
        boundaries_and_scales = {int(k): v for k, v in kw.get("boundaries_and_scales", {}).items()}
        return optax.piecewise_constant_schedule(
            init_value=lr, boundaries_and_scales=boundaries_and_scales
        )
    if name == "sgdr":
        default = [
            {
                "init_value": 0.0,
                "peak_value": lr,
                "warmup_steps": 0,
                "decay_steps": total_steps,
                "end_value": 0.0,
            }
        ]
        return optax.sgdr_schedule(cosine_kwargs=kw.get("cosine_kwargs", default))
    raise ValueError(f"Unknown scheduler {name!r}. Options: {', '.join(SCHEDULES)}")
