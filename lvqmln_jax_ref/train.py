"""A plain optax training loop for LVQMLN, the reference for the torch trainer's trajectories.

One call of the jitted step per micro-batch of ``batch_order``; the loss of each micro-batch
is recorded at the (fast) parameters its gradient is taken at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .backbones import cnn_forward, mlp_forward
from .losses import glvq_loss_with_transfer, squared_euclidean_distance_matrix
from .schedules import build_schedule

GROUPS = ("prototypes", "backbone")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def build_optimizer(
    name: str, learning_rate: float | optax.Schedule
) -> optax.GradientTransformation:
    """One parameter group's optimizer, with torch's default hyper-parameters.

    adam: optax.adam (b1 0.9, b2 0.999, eps 1e-8); adamw: weight_decay 0.01 (torch's default,
    applied to every parameter of the group); sgd: no momentum; rmsprop: torch's defaults
    (alpha 0.99, eps 1e-8 outside the sqrt, no centering, no momentum).
    """
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=0.01)
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "rmsprop":
        return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    raise ValueError(f"Unknown optimizer {name!r}. Options: {', '.join(OPTIMIZERS)}")


def train(
    params: dict[str, Any],
    X: Any,
    y: Any,
    prototype_labels: Any,
    batch_order: Sequence[Any],
    *,
    backbone: str = "mlp",
    activation: str = "sigmoid",
    latent_activation: bool = True,
    optimizer: str = "adam",
    lr: float = 0.01,
    bb_lr: float | None = None,
    lr_scheduler: str | None = None,
    lr_scheduler_kwargs: dict[str, Any] | None = None,
    total_steps: int | None = None,
    transfer_fn: str | Callable = "identity",
    beta: float = 10.0,
    margin: float = 0.0,
    sample_weight: Any = None,
    accumulation_steps: int = 1,
    ema_decay: float | None = None,
    lookahead: dict[str, Any] | None = None,
    freeze: Sequence[str] = (),
) -> dict[str, Any]:
    """Train ``params = {'prototypes': (P, D), 'backbone': backbone params}`` with optax.

    X: (n, d) for ``backbone='mlp'`` or (n, h, w, c) NHWC for ``'cnn'``; y: (n,) int class
    indices; prototype_labels: (P,) int; batch_order: one integer index array per
    micro-batch, in order (epochs concatenated); sample_weight: (n,) or None.

    Two groups, 'prototypes' (lr) and 'backbone' (bb_lr, default lr), each with its own
    optimizer and schedule ``build_schedule(lr_scheduler, group_lr, total_steps, kwargs)``;
    frozen groups get ``optax.set_to_zero()``. ``accumulation_steps=k`` wraps the optimizer
    in ``optax.MultiSteps`` (running mean of k gradients, accumulated in the parameters' dtype
    rather than optax's float32 default; one real update per k micro-batches;
    schedules count real updates; default ``total_steps = len(batch_order) // k``).
    ``lookahead`` wraps it in ``optax.lookahead`` (gradients at the fast weights).
    ``ema_decay=d``: after each real update, for trainable groups,
    ``ema = (1 - d) * p + (1 - (1 - d)) * ema`` (``optax.incremental_update``) with p the
    (fast) parameters; frozen groups pass through.

    Returns ``{'losses': (n_micro_batches,), 'params': final params (numpy pytree: EMA if
    ema_decay, else lookahead slow weights if lookahead, else plain), 'lrs':
    (n_updates, 2) learning rates of (prototypes, backbone) at updates 0, 1, ...}``.
    """
    for group in freeze:
        if group not in GROUPS:
            raise ValueError(f"Unknown parameter group {group!r}. Options: {', '.join(GROUPS)}")
    k = int(accumulation_steps)
    if k < 1:
        raise ValueError("accumulation_steps must be >= 1")
    if lookahead is not None and k > 1:
        raise ValueError("lookahead together with accumulation is not supported here")
    if backbone == "mlp":
        forward = mlp_forward
    elif backbone == "cnn":
        forward = cnn_forward
    else:
        raise ValueError(f"Unknown backbone {backbone!r}. Options: mlp, cnn")

    params = jax.tree.map(jnp.asarray, params)
    X = jnp.asarray(X)
    y = jnp.asarray(y)
    prototype_labels = jnp.asarray(prototype_labels)
    weights = None if sample_weight is None else jnp.asarray(sample_weight)
    n_updates = len(batch_order) // k
    if total_steps is None:
        total_steps = n_updates

    # --- optimizer: one transformation per group ---
    group_lrs = {"prototypes": lr, "backbone": lr if bb_lr is None else bb_lr}
    schedules = {
        g: (
            (lambda count, v=group_lrs[g]: v)
            if lr_scheduler is None
            else build_schedule(lr_scheduler, group_lrs[g], total_steps, lr_scheduler_kwargs)
        )
        for g in GROUPS
    }
    transforms = {
        g: optax.set_to_zero()
        if g in freeze
        else build_optimizer(optimizer, group_lrs[g] if lr_scheduler is None else schedules[g])
        for g in GROUPS
    }
    opt = optax.multi_transform(transforms, lambda p: {g: g for g in p})
    if k > 1:
        # optax accumulates in float32 by default; accumulate in the parameters' dtype instead
        opt = optax.MultiSteps(
            opt, every_k_schedule=k, accumulator_dtype=params["prototypes"].dtype
        )
    if lookahead is not None:
        opt = optax.lookahead(
            opt,
            sync_period=lookahead.get("sync_period", 6),
            slow_step_size=lookahead.get("slow_step_size", 0.5),
        )
        state_params = optax.LookaheadParams.init_synced(params)
    else:
        state_params = params
    opt_state = opt.init(state_params)

    # --- jitted step ---
    def loss_fn(p, xb, yb, wb):
        latent = forward(p["backbone"], xb, activation, latent_activation)
        distances = squared_euclidean_distance_matrix(latent, p["prototypes"])
        return glvq_loss_with_transfer(
            distances, yb, prototype_labels, transfer_fn, margin, beta, sample_weight=wb
        )

    @jax.jit
    def step(state_params, opt_state, xb, yb, wb):
        fast = state_params.fast if lookahead is not None else state_params
        loss, grads = jax.value_and_grad(loss_fn)(fast, xb, yb, wb)
        updates, opt_state = opt.update(grads, opt_state, state_params)
        return optax.apply_updates(state_params, updates), opt_state, loss

    step_size = None if ema_decay is None else 1.0 - ema_decay

    @jax.jit
    def ema_update(ema, p):
        return {
            g: p[g] if g in freeze else optax.incremental_update(p[g], ema[g], step_size)
            for g in GROUPS
        }

    ema = params if ema_decay is not None else None
    losses = []
    for i, idx in enumerate(batch_order):
        idx = jnp.asarray(idx)
        wb = None if weights is None else weights[idx]
        state_params, opt_state, loss = step(state_params, opt_state, X[idx], y[idx], wb)
        losses.append(loss)
        if ema is not None and (i + 1) % k == 0:
            fast = state_params.fast if lookahead is not None else state_params
            ema = ema_update(ema, fast)

    if ema is not None:
        final = ema
    elif lookahead is not None:
        final = state_params.slow
    else:
        final = state_params
    lrs = np.array(
        [
            [float(schedules[g](jnp.asarray(t, dtype=jnp.int32))) for g in GROUPS]
            for t in range(n_updates)
        ],
        dtype=np.float64,
    ).reshape(n_updates, 2)
    return {
        "losses": np.asarray(jnp.stack(losses)) if losses else np.zeros(0),
        "params": jax.tree.map(np.asarray, final),
        "lrs": lrs,
    }
