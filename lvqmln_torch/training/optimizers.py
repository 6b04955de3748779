"""Optimizers by name (or dotted import path, or class), the parameter groups of a network and
the fused-kernel policy."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .schedules import ScheduleLR, build_schedule

__all__ = [
    "OPTIMIZERS",
    "build_optimizer",
    "make_optimizer",
    "parameter_groups",
    "resolve_optimizer",
]

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
}
"""Optimizer name → its ``torch.optim`` class."""


def resolve_optimizer(optimizer: str | type[Optimizer]) -> type[Optimizer]:
    """An optimizer class from a name in [`OPTIMIZERS`][lvqmln_torch.training.optimizers.OPTIMIZERS], a dotted path such as
    ``"torch.optim.SGD"``, or a class.

    Raises:
        ValueError: for anything else, listing the valid names.
    """
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        if optimizer.lower() in OPTIMIZERS:
            return OPTIMIZERS[optimizer.lower()]
        if "." in optimizer:
            module_name, _, attr = optimizer.rpartition(".")
            try:
                candidate: Any = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                candidate = None
            if isinstance(candidate, type) and issubclass(candidate, Optimizer):
                return candidate
    raise ValueError(
        f"Unknown optimizer {optimizer!r}. Valid optimizers: {', '.join(OPTIMIZERS)}, "
        "a dotted path to a torch.optim.Optimizer subclass, or the class itself"
    )


# Optimizers whose fused CPU kernel computes the same update as the default per-tensor loop
# (equal up to float rounding in the last bits), and the options that pick an implementation.
_FUSED_ON_CPU = (torch.optim.Adam, torch.optim.AdamW)
_IMPLEMENTATION_OPTIONS = ("fused", "foreach", "capturable", "differentiable")
# Below this many parameter elements the per-tensor loop stays single-threaded and is faster:
# the fused kernel opens a parallel region per call (~0.1 ms idle, ~10 ms on a busy CPU).
_FUSED_MIN_NUMEL = 1 << 16


def make_optimizer(
    optimizer_cls: type[Optimizer], groups: list[dict], kwargs: Mapping[str, Any] | None
) -> Optimizer:
    """``optimizer_cls(groups, **kwargs)``; Adam and AdamW on CPU parameters of at least
    ``_FUSED_MIN_NUMEL`` elements get ``fused=True`` unless ``kwargs`` choose an
    implementation: torch's CPU default updates each parameter in about ten separate passes
    over memory, the fused kernel in one (several times faster for large layers)."""
    kwargs = dict(kwargs or {})
    params = [p for group in groups for p in group["params"]]
    if (
        optimizer_cls in _FUSED_ON_CPU
        and not any(option in kwargs for option in _IMPLEMENTATION_OPTIONS)
        and all(p.device.type == "cpu" and p.is_floating_point() for p in params)
        and sum(p.numel() for p in params) >= _FUSED_MIN_NUMEL
    ):
        kwargs["fused"] = True
    return optimizer_cls(groups, **kwargs)


def parameter_groups(
    prototypes: Tensor,
    backbone: nn.Module,
    lr: float,
    bb_lr: float | None,
    freeze: Sequence[str],
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: ``prototypes`` (``lr``) and ``backbone`` (``bb_lr``,
    else ``lr``); frozen parameters are left out.

    Raises:
        ValueError: when ``freeze`` covers every parameter.
    """
    groups = []
    if "prototypes" not in freeze:
        groups.append({"params": [prototypes], "lr": lr, "name": "prototypes"})
    backbone_params = [p for p in backbone.parameters() if p.requires_grad]
    if backbone_params:
        groups.append(
            {
                "params": backbone_params,
                "lr": bb_lr if bb_lr is not None else lr,
                "name": "backbone",
            }
        )
    if not groups:
        raise ValueError("freeze covers every parameter: there is nothing to train")
    return groups


def build_optimizer(
    optimizer_cls: type[Optimizer],
    groups: list[dict[str, Any]],
    hparams: Mapping[str, Any],
    total_steps: Callable[[], int],
) -> tuple[Optimizer, ScheduleLR | None]:
    """The configured optimizer over ``groups`` (see [`parameter_groups`][lvqmln_torch.training.optimizers.parameter_groups]) and, with an
    ``lr_scheduler`` in ``hparams``, its per-step schedule over ``total_steps()`` optimizer
    steps (called only then: Lightning's estimate has a cost)."""
    optimizer = make_optimizer(optimizer_cls, groups, hparams.get("optimizer_kwargs"))
    name = hparams.get("lr_scheduler")
    if name is None:
        return optimizer, None
    steps = int(total_steps())
    kwargs = hparams.get("lr_scheduler_kwargs")
    return optimizer, ScheduleLR(
        optimizer, [build_schedule(name, g["lr"], steps, kwargs) for g in groups]
    )
