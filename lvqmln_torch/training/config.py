"""The module's arguments, validated once into checkpoint-safe hyperparameters.

[`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] and the estimator (which builds a
[`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork] without Lightning on its numpy engine) both go
through [`module_config`][lvqmln_torch.training.config.module_config], so the module's rules are written once and the hyperparameters
are plain values (checkpoints load with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import functional as F
from ..core.cnn import CNN_HEADS
from ..core.construction import BACKBONES, UPSTREAM_CNN
from ..core.initializers import check_initializer
from ..core.layers import ACTIVATIONS
from ..core.lipschitz_control import LIPSCHITZ_MODES
from ..core.validation import (
    Boolean,
    Check,
    Integer,
    IntegerList,
    Keywords,
    Options,
    Real,
    check_freeze,
    check_lookahead,
    check_n_classes,
    check_n_prototypes_per_class,
    plain,
    validate,
)
from .optimizers import resolve_optimizer
from .rules import EMA_DECAY
from .schedules import SCHEDULES, check_schedule_args

__all__ = [
    "INIT_SAMPLE_SIZE",
    "MODULE_CONSTRAINTS",
    "ModuleConfig",
    "legacy_hparams",
    "module_config",
    "upgrade_checkpoint",
]

INIT_SAMPLE_SIZE = 20_000
"""How many training samples initialise the prototypes by default (see ``LVQMLN``)."""


def _check_n_classes(name: str, value: Any) -> int | None:
    value = Integer(1, none=True)(name, value)
    if value is not None:
        check_n_classes(value, name)
    return value


# The module's parameters and their rules (the estimator reuses the shared ones by name).
MODULE_CONSTRAINTS: dict[str, Callable[[str, Any], Any]] = {
    "in_features": Integer(1, none=True),
    "input_shape": IntegerList(1, length=3, none=True),
    "n_classes": Check(_check_n_classes),
    "hidden_sizes": IntegerList(1),
    "latent_dim": Integer(1),
    "activation": Options(ACTIVATIONS, none=True, noun="activations"),
    "latent_activation": Boolean(),
    "channels": IntegerList(1),
    "kernel_sizes": IntegerList(1),
    "cnn_head": Options(CNN_HEADS, noun="CNN heads"),
    "standardize_input": Boolean(),
    "conv_activation": Options(ACTIVATIONS, none=True, noun="activations"),
    "cnn_hidden": IntegerList(1),
    "n_prototypes_per_class": Check(check_n_prototypes_per_class),
    "prototypes_initializer_kwargs": Keywords(),
    "beta": Real(0.0),
    "margin": Real(),
    "optimizer_kwargs": Keywords(),
    "lr": Real(0.0, low_open=True),
    "bb_lr": Real(0.0, low_open=True, none=True),
    "lr_scheduler": Options(SCHEDULES, none=True, noun="schedulers"),
    "lr_scheduler_kwargs": Keywords(),
    "freeze": Check(check_freeze),
    "ema_decay": EMA_DECAY,
    "lookahead": Check(check_lookahead),
    "seed": Integer(0),
    "init_sample_size": Integer(1),
    "lipschitz": Options(LIPSCHITZ_MODES, none=True, noun="lipschitz controls"),
    "robust_eps": Real(0.0),
    "robust_weight": Real(0.0),
}
# Arguments added after 0.1 with the defaults that keep older hyperparameters' meaning.
NEW_ARGUMENT_DEFAULTS = {"lipschitz": None, "robust_eps": 0.0, "robust_weight": 1.0}


@dataclass(frozen=True)
class ModuleConfig:
    """Validated module arguments.

    Attributes:
        hparams: plain hyperparameters (what ``save_hyperparameters`` stores).
        custom_backbone: the user's ``nn.Module`` backbone, if any (``hparams["backbone"]``
            is then ``"custom"``).
        initializer: the prototype initializer, a name or a callable.
        transfer: the transfer function.
        optimizer_cls: the optimizer class.
    """

    hparams: dict[str, Any]
    custom_backbone: nn.Module | None
    initializer: str | Callable
    transfer: Callable
    optimizer_cls: type[torch.optim.Optimizer]


def _check_initial_prototypes(prototypes: Any, labels: Any, latent_dim: int) -> tuple[list, list]:
    prototypes = np.asarray(plain(prototypes), dtype=float)
    if prototypes.ndim != 2 or prototypes.shape[1] != latent_dim:
        raise ValueError(
            f"initial_prototypes must have shape (P, latent_dim={latent_dim}), got {prototypes.shape}"
        )
    if labels is None:
        raise ValueError("initial_prototypes needs initial_prototype_labels (class indices)")
    labels = np.asarray(plain(labels))
    if (
        labels.shape != (prototypes.shape[0],)
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
    ):
        raise ValueError(
            f"initial_prototype_labels must be {prototypes.shape[0]} non-negative class indices, "
            f"got {labels!r}"
        )
    return prototypes.tolist(), labels.tolist()


# The hyperparameters whose meaning changed with the CNN's defaults (issues 13 and 19).
CNN_LEGACY_KEYS = (
    "cnn_head",
    "standardize_input",
    "activation",
    "bb_lr",
    "conv_activation",
    "cnn_hidden",
)


def legacy_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters saved before the CNN had ``cnn_hidden`` (checkpoints and estimator
    files), completed with what they meant then: no dense layers, the latent activation after
    the convolutions too (``conv_activation=None``) and a CNN's ``bb_lr=None`` meaning
    ``0.1 · lr``; before ``cnn_head`` existed (0.1.x) upstream's global-average head on raw
    inputs, ``activation=None`` meaning relu and ``bb_lr=None`` meaning ``lr``. Newer
    hyperparameters are returned unchanged (as a new dict)."""
    params = dict(hparams)
    if "cnn_hidden" in params:
        return params
    params.update(conv_activation=None, cnn_hidden=[])
    if "cnn_head" in params:
        cnn = params.get("backbone") == "cnn"
        if cnn and params.get("bb_lr") is None and params.get("lr") is not None:
            params["bb_lr"] = 0.1 * params["lr"]
        return params
    params.update(UPSTREAM_CNN)
    if params.get("backbone") == "cnn":
        params["activation"] = params.get("activation") or "relu"
        if params.get("bb_lr") is None and params.get("lr") is not None:
            params["bb_lr"] = params["lr"]
    return params


