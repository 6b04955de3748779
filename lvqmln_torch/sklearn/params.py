"""The estimator's parameters: their rules, and the one translation from estimator parameters
(upstream prosemble's names) to the module's arguments, used by ``fit`` and by the migration
from fitted prosemble models."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.construction import BACKBONES, FLAT_BACKBONES
from ..core.functional import TRANSFERS
from ..core.validation import (
    Boolean,
    Check,
    Integer,
    IntegerList,
    Options,
    Real,
    check_freeze,
    needs_minibatches_error,
    plain,
    validate,
)
from ..training.config import INIT_SAMPLE_SIZE, MODULE_CONSTRAINTS
from .engines import ENGINES

__all__ = [
    "CNN_DEFAULTS",
    "ENGINES",
    "ESTIMATOR_CONSTRAINTS",
    "MIXED_PRECISION",
    "check_input_rank",
    "check_params",
    "module_arguments",
    "resolve_precision",
    "transfer_name",
]

# mixed_precision (upstream's name) → Lightning precision.
MIXED_PRECISION = {"bfloat16": "bf16-mixed", "float16": "16-mixed"}
# Parameters that only the CNN backbone uses, with their defaults when left None: ours (see
# docs/images.md), measured by benchmarks/cnn_diagnosis.py and benchmarks/accuracy.py.
CNN_DEFAULTS = {
    "channels": [32, 64],
    "kernel_sizes": [3, 3],
    "cnn_head": "pooled",
    "standardize_input": True,
    "conv_activation": "relu",
    "cnn_hidden": [128],
}
"""The parameters only the CNN backbone uses → their values when left None."""


def _check_class_weight(name: str, value: Any) -> Any:
    if value is None or value == "balanced":
        return value
    if isinstance(value, Mapping):
        return plain(value)
    raise ValueError(f"{name} must be 'balanced', a dict label → weight or None, got {value!r}")


def _check_devices(name: str, value: Any) -> Any:
    value = plain(value)
    single = value == 1 or value == "auto" or (isinstance(value, list) and len(value) == 1)
    if isinstance(value, bool) or not single:
        raise ValueError(
            f"LVQMLNClassifier trains on one device: {name} must be 1, 'auto' or a list of "
            f"one device index, got {value!r}; for several devices use LVQMLN with a "
            "Lightning Trainer (or the lvqmln CLI)"
        )
    return value


def _shared(name: str) -> Callable[[str, Any], Any]:
    return MODULE_CONSTRAINTS[name]


# The estimator's parameters and their rules: the module's where the parameter is the same.
ESTIMATOR_CONSTRAINTS: dict[str, Callable[[str, Any], Any]] = {
    "hidden_sizes": IntegerList(1, none=True),
    "latent_dim": _shared("latent_dim"),
    "activation": _shared("activation"),
    "beta": _shared("beta"),
    "bb_lr": _shared("bb_lr"),
    "n_prototypes_per_class": _shared("n_prototypes_per_class"),
    "max_iter": Integer(1),
    "lr": _shared("lr"),
    "epsilon": Real(0.0, none=True),
    "random_seed": Integer(0),
    "margin": _shared("margin"),
    "batch_size": Integer(1, none=True),
    "lr_scheduler": _shared("lr_scheduler"),
    "lr_scheduler_kwargs": _shared("lr_scheduler_kwargs"),
    "patience": Integer(1, none=True),
    "restore_best": Boolean(),
    "class_weight": Check(_check_class_weight),
    "gradient_accumulation_steps": Integer(1, none=True),
    "ema_decay": _shared("ema_decay"),
    "freeze_params": Check(check_freeze),
    "lookahead": _shared("lookahead"),
    "mixed_precision": Options(MIXED_PRECISION, none=True),
    "backbone": Options(
        BACKBONES,
        noun="backbones",
        also="(for a custom nn.Module use LVQMLN with a Lightning Trainer)",
    ),
    "channels": IntegerList(1, none=True),
    "kernel_sizes": IntegerList(1, none=True),
    "cnn_head": Options(MODULE_CONSTRAINTS["cnn_head"].options, none=True, noun="CNN heads"),
    "standardize_input": Boolean(none=True),
    "conv_activation": _shared("conv_activation"),
    "cnn_hidden": IntegerList(1, none=True),
    "latent_activation": Boolean(),
    "prototypes_initializer_kwargs": _shared("prototypes_initializer_kwargs"),
    "devices": Check(_check_devices),
    "verbose": Boolean(),
    "engine": Options(ENGINES, noun="engines"),
    "project_prototypes": Boolean(),
    "lipschitz": _shared("lipschitz"),
    "robust_eps": _shared("robust_eps"),
    "robust_weight": _shared("robust_weight"),
}


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The estimator's parameters (``get_params()``) validated and as plain values.

    Raises:
        ValueError: for the first invalid parameter, naming it and the valid choices.
    """
    return validate(params, ESTIMATOR_CONSTRAINTS)


