"""Build our model from a fitted ``prosemble.models.LVQMLN`` (duck-typed: prosemble and JAX are
never imported; anything with the same attributes works, plain numpy arrays included)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import NotFittedError

from ..core.construction import UPSTREAM_CNN
from ..core.layers import ACTIVATIONS
from ..core.network import PrototypeNetwork
from ..core.validation import plain
from ..io.interop import backbone_from_jax
from ..training.config import module_config
from ..training.optimizers import OPTIMIZERS
from ..training.schedules import SCHEDULES
from .params import module_arguments, transfer_name
from .persistence import set_fitted

if TYPE_CHECKING:
    from ..lightning.model import LVQMLN

__all__ = ["estimator_from_prosemble", "lvqmln_from_prosemble"]

# Constructor parameters of upstream's LVQMLN that carry over unchanged when their value is a
# plain value (upstream also takes optax objects and callables, which have no torch meaning).
_PLAIN_PARAMS = (
    "latent_dim",
    "activation",
    "beta",
    "bb_lr",
    "n_prototypes_per_class",
    "max_iter",
    "lr",
    "epsilon",
    "random_seed",
    "margin",
    "batch_size",
    "patience",
    "restore_best",
    "class_weight",
    "gradient_accumulation_steps",
    "ema_decay",
    "freeze_params",
    "lookahead",
    "mixed_precision",
)


def _array(value: Any, name: str, ndim: int | None = None) -> np.ndarray:
    try:
        array = np.array(value)  # a writable copy; jax arrays convert through __array__
    except Exception as err:
        raise ValueError(f"prosemble model attribute {name} is not an array: {err}") from err
    if ndim is not None and array.ndim != ndim:
        raise ValueError(
            f"prosemble model attribute {name} must be {ndim}-D, got shape {array.shape}"
        )
    return array


def _backbone_layout(params: Any) -> tuple[str, Any]:
    if isinstance(params, Mapping):
        if "conv_layers" not in params or "linear" not in params:
            raise ValueError(
                "backbone_params_ is a dict without 'conv_layers' and 'linear': not a prosemble "
                f"CNN backbone (keys {sorted(params)})"
            )
        convs = [
            (_array(k, f"conv kernel {i}", 4), _array(b, f"conv bias {i}", 1))
            for i, (k, b) in enumerate(params["conv_layers"])
        ]
        w, b = params["linear"]
        return "cnn", {
            "conv_layers": convs,
            "linear": (_array(w, "linear W", 2), _array(b, "b", 1)),
        }
    layers = [
        (_array(w, f"layer {i} W", 2), _array(b, f"layer {i} b", 1))
        for i, (w, b) in enumerate(params)
    ]
    if not layers:
        raise ValueError("backbone_params_ has no layers")
    for i, (w, b) in enumerate(layers):
        if b.shape != (w.shape[1],):
            raise ValueError(f"layer {i}: W has shape {w.shape} but b has shape {b.shape}")
        if i and w.shape[0] != layers[i - 1][0].shape[1]:
            raise ValueError(
                f"layer {i} takes {w.shape[0]} inputs but layer {i - 1} gives "
                f"{layers[i - 1][0].shape[1]}"
            )
    return "mlp", layers


def _read(obj: Any, input_shape: Sequence[int] | None) -> dict[str, Any]:
    """Everything the conversion needs, checked, as numpy arrays and plain values."""
    for name in ("backbone_params_", "prototypes_", "prototype_labels_"):
        if getattr(obj, name, None) is None:
            raise NotFittedError(
                f"the prosemble model has no {name}: fit it first (or pass a fitted model)"
            )
    kind, backbone = _backbone_layout(obj.backbone_params_)
    prototypes = _array(obj.prototypes_, "prototypes_", 2).astype(np.float32)
    labels = _array(obj.prototype_labels_, "prototype_labels_", 1)
    if len(labels) != len(prototypes):
        raise ValueError(f"{len(prototypes)} prototypes_ but {len(labels)} prototype_labels_")
    classes = getattr(obj, "classes_", None)
    classes = np.unique(labels) if classes is None else _array(classes, "classes_", 1)
    index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    if np.any(classes[index] != labels):
        raise ValueError(
            f"prototype_labels_ {np.unique(labels).tolist()} are not all among classes_ "
            f"{classes.tolist()}"
        )
    n_classes = getattr(obj, "n_classes_", None)
    if n_classes is not None and int(n_classes) != len(classes):
        raise ValueError(f"n_classes_={n_classes} but classes_ has {len(classes)} entries")

    latent_dim = prototypes.shape[1]
    declared = getattr(obj, "latent_dim", None)
    if declared is not None and int(declared) != latent_dim:
        raise ValueError(f"latent_dim={declared} but prototypes_ have {latent_dim} columns")
    info: dict[str, Any] = {
        "kind": kind,
        "backbone": backbone,
        "prototypes": prototypes,
        "label_index": index.astype(np.int64),
        "classes": classes,
        "latent_dim": latent_dim,
    }
    if kind == "mlp":
        widths = [w.shape[1] for w, _ in backbone]
        if widths[-1] != latent_dim:
            raise ValueError(
                f"the backbone ends in {widths[-1]} units but prototypes_ have {latent_dim}"
            )
        hidden = widths[:-1]
        declared = getattr(obj, "hidden_sizes", None)
        if declared is not None and list(plain(declared)) != hidden:
            raise ValueError(
                f"hidden_sizes={list(declared)} but backbone_params_ have hidden widths {hidden}"
            )
        info.update(hidden_sizes=hidden, in_features=backbone[0][0].shape[0])
    else:
        kernels = [k for k, _ in backbone["conv_layers"]]
        if input_shape is None:
            raise ValueError(
                "a CNN backbone needs input_shape=(C, H, W) (channels first: our CNN takes "
                "NCHW images; convert prosemble's NHWC images with "
                "lvqmln_torch.io.interop.images_nhwc_to_nchw)"
            )
        input_shape = [int(s) for s in input_shape]
        first_in = kernels[0].shape[2] if kernels else backbone["linear"][0].shape[0]
        if len(input_shape) != 3 or input_shape[0] != first_in:
            raise ValueError(
                f"input_shape must be (C, H, W) with C={first_in} (the first layer's input "
                f"channels), got {tuple(input_shape)}"
            )
        info.update(
            input_shape=input_shape,
            channels=[k.shape[3] for k in kernels],
            kernel_sizes=[k.shape[0] for k in kernels],
        )
    return info


def _params(obj: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Estimator parameters from upstream's hyperparameters; values with no torch meaning
    (optax objects, callables) fall back to the defaults, with a warning naming them."""
    params: dict[str, Any] = {}
    dropped: list[str] = []
    for name in _PLAIN_PARAMS:
        if hasattr(obj, name):
            params[name] = plain(getattr(obj, name))
    params.setdefault("activation", "sigmoid")  # upstream's default, for every backbone
    if params["activation"] not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {params['activation']!r}; valid: {', '.join(ACTIVATIONS)}"
        )
    params["latent_dim"] = info["latent_dim"]
    if info["kind"] == "mlp":
        params["hidden_sizes"] = info["hidden_sizes"]
    else:
        # Upstream's CNN: global average head on raw inputs, and bb_lr=None meaning lr.
        params.update(
            backbone="cnn",
            channels=info["channels"],
            kernel_sizes=info["kernel_sizes"],
            **UPSTREAM_CNN,
        )
        if params.get("bb_lr") is None:
            params["bb_lr"] = params.get("lr", 0.01)
    transfer = transfer_name(getattr(obj, "transfer_fn", None), callables=False)
    params["transfer_fn"] = None if transfer == "identity" else transfer
    optimizer = getattr(obj, "_optimizer_spec", getattr(obj, "optimizer", "adam"))
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        params["optimizer"] = optimizer.lower()
    elif optimizer is not None:
        dropped.append(f"optimizer={optimizer!r}")
    scheduler = getattr(obj, "lr_scheduler", None)
    if isinstance(scheduler, str) and scheduler in SCHEDULES:
        params["lr_scheduler"] = scheduler
        params["lr_scheduler_kwargs"] = (
            plain(dict(getattr(obj, "lr_scheduler_kwargs", None) or {})) or None
        )
    elif scheduler is not None:
        dropped.append(f"lr_scheduler={scheduler!r}")
    initializer = getattr(obj, "prototypes_initializer", None)
    if initializer is None or isinstance(initializer, str):
        params["prototypes_initializer"] = initializer
    else:
        dropped.append(f"prototypes_initializer={initializer!r}")
    if dropped:
        warnings.warn(
            f"from_prosemble: {', '.join(dropped)} cannot be converted to torch and was left at "
            "its default; it only matters if you fit again",
            UserWarning,
            stacklevel=3,
        )
    return params