def upgrade_checkpoint(checkpoint: dict[str, Any], hparams: dict[str, Any]) -> bool:
    """Bring an older checkpoint up to date, in place: drop the second copy of a custom
    backbone's weights (``_custom_backbone.*``; they are ``backbone.*``) and complete a CNN's
    hyperparameters with their old meaning (see [`legacy_hparams`][lvqmln_torch.training.config.legacy_hparams]).

    Args:
        checkpoint: the loaded checkpoint (``state_dict``, ``hyper_parameters``).
        hparams: the module's hyperparameters, updated for an old CNN.

    Returns:
        Whether the module must rebuild its backbone from the updated hyperparameters.
    """
    state = checkpoint.get("state_dict", {})
    for key in [k for k in state if k.startswith("_custom_backbone.")]:
        del state[key]
    saved = checkpoint.get("hyper_parameters", {})
    if "cnn_hidden" in saved or hparams.get("backbone") != "cnn":
        return False
    legacy = legacy_hparams(saved)
    hparams.update({key: legacy[key] for key in CNN_LEGACY_KEYS})
    return True


def module_config(arguments: Mapping[str, Any]) -> ModuleConfig:
    """Validate the arguments of [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] (all of them, by name).

    Raises:
        ValueError: for the first invalid argument, naming it and the valid choices.
    """
    params = dict(arguments)
    backbone = params["backbone"]
    custom = backbone if isinstance(backbone, nn.Module) else None
    if custom is None and backbone not in BACKBONES:
        hint = ""
        if backbone == "custom":
            hint = (
                "; 'custom' marks a checkpoint of a model with your own nn.Module backbone: pass "
                "that module again, e.g. LVQMLN.load_from_checkpoint(path, backbone=MyBackbone())"
            )
        raise ValueError(
            f"Unknown backbone {backbone!r}. Valid backbones: {', '.join(BACKBONES)}, or an "
            f"nn.Module{hint}"
        )
    for name, default in NEW_ARGUMENT_DEFAULTS.items():
        params.setdefault(name, default)
    params = validate(params, MODULE_CONSTRAINTS)
    if params["backbone"] == "identity" and params["in_features"] is not None:
        params["latent_dim"] = params["in_features"]  # the latent space is the input space
    transfer = F.get_transfer(params["transfer"])
    optimizer_cls = resolve_optimizer(params["optimizer"])
    if params["lr_scheduler"] is not None:
        check_schedule_args(params["lr_scheduler"], params["lr_scheduler_kwargs"])
    initializer = params["prototypes_initializer"]
    check_initializer(initializer, params["prototypes_initializer_kwargs"])
    if params["initial_prototypes"] is not None:
        params["initial_prototypes"], params["initial_prototype_labels"] = (
            _check_initial_prototypes(
                params["initial_prototypes"],
                params["initial_prototype_labels"],
                params["latent_dim"],
            )
        )
    elif params["initial_prototype_labels"] is not None:
        raise ValueError("initial_prototype_labels needs initial_prototypes")

    if not isinstance(params["optimizer"], str):
        params["optimizer"] = f"{optimizer_cls.__module__}.{optimizer_cls.__qualname__}"
    if custom is not None:
        params["backbone"] = "custom"
    if callable(initializer):
        del params["prototypes_initializer"]  # not a plain value: pass it again on reload
    params["classes"] = plain(params["classes"])
    return ModuleConfig(params, custom, initializer, transfer, optimizer_cls)
