"""The estimator's fitted state: one way to set the fitted attributes (used by ``fit``,
``load`` and the migration from prosemble), the file format of ``save`` / ``load``, and
pickles of older versions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..core.files import atomic_write
from ..core.network import PrototypeNetwork
from ..core.validation import plain
from ..training.config import legacy_hparams

__all__ = ["PersistenceMixin", "load_estimator", "save_estimator", "set_fitted"]

# Format marker and version of the files written by LVQMLNClassifier.save.
FORMAT = "lvqmln-estimator"
FORMAT_VERSION = 1


def set_fitted(
    estimator: Any,
    network: PrototypeNetwork,
    hparams: Mapping[str, Any],
    classes: np.ndarray,
    input_shape: Sequence[int] | None,
    n_features_in: int,
    loss_history: Sequence[float],
    val_loss_history: Sequence[float] | None,
    *,
    n_iter: int | None = None,
    loss: float | None = None,
    best_loss: float | None = None,
    engine: str | None = None,
) -> None:
    """Set every fitted attribute of an [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier].

    Args:
        estimator: the estimator.
        network: the fitted network (an [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] or a plain
            [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork]).
        hparams: the module's hyperparameters (plain values).
        classes: the original labels, sorted.
        input_shape: ``(C, H, W)`` for images, else ``None``.
        n_features_in: ``n_features_in_`` (features, or channels for images).
        loss_history: per-epoch training losses.
        val_loss_history: per-epoch validation losses, or ``None`` without validation.
        n_iter: default: the training history's length.
        loss: default: its last value.
        best_loss: default: the best monitored value.
        engine: the engine that trained it (``None``: not trained here).
    """
    estimator.network_ = network
    estimator.module_hparams_ = dict(hparams)
    estimator.classes_ = np.asarray(classes)
    estimator.n_classes_ = len(estimator.classes_)
    estimator.input_shape_ = None if input_shape is None else tuple(input_shape)
    estimator.n_features_in_ = int(n_features_in)
    estimator.loss_history_ = np.asarray(loss_history, dtype=np.float64)
    estimator.val_loss_history_ = (
        None if val_loss_history is None else np.asarray(val_loss_history, dtype=np.float64)
    )
    history = estimator.loss_history_
    monitored = estimator.val_loss_history_ if val_loss_history is not None else history
    estimator.n_iter_ = int(n_iter) if n_iter is not None else len(history)
    estimator.loss_ = (
        float(loss) if loss is not None else (float(history[-1]) if len(history) else None)
    )
    if best_loss is None and len(monitored):
        best_loss = float(np.min(monitored))
    estimator.best_loss_ = None if best_loss is None else float(best_loss)
    estimator.engine_ = engine
    estimator.prototypes_ = network.prototypes.detach().cpu().numpy().copy()
    estimator.prototype_labels_ = estimator.classes_[network.prototype_labels.cpu().numpy()]
    sources = network.prototype_sources
    estimator.prototype_sources_ = None if sources is None else sources.cpu().numpy().copy()


def save_estimator(estimator: Any, path: str | os.PathLike) -> None:
    """Write a fitted estimator to one file, atomically: parameters, the module's
    hyperparameters and weights, and the fitted attributes, as plain values and tensors
    (``torch.load(weights_only=True)`` reads it).

    Raises:
        ValueError: when a parameter is not a plain value (a callable ``transfer_fn`` or
            ``prototypes_initializer``): only names can be stored.
    """
    params = estimator.get_params(deep=False)
    if isinstance(params["optimizer"], type):
        params["optimizer"] = f"{params['optimizer'].__module__}.{params['optimizer'].__qualname__}"
    network = estimator.network_
    hparams = estimator.module_hparams_
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "params": {
            k: plain(v, f"LVQMLNClassifier.save stores plain values only, but {k}", strict=True)
            for k, v in params.items()
        },
        "hparams": {k: plain(v, f"hparams[{k}]", strict=True) for k, v in hparams.items()},
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "fitted": {
            "classes_": plain(estimator.classes_.tolist()),
            "classes_dtype": estimator.classes_.dtype.str,
            "n_features_in_": int(estimator.n_features_in_),
            "input_shape_": plain(estimator.input_shape_),
            "n_iter_": int(estimator.n_iter_),
            "loss_": estimator.loss_,
            "loss_history_": torch.as_tensor(estimator.loss_history_, dtype=torch.float64),
            "val_loss_history_": None
            if estimator.val_loss_history_ is None
            else torch.as_tensor(estimator.val_loss_history_, dtype=torch.float64),
            "best_loss_": estimator.best_loss_,
            "engine_": estimator.engine_,
            "prototype_sources_": None
            if getattr(estimator, "prototype_sources_", None) is None  # unpickled from 0.1
            else torch.as_tensor(estimator.prototype_sources_, dtype=torch.long),
        },
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def load_estimator(cls: type, path: str | os.PathLike) -> Any:
    """Read an estimator written by [`save_estimator`][lvqmln_torch.sklearn.persistence.save_estimator] (``weights_only=True``: no code
    runs).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for a corrupt, truncated or foreign file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise ValueError(
            f"{path!r} is not a readable LVQMLNClassifier file (corrupt, truncated or not "
            f"written by LVQMLNClassifier.save): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} was not written by LVQMLNClassifier.save")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path!r} has format version {payload.get('format_version')!r}; this version "
            f"of lvqmln reads version {FORMAT_VERSION}"
        )
    try:
        fitted = payload["fitted"]
        estimator = cls(**payload["params"])
        hparams = legacy_hparams(payload["hparams"])
        network = PrototypeNetwork.from_config(hparams)
        state = payload["state_dict"]
        if state["prototypes"].dtype == torch.float64:
            network.double()  # before loading, so float64 weights stay float64
        network.load_state_dict(state, strict=True)
        network.prototype_sources = fitted.get("prototype_sources_")  # absent before 0.2
        val = fitted["val_loss_history_"]
        set_fitted(
            estimator,
            network,
            hparams,
            np.asarray(fitted["classes_"], dtype=np.dtype(fitted["classes_dtype"])),
            fitted["input_shape_"],
            fitted["n_features_in_"],
            fitted["loss_history_"].numpy(),
            None if val is None else val.numpy(),
            n_iter=fitted["n_iter_"],
            loss=fitted["loss_"],
            best_loss=fitted["best_loss_"],
            engine=fitted.get("engine_"),  # absent from files of 0.1.0
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{path!r} is damaged or inconsistent: {type(err).__name__}: {err}"
        ) from err
    return estimator


class PersistenceMixin:
    """``save`` / ``load`` of [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier],
    and its pickles of older versions."""

    # Parameters added since 0.1, with the value that means what an older pickle did.
    ADDED_PARAMS: Mapping[str, Any] = {"conv_activation": None, "cnn_hidden": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__({**self.ADDED_PARAMS, **state})

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted estimator to one file, atomically (a temporary file in the same
        directory, then renamed): parameters, the module's hyperparameters and weights, and
        the fitted attributes, as plain values and tensors (``torch.load(weights_only=True)``).

        Raises:
            sklearn.exceptions.NotFittedError: before ``fit``.
            ValueError: when a parameter is a callable (``transfer_fn``,
                ``prototypes_initializer``): only names can be stored.
        """
        check_is_fitted(self, "network_")
        save_estimator(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        """Read an estimator written by
        [`save`][lvqmln_torch.sklearn.persistence.PersistenceMixin.save]
        (``weights_only=True``: no code runs).

        Raises:
            FileNotFoundError: when ``path`` does not exist.
            ValueError: for a corrupt, truncated or foreign file.
        """
        return load_estimator(cls, path)
