"""A drop-in scikit-learn estimator for LVQMLN, with the constructor of upstream's
``prosemble.models.LVQMLN`` (same parameter names and defaults), trained by Lightning."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .backbones import ACTIVATIONS
from .callbacks import Lookahead, LossConvergence, RestoreBest
from .data import ArrayDataModule
from .functional import TRANSFERS
from .model import LVQMLN
from .numpy_engine import fit_numpy, numpy_engine_unsupported

__all__ = ["LVQMLNClassifier"]

# mixed_precision (upstream's name) → Lightning precision.
MIXED_PRECISION = {"bfloat16": "bf16-mixed", "float16": "16-mixed"}
BACKBONES = ("mlp", "cnn")
FREEZABLE = ("backbone", "prototypes")
LOOKAHEAD_KEYS = ("sync_period", "slow_step_size")
# Format marker and version of the files written by LVQMLNClassifier.save.
_FORMAT = "lvqmln-estimator"
_FORMAT_VERSION = 1
# Parameters that only the CNN backbone uses, with their defaults when left None.
_CNN_DEFAULTS = {"channels": [16, 32], "kernel_sizes": [3, 3]}
_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
ENGINES = ("auto", "numpy", "lightning")
# Precisions the numpy engine trains in (float32 and float64, as Lightning spells them).
_NUMPY_PRECISIONS = ("None", "32", "32-true", "64", "64-true")
# engine="auto" picks the numpy engine up to this many multiply-adds per forward pass of a
# step (rows x parameters). Measured on 2 cores: the numpy engine's epochs took 0.3x
# Lightning's at 4M, 0.7x at 67M and 1.0x at 100M (more cores move the break-even down).
_NUMPY_MAX_WORK = 1 << 25


class _History(Callback):
    """Per-epoch training (and validation) loss: one host read per epoch."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LVQMLN) -> None:
        metrics = trainer.callback_metrics
        self.train.append(float(metrics["train_loss"]))
        if "val_loss" in metrics:
            self.val.append(float(metrics["val_loss"]))


@contextmanager
def _lightning_output(verbose: bool) -> Iterator[None]:
    """Without ``verbose``: silence Lightning's info logs (device banners, tips, stop messages)
    and every warning not raised by lvqmln itself, for the duration of the block only."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"lvqmln_torch(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _transfer_name(transfer_fn: Any) -> str | Callable:
    if transfer_fn is None:
        return "identity"
    if callable(transfer_fn):
        # prosemble's own (JAX) transfers, e.g. prosemble.core.activations.sigmoid_beta: by name.
        module = getattr(transfer_fn, "__module__", None) or ""
        name = getattr(transfer_fn, "__name__", None)
        if module.split(".")[0] == "prosemble" and name in TRANSFERS:
            return name
        return transfer_fn
    if transfer_fn not in TRANSFERS:
        raise ValueError(
            f"Unknown transfer_fn {transfer_fn!r}. Valid transfer_fn: None (identity), "
            f"{', '.join(repr(t) for t in TRANSFERS)}, or a callable f(x, beta) on tensors"
        )
    return transfer_fn


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= minimum
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{none}, got {value!r}")


def _check_number(name: str, value: Any, positive: bool, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        ok = bool(np.isfinite(value)) and (value > 0 if positive else value >= 0)
    if not ok:
        kind = "a positive number" if positive else "a number >= 0"
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {kind}{none}, got {value!r}")


def _primitive(value: Any, name: str) -> Any:
    """``value`` as Python primitives (for a weights_only file), or a ValueError naming it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return _primitive(value.tolist(), name)
    if isinstance(value, Mapping):
        return {_primitive(k, name): _primitive(v, name) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_primitive(v, name) for v in value)
    if isinstance(value, list):
        return [_primitive(v, name) for v in value]
    raise ValueError(
        f"LVQMLNClassifier.save stores plain values only, but {name} is {value!r} "
        f"({type(value).__name__}); use a name (string) for it, or pickle the estimator instead"
    )


class LVQMLNClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """LVQMLN as a scikit-learn classifier (a drop-in for ``prosemble.models.LVQMLN``).

    ``x → backbone (MLP or CNN) → z``; prototypes live in the latent space of ``z``; the GLVQ
    loss trains both. Training runs on a Lightning ``Trainer`` (see :class:`LVQMLN`).

    Args:
        hidden_sizes: MLP hidden layer widths (``None`` → ``[10]``; ``[]`` → no hidden layer).
        latent_dim: dimension of the latent space.
        activation: ``sigmoid``, ``relu``, ``tanh``, ``leaky_relu`` or ``selu`` (applied after
            every layer, the last one included unless ``latent_activation=False``).
        beta: steepness of the transfer function.
        bb_lr: backbone learning rate (``None``: ``lr``).
        n_prototypes_per_class: int, list indexed by class, or dict label → count.
        max_iter: number of epochs (in full batch, the number of optimizer steps).
        lr: learning rate.
        epsilon: stop when the epoch loss changes by less than this (``None``: never); with
            ``patience`` it is the minimum improvement instead.
        random_seed: seeds initialisation and shuffling (same seed, same model).
        optimizer: a name (``adam``, ``adamw``, ``sgd``, ``rmsprop``, …), a dotted path or a
            ``torch.optim.Optimizer`` subclass.
        transfer_fn: ``None``/``"identity"``, ``"sigmoid_beta"``, ``"swish_beta"`` or a
            callable ``f(x, beta)`` on tensors.
        margin: added to μ before the transfer.
        batch_size: mini-batch size (``None``: full batch).
        lr_scheduler: one of the nine upstream schedule names, counted in optimizer steps.
        lr_scheduler_kwargs: the schedule's keyword arguments.
        prototypes_initializer: initializer name (``None``: ``stratified_random``) or a
            callable ``(z, y, n_per_class, generator) -> (prototypes, labels)``.
        patience: early stopping after this many epochs without improvement.
        restore_best: end on the parameters of the best monitored epoch.
        class_weight: ``'balanced'`` or dict label → weight (as loss weights).
        gradient_accumulation_steps: optimizer step every this many mini-batches.
        ema_decay: exponential moving average of the weights, in (0, 1).
        freeze_params: ``["backbone"]`` and/or ``["prototypes"]`` (kept bit-identical).
        lookahead: ``{"sync_period": 6, "slow_step_size": 0.5}`` (or a subset of the keys).
        mixed_precision: ``"bfloat16"`` or ``"float16"`` (Lightning ``bf16-mixed`` /
            ``16-mixed``).
        backbone: ``"mlp"`` (inputs ``(n, d)``) or ``"cnn"`` (images ``(n, C, H, W)``).
        channels: CNN output channels per conv layer (``None`` → ``[16, 32]``).
        kernel_sizes: CNN kernel size per conv layer (``None`` → ``[3, 3]``).
        latent_activation: apply the activation after the last backbone layer (upstream: yes).
        prototypes_initializer_kwargs: keyword arguments of the initializer.
        accelerator: Lightning accelerator (``"cpu"``, ``"gpu"``, ``"auto"``, …).
        devices: devices of that accelerator; the estimator trains on one device.
        precision: Lightning precision (``"32-true"``, ``"64-true"``, ``"bf16-mixed"``, …).
        verbose: show Lightning's progress bar and model summary (the numpy engine prints
            the losses about ten times per fit).
        engine: ``"auto"`` (default), ``"numpy"`` or ``"lightning"``. ``"numpy"`` trains
            without Lightning's loop, with the forward pass and hand-derived gradients in NumPy
            and the same initialisation, batches, torch optimizer and schedule (see
            :mod:`lvqmln_torch.numpy_engine`): many times faster on small data, and the same
            model up to rounding. It covers the MLP backbone with a built-in transfer on the CPU
            in float32 or float64 without gradient accumulation; ``"auto"`` uses it for those
            when a step is small (rows x parameters ≤ 2^25, about 33M) and Lightning
            otherwise.
            ``engine_`` records the engine a fit used.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] | None = None,
        latent_dim: int = 2,
        activation: str = "sigmoid",
        beta: float = 10.0,
        bb_lr: float | None = None,
        n_prototypes_per_class: int | Sequence[int] | Mapping[Any, int] = 1,
        max_iter: int = 100,
        lr: float = 0.01,
        epsilon: float | None = 1e-6,
        random_seed: int = 42,
        optimizer: str | type[torch.optim.Optimizer] = "adam",
        transfer_fn: str | Callable | None = None,
        margin: float = 0.0,
        batch_size: int | None = None,
        lr_scheduler: str | None = None,
        lr_scheduler_kwargs: Mapping[str, Any] | None = None,
        prototypes_initializer: str | Callable | None = None,
        patience: int | None = None,
        restore_best: bool = False,
        class_weight: str | Mapping[Any, float] | None = None,
        gradient_accumulation_steps: int | None = None,
        ema_decay: float | None = None,
        freeze_params: Sequence[str] | None = None,
        lookahead: Mapping[str, Any] | None = None,
        mixed_precision: str | None = None,
        backbone: str = "mlp",
        channels: Sequence[int] | None = None,
        kernel_sizes: Sequence[int] | None = None,
        latent_activation: bool = True,
        prototypes_initializer_kwargs: Mapping[str, Any] | None = None,
        accelerator: str = "cpu",
        devices: int | str | Sequence[int] = 1,
        precision: str | int | None = None,
        verbose: bool = False,
        engine: str = "auto",
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.latent_dim = latent_dim
        self.activation = activation
        self.beta = beta
        self.bb_lr = bb_lr
        self.n_prototypes_per_class = n_prototypes_per_class
        self.max_iter = max_iter
        self.lr = lr
        self.epsilon = epsilon
        self.random_seed = random_seed
        self.optimizer = optimizer
        self.transfer_fn = transfer_fn
        self.margin = margin
        self.batch_size = batch_size
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_kwargs = lr_scheduler_kwargs
        self.prototypes_initializer = prototypes_initializer
        self.patience = patience
        self.restore_best = restore_best
        self.class_weight = class_weight
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.ema_decay = ema_decay
        self.freeze_params = freeze_params
        self.lookahead = lookahead
        self.mixed_precision = mixed_precision
        self.backbone = backbone
        self.channels = channels
        self.kernel_sizes = kernel_sizes
        self.latent_activation = latent_activation
        self.prototypes_initializer_kwargs = prototypes_initializer_kwargs
        self.accelerator = accelerator
        self.devices = devices
        self.precision = precision
        self.verbose = verbose
        self.engine = engine

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        """Validate what the model and the Trainer do not validate themselves (fit only)."""
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"Unknown backbone {self.backbone!r}. Valid backbones: {', '.join(BACKBONES)} "
                "(for a custom nn.Module use LVQMLN with a Lightning Trainer)"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r}. Valid activations: "
                f"{', '.join(ACTIVATIONS)}"
            )
        _check_int("latent_dim", self.latent_dim, 1)
        _check_int("max_iter", self.max_iter, 1)
        _check_int("random_seed", self.random_seed, 0)
        _check_int("batch_size", self.batch_size, 1, allow_none=True)
        _check_int("patience", self.patience, 1, allow_none=True)
        _check_int("gradient_accumulation_steps", self.gradient_accumulation_steps, 1, True)
        _check_number("lr", self.lr, positive=True)
        _check_number("bb_lr", self.bb_lr, positive=True, allow_none=True)
        _check_number("beta", self.beta, positive=False)
        _check_number("epsilon", self.epsilon, positive=False, allow_none=True)
        if not isinstance(self.margin, int | float | np.integer | np.floating) or isinstance(
            self.margin, bool
        ):
            raise ValueError(f"margin must be a number, got {self.margin!r}")
        for name in ("restore_best", "latent_activation", "verbose"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.engine not in ENGINES:
            raise ValueError(
                f"Unknown engine {self.engine!r}. Valid engines: {', '.join(map(repr, ENGINES))}"
            )
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be None, {' or '.join(map(repr, MIXED_PRECISION))}, "
                f"got {self.mixed_precision!r}"
            )
        if self.freeze_params is not None:
            freeze = [self.freeze_params] if isinstance(self.freeze_params, str) else None
            entries = freeze or list(self.freeze_params)
            unknown = [f for f in entries if f not in FREEZABLE]
            if unknown:
                raise ValueError(
                    f"Unknown freeze_params entries {unknown}. Valid entries: "
                    f"{', '.join(FREEZABLE)}"
                )
        if self.lookahead is not None:
            if not isinstance(self.lookahead, Mapping):
                raise ValueError(
                    "lookahead must be None or a dict with keys "
                    f"{', '.join(LOOKAHEAD_KEYS)}, got {self.lookahead!r}"
                )
            unknown = sorted(set(self.lookahead) - set(LOOKAHEAD_KEYS))
            if unknown:
                raise ValueError(
                    f"Unknown lookahead keys {unknown}. Valid keys: {', '.join(LOOKAHEAD_KEYS)}"
                )
            Lookahead(**self.lookahead)  # validates the values
        if isinstance(self.devices, int | np.integer) and not isinstance(self.devices, bool):
            single = self.devices == 1
        elif isinstance(self.devices, Sequence) and not isinstance(self.devices, str):
            single = len(self.devices) == 1
        else:
            single = self.devices == "auto"
        if not single:
            raise ValueError(
                f"LVQMLNClassifier trains on one device: devices must be 1, 'auto' or a list of "
                f"one device index, got {self.devices!r}; for several devices use LVQMLN with a "
                "Lightning Trainer (or the lvqmln CLI)"
            )

    def _resolve_precision(self) -> str | int | None:
        if self.mixed_precision is None:
            return self.precision
        precision = MIXED_PRECISION[self.mixed_precision]
        if self.precision is not None and str(self.precision) != precision:
            raise ValueError(
                f"mixed_precision={self.mixed_precision!r} means precision={precision!r}, but "
                f"precision={self.precision!r} was also given; set only one of them"
            )
        return precision

    def _validate_X_y(
        self, X: Any, y: Any, dtype: type[np.floating]
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, dtype=dtype, allow_nd=True, y_numeric=False)
        self._check_rank(X)
        check_classification_targets(y)
        return X, y

    def _check_rank(self, X: np.ndarray) -> None:
        if self.backbone == "mlp" and X.ndim != 2:
            raise ValueError(
                f"backbone='mlp' needs 2-D inputs (n_samples, n_features), got shape {X.shape}; "
                "for images (n, C, H, W) use backbone='cnn'"
            )
        if self.backbone == "cnn" and X.ndim != 4:
            raise ValueError(
                f"backbone='cnn' needs 4-D images (n_samples, C, H, W), got shape {X.shape}"
            )

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "model_")
        dtype = np.float64 if self.model_.prototypes.dtype == torch.float64 else np.float32
        X = validate_data(self, X, dtype=dtype, allow_nd=True, reset=False)
        expected = tuple(self.input_shape_) if self.input_shape_ is not None else None
        if expected is not None and X.shape[1:] != expected:
            raise ValueError(
                f"X has per-sample shape {X.shape[1:]}, but {type(self).__name__} was fitted "
                f"on images of shape {expected} (C, H, W)"
            )
        if expected is None and X.ndim != 2:
            raise ValueError(
                f"X must be 2-D (n_samples, {self.n_features_in_}), got shape {X.shape}"
            )
        if not X.flags.writeable:  # torch cannot share read-only memory
            X = X.copy()
        return X

    # ------------------------------------------------------------------ training
    def _build_model(self, datamodule: ArrayDataModule, input_shape: Sequence[int] | None):
        return LVQMLN(
            backbone=self.backbone,
            in_features=datamodule.n_features,
            input_shape=input_shape,
            n_classes=datamodule.n_classes,
            classes=datamodule.classes_,
            hidden_sizes=[10] if self.hidden_sizes is None else list(self.hidden_sizes),
            latent_dim=self.latent_dim,
            activation=self.activation,
            latent_activation=bool(self.latent_activation),
            channels=_CNN_DEFAULTS["channels"] if self.channels is None else list(self.channels),
            kernel_sizes=(
                _CNN_DEFAULTS["kernel_sizes"]
                if self.kernel_sizes is None
                else list(self.kernel_sizes)
            ),
            n_prototypes_per_class=self.n_prototypes_per_class,
            prototypes_initializer=self.prototypes_initializer or "stratified_random",
            prototypes_initializer_kwargs=self.prototypes_initializer_kwargs,
            transfer=_transfer_name(self.transfer_fn),
            beta=float(self.beta),
            margin=float(self.margin),
            optimizer=self.optimizer,
            lr=float(self.lr),
            bb_lr=None if self.bb_lr is None else float(self.bb_lr),
            lr_scheduler=self.lr_scheduler,
            lr_scheduler_kwargs=self.lr_scheduler_kwargs,
            freeze=(
                [self.freeze_params]
                if isinstance(self.freeze_params, str)
                else list(self.freeze_params or [])
            ),
            ema_decay=self.ema_decay,
            lookahead=None if self.lookahead is None else dict(self.lookahead),
            seed=int(self.random_seed),
        )

    def fit(
        self,
        X: Any,
        y: Any,
        validation_data: tuple[Any, Any] | None = None,
        sample_weight: Any = None,
    ) -> LVQMLNClassifier:
        """Train from scratch.

        Args:
            X: ``(n, d)`` features (``backbone='mlp'``) or ``(n, C, H, W)`` images (``'cnn'``).
            y: ``(n,)`` labels of any sortable type.
            validation_data: optional ``(X_val, y_val)``: validation loss each epoch
                (``val_loss_history_``), monitored by ``patience`` and ``restore_best``.
            sample_weight: optional ``(n,)`` non-negative loss weights (times ``class_weight``).

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: for invalid inputs or parameters (naming the valid choices).
        """
        self._check_params()
        precision = self._resolve_precision()
        # Inputs in float32 (as upstream), or float64 when training in double precision.
        double = str(precision) in ("64", "64-true", "double")
        dtype = np.float64 if double else np.float32
        X, y = self._validate_X_y(X, y, dtype)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y, got 1 class "
                f"({classes.tolist()})"
            )
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
            if np.any(sample_weight < 0) or not sample_weight.sum() > 0:
                raise ValueError("sample_weight must be non-negative with a positive sum")
        X_val = y_val = None
        if validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (X_val, y_val)")
            X_val = validate_data(self, validation_data[0], dtype=dtype, allow_nd=True, reset=False)
            y_val = np.asarray(validation_data[1])
            if X_val.shape[1:] != X.shape[1:]:
                raise ValueError(
                    f"validation X has per-sample shape {X_val.shape[1:]} but X has {X.shape[1:]}"
                )
        n_batches = 1 if self.batch_size is None else -(-len(X) // self.batch_size)
        accumulation = self.gradient_accumulation_steps or 1
        if accumulation > 1 and n_batches == 1:
            raise ValueError(
                "gradient_accumulation_steps needs mini-batches, but the data come as one full "
                f"batch per epoch (batch_size={self.batch_size}, {len(X)} samples): set a "
                "smaller batch_size or drop gradient_accumulation_steps"
            )

        datamodule = ArrayDataModule(
            X,
            y,
            sample_weight=sample_weight,
            class_weight=self.class_weight,
            X_val=X_val,
            y_val=y_val,
            batch_size=self.batch_size,
            shuffle=True,
            seed=int(self.random_seed),
            dtype=torch.float64 if double else torch.float32,
        )
        input_shape = list(X.shape[1:]) if X.ndim == 4 else None
        model = self._build_model(datamodule, input_shape)

        engine = self._select_engine(precision, model, len(X))
        with _lightning_output(bool(self.verbose)):
            if engine == "numpy":
                history = fit_numpy(
                    model,
                    datamodule,
                    int(self.max_iter),
                    epsilon=None if self.epsilon is None else float(self.epsilon),
                    patience=None if self.patience is None else int(self.patience),
                    restore_best=bool(self.restore_best),
                    double=double,
                    verbose=bool(self.verbose),
                )
            else:
                history = self._fit_lightning(
                    model, datamodule, precision, accumulation, validation_data is not None
                )

        self.model_ = model
        self.engine_ = engine
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.input_shape_ = None if input_shape is None else tuple(input_shape)
        self._set_model_attributes()
        self.loss_history_ = np.asarray(history.train, dtype=np.float64)
        self.n_iter_ = len(history.train)
        self.loss_ = float(history.train[-1])
        self.val_loss_history_ = (
            np.asarray(history.val, dtype=np.float64) if validation_data is not None else None
        )
        monitored = self.val_loss_history_ if validation_data is not None else self.loss_history_
        self.best_loss_ = float(np.min(monitored))
        return self

    def _fit_lightning(
        self,
        model: LVQMLN,
        datamodule: ArrayDataModule,
        precision: str | int | None,
        accumulation: int,
        validate: bool,
    ) -> _History:
        """Train ``model`` with a Lightning ``Trainer`` and the estimator's callbacks."""
        monitor = "val_loss" if validate else "train_loss"
        history = _History()
        callbacks: list[Callback] = [history]
        if self.patience is not None:
            from lightning.pytorch.callbacks import EarlyStopping

            callbacks.append(
                EarlyStopping(
                    monitor=monitor,
                    patience=int(self.patience),
                    min_delta=float(self.epsilon or 0.0),
                    mode="min",
                    check_on_train_epoch_end=not validate,
                )
            )
        elif self.epsilon is not None:
            callbacks.append(LossConvergence(float(self.epsilon), monitor="train_loss"))
        if self.restore_best:
            callbacks.append(RestoreBest(monitor=monitor))
        trainer = Trainer(
            accelerator=self.accelerator,
            devices=1 if self.devices == "auto" else self.devices,  # never several
            precision=precision,
            max_epochs=int(self.max_iter),
            accumulate_grad_batches=int(accumulation),
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=bool(self.verbose),
            enable_model_summary=bool(self.verbose),
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if validate else 0,
        )
        trainer.fit(model, datamodule=datamodule)
        model.trainer = None  # drop the trainer (and the data it holds)
        return history

    def _numpy_unsupported(self, precision: str | int | None, model: LVQMLN) -> str | None:
        """Why the numpy engine cannot run this configuration, or ``None``."""
        reason = numpy_engine_unsupported(model)
        if reason is not None:
            return reason
        if self.accelerator != "cpu":
            return f"accelerator={self.accelerator!r} (it runs on the CPU only)"
        if str(precision) not in _NUMPY_PRECISIONS:
            return f"precision={precision!r} (it trains in float32 or float64 only)"
        if (self.gradient_accumulation_steps or 1) > 1:
            return "gradient_accumulation_steps (it steps after every batch)"
        return None

    def _select_engine(self, precision: str | int | None, model: LVQMLN, n_samples: int) -> str:
        """``"numpy"`` or ``"lightning"`` for this fit (see the ``engine`` parameter)."""
        if self.engine == "lightning":
            return "lightning"
        reason = self._numpy_unsupported(precision, model)
        if self.engine == "numpy":
            if reason is not None:
                raise ValueError(
                    f"engine='numpy' cannot train this configuration: {reason}; use "
                    "engine='auto' (which then picks Lightning) or engine='lightning'"
                )
            return "numpy"
        if reason is not None:
            return "lightning"
        # Multiply-adds of a forward pass per step: rows x (weights + prototype entries).
        rows = min(self.batch_size or n_samples, n_samples)
        work = rows * sum(p.numel() for p in model.parameters())
        return "numpy" if work <= _NUMPY_MAX_WORK else "lightning"

    def _set_model_attributes(self) -> None:
        """``prototypes_`` and ``prototype_labels_`` (original labels, as upstream) from the
        fitted module."""
        model = self.model_
        self.prototypes_ = model.prototypes.detach().cpu().numpy().copy()
        self.prototype_labels_ = self.classes_[model.prototype_labels.cpu().numpy()]

    # ------------------------------------------------------------------ inference
    def predict(self, X: Any) -> np.ndarray:
        """``(n,)`` labels of the nearest prototypes (original labels, from ``classes_``)."""
        X = self._validate_predict_X(X)
        return self.classes_[self.model_.predict_indices(X).cpu().numpy()]

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, n_classes)`` softmax over classes of −(per-class minimum squared distance),
        columns in ``classes_`` order."""
        X = self._validate_predict_X(X)
        return self.model_.predict_proba(X).cpu().numpy()

    def transform(self, X: Any) -> np.ndarray:
        """``(n, latent_dim)`` latent codes."""
        X = self._validate_predict_X(X)
        return self.model_.transform(X).cpu().numpy()

    def plot_latent(self, X: Any, y: Any = None, path: str | os.PathLike | None = None) -> Any:
        """Draw the latent space of ``X`` with the prototypes (and the decision regions when
        the latent space is 2-D); see :func:`lvqmln_torch.plotting.plot_latent_space`.

        Args:
            X: inputs as for :meth:`predict`.
            y: optional labels to colour the samples by (default: the predicted labels).
            path: optional PNG file to write.

        Returns:
            The matplotlib ``Figure``.
        """
        from .plotting import plot_latent_space

        latent = self.transform(X)
        labels = self.predict(X) if y is None else np.asarray(y)
        return plot_latent_space(
            latent,
            labels=labels,
            prototypes=self.prototypes_,
            prototype_labels=self.prototype_labels_,
            classes=self.classes_,
            predict_fn=self._predict_latent,
            path=path,
            title=f"{type(self).__name__} latent space",
        )

    def _predict_latent(self, z: Any) -> np.ndarray:
        """Labels of the nearest prototypes for points ``(m, latent_dim)`` of latent space."""
        check_is_fitted(self, "model_")
        z = np.asarray(z, dtype=np.float64)
        prototypes = self.prototypes_.astype(np.float64)
        distances = (
            (z**2).sum(1)[:, None] + (prototypes**2).sum(1)[None, :] - 2.0 * z @ prototypes.T
        )
        return self.prototype_labels_[np.argmin(distances, axis=1)]

    @classmethod
    def from_prosemble(cls, obj: Any, input_shape: Sequence[int] | None = None) -> Any:
        """A fitted estimator equivalent to a fitted ``prosemble.models.LVQMLN`` (duck-typed);
        see :func:`lvqmln_torch.migration.from_prosemble`."""
        from .migration import from_prosemble

        return from_prosemble(obj, input_shape=input_shape)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # the latent codes are float32
        return tags

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted estimator to one file, atomically (a temporary file in the same
        directory, then renamed): parameters, the module's hyperparameters and weights, and
        the fitted attributes, as plain values and tensors (``torch.load(weights_only=True)``).

        Raises:
            sklearn.exceptions.NotFittedError: before ``fit``.
            ValueError: when a parameter is a callable (``transfer_fn``,
                ``prototypes_initializer``): only names can be stored.
        """
        check_is_fitted(self, "model_")
        params = self.get_params(deep=False)
        if isinstance(params["optimizer"], type):
            params["optimizer"] = (
                f"{params['optimizer'].__module__}.{params['optimizer'].__qualname__}"
            )
        payload = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "params": {k: _primitive(v, k) for k, v in params.items()},
            "hparams": {k: _primitive(v, f"hparams[{k}]") for k, v in self.model_.hparams.items()},
            "state_dict": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "fitted": {
                "classes_": _primitive(self.classes_.tolist(), "classes_"),
                "classes_dtype": self.classes_.dtype.str,
                "n_features_in_": int(self.n_features_in_),
                "input_shape_": None if self.input_shape_ is None else list(self.input_shape_),
                "n_iter_": int(self.n_iter_),
                "loss_": None if self.loss_ is None else float(self.loss_),
                "loss_history_": torch.as_tensor(self.loss_history_, dtype=torch.float64),
                "val_loss_history_": None
                if self.val_loss_history_ is None
                else torch.as_tensor(self.val_loss_history_, dtype=torch.float64),
                "best_loss_": None if self.best_loss_ is None else float(self.best_loss_),
                "engine_": self.engine_,
            },
        }
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".lvqmln-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> LVQMLNClassifier:
        """Read an estimator written by :meth:`save` (``weights_only=True``: no code runs).

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
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"{path!r} was not written by LVQMLNClassifier.save")
        if payload.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{path!r} has format version {payload.get('format_version')!r}; this version "
                f"of lvqmln reads version {_FORMAT_VERSION}"
            )
        try:
            fitted = payload["fitted"]
            estimator = cls(**payload["params"])
            model = LVQMLN(**payload["hparams"])
            model.load_state_dict(payload["state_dict"], strict=True)
            model.on_load_checkpoint({"state_dict": payload["state_dict"]})
            estimator.model_ = model
            estimator.classes_ = np.asarray(
                fitted["classes_"], dtype=np.dtype(fitted["classes_dtype"])
            )
            estimator.n_classes_ = len(estimator.classes_)
            estimator.n_features_in_ = fitted["n_features_in_"]
            shape = fitted["input_shape_"]
            estimator.input_shape_ = None if shape is None else tuple(shape)
            estimator.n_iter_ = fitted["n_iter_"]
            estimator.loss_ = fitted["loss_"]
            estimator.loss_history_ = fitted["loss_history_"].numpy()
            val = fitted["val_loss_history_"]
            estimator.val_loss_history_ = None if val is None else val.numpy()
            estimator.best_loss_ = fitted["best_loss_"]
            estimator.engine_ = fitted.get("engine_")  # absent from files of 0.1.0
            estimator._set_model_attributes()
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"{path!r} is damaged or inconsistent: {type(err).__name__}: {err}"
            ) from err
        return estimator