def check_input_rank(X: np.ndarray, backbone: str) -> None:
    """The training inputs' rank must suit the backbone: ``(n, d)`` for ``"mlp"`` and
    ``"identity"``, ``(n, C, H, W)`` for ``"cnn"``.

    Raises:
        ValueError: naming the shape and the backbone that suits it.
    """
    if backbone in FLAT_BACKBONES and X.ndim != 2:
        raise ValueError(
            f"backbone={backbone!r} needs 2-D inputs (n_samples, n_features), got shape {X.shape}; "
            "for images (n, C, H, W) use backbone='cnn'"
        )
    if backbone == "cnn" and X.ndim != 4:
        raise ValueError(
            f"backbone='cnn' needs 4-D images (n_samples, C, H, W), got shape {X.shape}"
        )


def resolve_precision(mixed_precision: str | None, precision: Any) -> Any:
    """The Lightning precision of ``mixed_precision`` (upstream's name) or ``precision``.

    Raises:
        ValueError: when both are given and disagree.
    """
    if mixed_precision is None:
        return precision
    resolved = MIXED_PRECISION[mixed_precision]
    if precision is not None and str(precision) != resolved:
        raise ValueError(
            f"mixed_precision={mixed_precision!r} means precision={resolved!r}, but "
            f"precision={precision!r} was also given; set only one of them"
        )
    return resolved


def transfer_name(transfer_fn: Any, callables: bool = True) -> str | Callable:
    """The module's ``transfer`` for upstream's ``transfer_fn``: ``None`` → ``"identity"``;
    a name; prosemble's own (JAX) transfer functions by their names; with ``callables``, any
    other callable ``f(x, beta)`` on tensors as it is.

    Raises:
        ValueError: for an unknown name, or a foreign callable without ``callables``.
    """
    if transfer_fn is None:
        return "identity"
    if isinstance(transfer_fn, str):
        if transfer_fn not in TRANSFERS:
            raise ValueError(
                f"Unknown transfer_fn {transfer_fn!r}. Valid transfer_fn: None (identity), "
                f"{', '.join(repr(t) for t in TRANSFERS)}, or a callable f(x, beta) on tensors"
            )
        return transfer_fn
    if callable(transfer_fn):
        module = getattr(transfer_fn, "__module__", None) or ""
        name = getattr(transfer_fn, "__name__", None)
        # prosemble's own transfers by name; without ``callables`` any callable of that name.
        if name in TRANSFERS and (module.split(".")[0] == "prosemble" or not callables):
            return name
        if callables:
            return transfer_fn
    raise ValueError(
        f"cannot convert transfer_fn {transfer_fn!r}: only prosemble's "
        f"{', '.join(TRANSFERS)} are known; give transfer_fn= explicitly"
    )