def _module_arguments(info: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The module's arguments: the estimator's translation, with upstream's sizes, weights'
    layout and prototypes."""
    cnn = info["kind"] == "cnn"
    return module_arguments(
        params,
        in_features=None if cnn else info["in_features"],
        input_shape=info["input_shape"] if cnn else None,
        classes=info["classes"],
        initial_prototypes=info["prototypes"],
        initial_prototype_labels=info["label_index"],
    )


def lvqmln_from_prosemble(obj: Any, input_shape: Sequence[int] | None = None) -> LVQMLN:
    """The [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] LightningModule equivalent to a fitted prosemble ``LVQMLN``: same
    backbone weights, prototypes and labels, hence the same predictions. Training it further
    with a ``Trainer`` continues from these weights.

    Args:
        obj: a fitted prosemble LVQMLN, or any object with ``backbone_params_`` (a list of
            ``(W[in, out], b[out])``, or ``{"conv_layers", "linear"}`` for a CNN),
            ``prototypes_ (P, latent_dim)``, ``prototype_labels_ (P,)`` and optionally
            ``classes_``, ``n_classes_``, ``hidden_sizes``, ``latent_dim``, ``activation``,
            ``beta``, ``margin``, ``transfer_fn`` and upstream's other hyperparameters.
        input_shape: ``(C, H, W)``, only for a CNN backbone.

    Returns:
        The module (its inference methods switch to eval mode themselves).

    Raises:
        sklearn.exceptions.NotFittedError: when ``obj`` is not fitted.
        ValueError: when the attributes are inconsistent (shapes, labels, names).
    """
    from ..lightning.model import LVQMLN

    info = _read(obj, input_shape)
    model = LVQMLN(**_module_arguments(info, _params(obj, info)))
    backbone_from_jax(model.backbone, info["backbone"])
    return model


def estimator_from_prosemble(
    estimator_cls: type, obj: Any, input_shape: Sequence[int] | None = None
) -> Any:
    """A fitted [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier] equivalent to a fitted prosemble
    ``LVQMLN``: the same predictions, probabilities and latent codes, the same constructor
    parameters (where they have a torch meaning) and the fitted attributes ``n_iter_``,
    ``loss_``, ``loss_history_``, ``val_loss_history_``, ``best_loss_``.

    Args:
        estimator_cls: [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier] (or a subclass).
        obj: see [`lvqmln_from_prosemble`][lvqmln_torch.sklearn.migration.lvqmln_from_prosemble].
        input_shape: ``(C, H, W)``, only for a CNN backbone.

    Returns:
        The fitted estimator.
    """
    info = _read(obj, input_shape)
    params = _params(obj, info)
    config = module_config(_module_arguments(info, params))
    network = PrototypeNetwork.from_config(config.hparams)
    backbone_from_jax(network.backbone, info["backbone"])
    estimator = estimator_cls(**params)
    history = getattr(obj, "loss_history_", None)
    val_history = getattr(obj, "val_loss_history_", None)
    n_iter, loss, best = (getattr(obj, n, None) for n in ("n_iter_", "loss_", "best_loss_"))
    cnn = info["kind"] == "cnn"
    set_fitted(
        estimator,
        network,
        config.hparams,
        info["classes"],
        info["input_shape"] if cnn else None,
        info["input_shape"][0] if cnn else info["in_features"],
        [] if history is None else np.asarray(history, dtype=np.float64),
        None if val_history is None else np.asarray(val_history, dtype=np.float64),
        n_iter=n_iter,
        loss=loss,
        best_loss=best if best is not None else float("nan"),
        engine=None,  # trained by prosemble, not here
    )
    if best is None:
        estimator.best_loss_ = None
    return estimator
