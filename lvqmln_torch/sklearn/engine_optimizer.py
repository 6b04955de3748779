"""The numpy engine's optimizer steps: the module's parameter groups over the engine's flat
buffers, updated by torch's built-in optimizers' rules in NumPy
(``lvqmln_torch.sklearn.numpy_optim``) or, for any other optimizer class, by
torch's optimizer itself; and the learning-rate schedule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from ..core.construction import backbone_lr
from ..core.network import PrototypeNetwork
from ..training.groups import merge_equal_groups
from ..training.optimizers import OPTIMIZERS, build_optimizer, parameter_groups
from ..training.schedules import build_schedule
from .numpy_optim import NumpyOptimizer, check_numpy_optimizer_kwargs

__all__ = ["EngineOptimizer", "FlatLayout", "engine_optimizer"]

_NAMES = {cls: name for name, cls in OPTIMIZERS.items()}


class FlatLayout(Protocol):
    """The engine's parameters in one flat buffer: ``values`` and the slice of each group
    (``prototypes``, ``backbone``, ``all``) in ``slices``."""

    values: np.ndarray
    slices: Mapping[str, slice]


class EngineOptimizer:
    """One optimizer step per call, with the schedule advanced after it.

    Attributes:
        params: each group's parameters as a flat tensor sharing the engine's buffer (the
            EMA and lookahead rules update them in place), keyed ``prototypes``,
            ``backbone`` or ``all`` (both, when the groups' settings are equal).
        trained: the names of the trained groups (``prototypes``, ``backbone``).
    """

    def __init__(
        self,
        params: dict[str, Tensor],
        trained: list[str],
        step: Callable[[Callable[[], Any]], None],
    ) -> None:
        self.params, self.trained, self._step = params, trained, step

    def step(self, closure: Callable[[], Any]) -> None:
        """Evaluate ``closure`` (which fills the gradient buffer) and update the parameters."""
        self._step(closure)


def _numpy_steps(
    optimizer: NumpyOptimizer, schedules: list[Callable[[int], float]] | None
) -> Callable[[Callable[[], Any]], None]:
    count = 0

    def step(closure: Callable[[], Any]) -> None:
        nonlocal count
        if schedules is not None:
            # As torch's ScheduleLR: the k-th step (from 0) runs at schedule(k).
            optimizer.lrs = [schedule(count) for schedule in schedules]
        closure()
        optimizer.step()
        count += 1

    return step


def engine_optimizer(
    model: PrototypeNetwork,
    hparams: Mapping[str, Any],
    optimizer_cls: type[torch.optim.Optimizer],
    flat: FlatLayout,
    grad: np.ndarray,
    total_steps: int,
) -> EngineOptimizer:
    """The optimizer of a numpy-engine fit over ``flat`` (gradients read from ``grad``, a
    buffer of the same layout).

    The groups are the module's ([`parameter_groups`][lvqmln_torch.training.optimizers.parameter_groups]);
    with equal settings, one group over both slices (they are contiguous), which halves the
    per-step work of an element-wise optimizer. A built-in optimizer with keywords its NumPy
    rule takes runs in NumPy (no ``torch.optim`` optimizer is constructed: the first one in a
    process imports ``torch._dynamo``); any other class runs as torch's optimizer on tensors
    sharing the buffers.

    Args:
        model: the network (its prototypes and backbone decide the groups).
        hparams: the module's hyperparameters (``lr``, ``bb_lr``, ``freeze``, ``optimizer_kwargs``,
            ``lr_scheduler``, ``lr_scheduler_kwargs``).
        optimizer_cls: the optimizer class.
        flat: the parameter buffer and its group slices.
        grad: the gradient buffer, filled in place by the closure of every step.
        total_steps: the run's optimizer steps (a schedule's default horizon).

    Returns:
        The engine's optimizer.
    """
    groups = parameter_groups(
        model.prototypes, model.backbone, hparams["lr"], backbone_lr(hparams), hparams["freeze"]
    )
    trained = [g["name"] for g in groups]
    name = _NAMES.get(optimizer_cls)
    groups = merge_equal_groups(groups, elementwise=name is not None)
    params = {g["name"]: torch.from_numpy(flat.values[flat.slices[g["name"]]]) for g in groups}
    kwargs = hparams.get("optimizer_kwargs")
    if name is not None and check_numpy_optimizer_kwargs(name, kwargs):
        schedule = hparams.get("lr_scheduler")
        schedules = (
            [
                build_schedule(schedule, g["lr"], total_steps, hparams.get("lr_scheduler_kwargs"))
                for g in groups
            ]
            if schedule is not None
            else None
        )
        optimizer = NumpyOptimizer(
            name,
            [flat.values[flat.slices[g["name"]]] for g in groups],
            [grad[flat.slices[g["name"]]] for g in groups],
            [g["lr"] for g in groups],
            kwargs,
            np.float64 if torch.get_default_dtype() == torch.float64 else np.float32,
        )
        return EngineOptimizer(params, trained, _numpy_steps(optimizer, schedules))

    for group in groups:
        param = nn.Parameter(params[group["name"]])
        param.grad = torch.from_numpy(grad[flat.slices[group["name"]]])  # filled every step
        group["params"] = [param]
        params[group["name"]] = param
    torch_optimizer, scheduler = build_optimizer(
        optimizer_cls, groups, hparams, lambda: total_steps
    )

    def torch_step(closure: Callable[[], Any]) -> None:
        # The closure runs inside the optimizer's step, as Lightning runs the training step,
        # so an optimizer that evaluates it several times (a line search) works as there.
        torch_optimizer.step(closure)
        if scheduler is not None:
            scheduler.step()

    return EngineOptimizer(params, trained, torch_step)