def module_arguments(
    params: Mapping[str, Any],
    *,
    in_features: int | None,
    input_shape: Sequence[int] | None,
    classes: np.ndarray,
    initial_prototypes: Any = None,
    initial_prototype_labels: Any = None,
) -> dict[str, Any]:
    """The [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] arguments of checked estimator parameters (see
    [`check_params`][lvqmln_torch.sklearn.params.check_params]; missing ones take the estimator's defaults) and the data's sizes.

    Args:
        params: estimator parameters.
        in_features: MLP input dimension (``None`` for images).
        input_shape: CNN image shape ``(C, H, W)`` (``None`` for flat inputs).
        classes: the original labels, sorted.
        initial_prototypes: explicit ``(P, latent_dim)`` prototypes (migration).
        initial_prototype_labels: their ``(P,)`` class indices.
    """
    get = params.get
    hidden = get("hidden_sizes")
    cnn = {name: get(name) for name in CNN_DEFAULTS}
    cnn = {
        name: default if cnn[name] is None else cnn[name] for name, default in CNN_DEFAULTS.items()
    }
    return {
        "backbone": get("backbone", "mlp"),
        "in_features": in_features,
        "input_shape": None if input_shape is None else list(input_shape),
        "n_classes": len(classes),
        "classes": plain(classes),
        "hidden_sizes": [10] if hidden is None else list(hidden),
        "latent_dim": get("latent_dim", 2),
        "activation": get("activation"),
        "latent_activation": get("latent_activation", True),
        "channels": list(cnn["channels"]),
        "kernel_sizes": list(cnn["kernel_sizes"]),
        "cnn_head": cnn["cnn_head"],
        "standardize_input": cnn["standardize_input"],
        "conv_activation": cnn["conv_activation"],
        "cnn_hidden": list(cnn["cnn_hidden"]),
        "n_prototypes_per_class": get("n_prototypes_per_class", 1),
        "prototypes_initializer": get("prototypes_initializer") or "stratified_random",
        "prototypes_initializer_kwargs": get("prototypes_initializer_kwargs"),
        "initial_prototypes": initial_prototypes,
        "initial_prototype_labels": initial_prototype_labels,
        "transfer": transfer_name(get("transfer_fn")),
        "beta": get("beta", 10.0),
        "margin": get("margin", 0.0),
        "optimizer": get("optimizer", "adam"),
        "optimizer_kwargs": None,
        "lr": get("lr", 0.01),
        "bb_lr": get("bb_lr"),
        "lr_scheduler": get("lr_scheduler"),
        "lr_scheduler_kwargs": get("lr_scheduler_kwargs"),
        "freeze": check_freeze("freeze_params", get("freeze_params")),
        "ema_decay": get("ema_decay"),
        "lookahead": get("lookahead"),
        "seed": get("random_seed", 42),
        "init_sample_size": INIT_SAMPLE_SIZE,
        "lipschitz": get("lipschitz"),
        "robust_eps": get("robust_eps", 0.0),
        "robust_weight": get("robust_weight", 1.0),
    }


def validation_arrays(
    estimator: Any, validation_data: Any, X: np.ndarray, dtype: type[np.floating]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``fit``'s ``validation_data`` as ``(X_val, y_val)`` arrays (``(None, None)`` without).

    Raises:
        ValueError: unless it is a pair ``(X_val, y_val)`` whose samples have ``X``'s shape.
    """
    if validation_data is None:
        return None, None
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise ValueError("validation_data must be a tuple (X_val, y_val)")
    X_val = validate_data(estimator, validation_data[0], dtype=dtype, allow_nd=True, reset=False)
    if X_val.shape[1:] != X.shape[1:]:
        raise ValueError(
            f"validation X has per-sample shape {X_val.shape[1:]} but X has {X.shape[1:]}"
        )
    return X_val, np.asarray(validation_data[1])


def check_accumulation(params: Mapping[str, Any], n_samples: int) -> int:
    """The gradient accumulation steps (1 when unset).

    Raises:
        ValueError: when accumulating over more than one step with a single batch per epoch.
    """
    batch_size = params["batch_size"]
    n_batches = 1 if batch_size is None else -(-n_samples // batch_size)
    accumulation = params["gradient_accumulation_steps"] or 1
    if accumulation > 1 and n_batches == 1:
        raise needs_minibatches_error(
            f" (gradient_accumulation_steps={accumulation}, batch_size={batch_size}, "
            f"{n_samples} samples)"
        )
    return accumulation


def predict_inputs(estimator: Any, X: Any) -> np.ndarray:
    """``X`` validated for a fitted estimator's ``predict`` (its dtype, rank and per-sample
    shape), writable.

    Raises:
        NotFittedError: before ``fit``.
        ValueError: for inputs of another shape than the training inputs.
    """
    check_is_fitted(estimator, "network_")
    dtype = np.float64 if estimator.network_.prototypes.dtype == torch.float64 else np.float32
    X = validate_data(estimator, X, dtype=dtype, allow_nd=True, reset=False)
    expected = tuple(estimator.input_shape_) if estimator.input_shape_ is not None else None
    if expected is not None and X.shape[1:] != expected:
        raise ValueError(
            f"X has per-sample shape {X.shape[1:]}, but {type(estimator).__name__} was fitted "
            f"on images of shape {expected} (C, H, W)"
        )
    if expected is None and X.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, {estimator.n_features_in_}), got shape {X.shape}"
        )
    if not X.flags.writeable:  # torch cannot share read-only memory
        X = X.copy()
    return X
