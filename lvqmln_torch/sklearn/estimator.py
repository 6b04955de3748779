"""A drop-in scikit-learn estimator for LVQMLN, with the constructor of upstream's
``prosemble.models.LVQMLN`` (same parameter names and defaults). Small MLP problems train on the
numpy engine without Lightning (which is then never imported); the rest on a Lightning
``Trainer`` ([`lvqmln_torch.sklearn.lightning_fit`][lvqmln_torch.sklearn.lightning_fit])."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.network import PrototypeNetwork
from ..core.validation import check_n_classes, check_sample_weight
from ..data.arrays import ArrayData
from ..training.config import module_config
from .calibration import CalibrationMixin
from .engines import select_engine
from .explanations import ExplanationsMixin
from .numpy_engine import fit_estimator_numpy
from .output import quiet
from .params import (
    check_accumulation,
    check_input_rank,
    check_params,
    module_arguments,
    predict_inputs,
    resolve_precision,
    validation_arrays,
)
from .persistence import PersistenceMixin, set_fitted
from .robustness import RobustnessMixin

__all__ = ["LVQMLNClassifier", "from_prosemble"]


class LVQMLNClassifier(
    PersistenceMixin,
    CalibrationMixin,
    ExplanationsMixin,
    RobustnessMixin,
    ClassifierMixin,
    TransformerMixin,
    BaseEstimator,
):
    """LVQMLN as a scikit-learn classifier (a drop-in for ``prosemble.models.LVQMLN``).

    ``x → backbone (MLP or CNN) → z``; prototypes live in the latent space of ``z``; the GLVQ
    loss trains both. Training runs on a Lightning ``Trainer`` (see [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]).

    Args:
        hidden_sizes: MLP hidden layer widths (``None`` → ``[10]``; ``[]`` → no hidden layer).
        latent_dim: dimension of the latent space.
        activation: ``sigmoid``, ``relu``, ``tanh``, ``leaky_relu`` or ``selu`` (applied after
            every layer, the last one included unless ``latent_activation=False``); ``None``
            (default): the backbone's, sigmoid for the MLP (upstream's) and tanh for the CNN.
        beta: steepness of the transfer function.
        bb_lr: backbone learning rate (``None``: ``lr`` for the MLP, ``0.05 · lr`` for the CNN).
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
        lookahead: ``{"sync_period": …, "slow_step_size": …}`` or a subset of the keys (the
            others from [`LOOKAHEAD_DEFAULTS`][lvqmln_torch.core.validation.LOOKAHEAD_DEFAULTS]).
        mixed_precision: ``"bfloat16"`` or ``"float16"`` (Lightning ``bf16-mixed`` /
            ``16-mixed``).
        backbone: ``"mlp"`` (inputs ``(n, d)``), ``"cnn"`` (images ``(n, C, H, W)``) or
            ``"identity"`` (no backbone: prototypes in input space, the shallow GLVQ).
        channels: CNN output channels per conv layer.
        kernel_sizes: CNN kernel size per conv layer.
        cnn_head: CNN head, ``"pooled"``, ``"flatten"`` or ``"mean"`` (upstream's).
        conv_activation: CNN activation after the convolutions and dense layers.
        cnn_hidden: CNN dense layer widths between the pooled features and the latent layer.
        standardize_input: CNN only: standardise the pixels with one global mean and standard
            deviation measured on the training data and kept in the model. The CNN's
            parameters left ``None`` take [`CNN_DEFAULTS`][lvqmln_torch.sklearn.params.CNN_DEFAULTS]
            (see [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] for their meaning).
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
            [`lvqmln_torch.sklearn.numpy_engine`][lvqmln_torch.sklearn.numpy_engine]): many times faster on small data, and the same
            model up to rounding. It covers the MLP backbone with a built-in transfer on the CPU
            in float32 or float64 without gradient accumulation; ``"auto"`` uses it for those
            when a step is small (rows x parameters ≤ 2^25, about 33M) and Lightning
            otherwise.
            ``engine_`` records the engine a fit used.
        project_prototypes: at the end of training replace each prototype by the latent
            code of its nearest training sample of the same class (ProtoPNet's "push"), so
            every prototype is a real example; ``prototype_sources_`` holds those samples'
            rows of ``X`` (``None`` without projection).
        lipschitz: ``None``, ``"spectral"`` or ``"orthogonal"`` (MLP only): backbone layers
            of norm 1 (see [`constrain`][lvqmln_torch.core.lipschitz_control.constrain]).
        robust_eps: train for a certified L2 radius of this size in input space (a hinge on
            the certified radius added to the loss; 0: off).
        robust_weight: the weight of that hinge.

    Explanations (`explain`, `confidence`, `prototype_exemplars`) and the
    reject option (`predict_with_reject`, `accuracy_rejection_curve`,
    `rejection_threshold`) come from
    [`ExplanationsMixin`][lvqmln_torch.sklearn.explanations.ExplanationsMixin]; `calibrate`,
    `temperature_`, `nonconformity` from [`CalibrationMixin`][lvqmln_torch.sklearn.calibration.CalibrationMixin]; certified
    radii (`certify`, `certified_accuracy`, `lipschitz_bound`) from
    [`RobustnessMixin`][lvqmln_torch.sklearn.robustness.RobustnessMixin].
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] | None = None,
        latent_dim: int = 2,
        activation: str | None = None,
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
        cnn_head: str | None = None,
        standardize_input: bool | None = None,
        conv_activation: str | None = None,
        cnn_hidden: Sequence[int] | None = None,
        latent_activation: bool = True,
        prototypes_initializer_kwargs: Mapping[str, Any] | None = None,
        accelerator: str = "cpu",
        devices: int | str | Sequence[int] = 1,
        precision: str | int | None = None,
        verbose: bool = False,
        engine: str = "auto",
        project_prototypes: bool = False,
        lipschitz: str | None = None,
        robust_eps: float = 0.0,
        robust_weight: float = 1.0,
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
        self.cnn_head = cnn_head
        self.standardize_input = standardize_input
        self.conv_activation = conv_activation
        self.cnn_hidden = cnn_hidden
        self.latent_activation = latent_activation
        self.prototypes_initializer_kwargs = prototypes_initializer_kwargs
        self.accelerator = accelerator
        self.devices = devices
        self.precision = precision
        self.verbose = verbose
        self.engine = engine
        self.project_prototypes = project_prototypes
        self.lipschitz = lipschitz
        self.robust_eps = robust_eps
        self.robust_weight = robust_weight

    # ------------------------------------------------------------------ validation
    def _validate_X_y(
        self, X: Any, y: Any, dtype: type[np.floating], backbone: str
    ) -> tuple[np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, dtype=dtype, allow_nd=True, y_numeric=False)
        check_input_rank(X, backbone)
        check_classification_targets(y)
        return X, y

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        return predict_inputs(self, X)

    # ------------------------------------------------------------------ training
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
        params = check_params(self.get_params(deep=False))
        precision = resolve_precision(params["mixed_precision"], self.precision)
        # Inputs in float32 (as upstream), or float64 when training in double precision.
        double = str(precision) in ("64", "64-true", "double")
        dtype = np.float64 if double else np.float32
        X, y = self._validate_X_y(X, y, dtype, params["backbone"])
        if params["project_prototypes"] and "prototypes" in (params["freeze_params"] or ()):
            raise ValueError(
                "project_prototypes=True replaces the prototypes, but freeze_params freezes "
                "them; use one or the other"
            )
        classes = np.unique(y)
        check_n_classes(len(classes), f"y ({classes.tolist()})")
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, len(X))
        X_val, y_val = validation_arrays(self, validation_data, X, dtype)
        batch_size = params["batch_size"]
        accumulation = check_accumulation(params, len(X))
        input_shape = list(X.shape[1:]) if X.ndim == 4 else None
        arguments = module_arguments(
            params,
            in_features=X.shape[1] if X.ndim == 2 else None,
            input_shape=input_shape,
            classes=classes,
        )
        config = module_config(arguments)
        network = PrototypeNetwork.from_config(config.hparams, config.custom_backbone)
        engine = select_engine(
            params,
            config.hparams,
            accelerator=self.accelerator,
            precision=precision,
            rows=min(batch_size or len(X), len(X)),
            n_parameters=sum(p.numel() for p in network.parameters()),
        )
        data_kwargs = dict(
            sample_weight=sample_weight,
            class_weight=params["class_weight"],
            X_val=X_val,
            y_val=y_val,
            batch_size=batch_size,
            shuffle=True,
            seed=params["random_seed"],
            dtype=torch.float64 if double else torch.float32,
        )
        with quiet(params["verbose"]):
            if engine == "numpy":
                data = ArrayData(X, y, **data_kwargs)
                history = fit_estimator_numpy(network, config, data, params, double)
            else:
                from .lightning_fit import fit_lightning

                network, history = fit_lightning(
                    arguments, X, y, data_kwargs, params, precision, accumulation
                )
        set_fitted(
            self,
            network,
            config.hparams if engine == "numpy" else network.hparams,
            classes,
            input_shape,
            X.shape[1],
            history.train,
            history.val if validation_data is not None else None,
            engine=engine,
        )
        return self

    @property
    def model_(self) -> Any:
        """The fitted model as an [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] LightningModule (to train on
        with a ``Trainer``, checkpoint or export). After a fit on the numpy engine it is built
        on first access (importing Lightning), from the same weights, and replaces
        ``network_``, so the two stay one model."""
        check_is_fitted(self, "network_")
        from .lightning_fit import as_module

        self.network_ = as_module(self.network_, self.module_hparams_)
        return self.network_

    # ------------------------------------------------------------------ inference
    def predict(self, X: Any) -> np.ndarray:
        """``(n,)`` labels of the nearest prototypes (original labels, from ``classes_``)."""
        X = self._validate_predict_X(X)
        return self.classes_[self.network_.predict_indices(X).cpu().numpy()]

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, n_classes)`` softmax over classes of −(per-class minimum squared distance) /
        ``temperature_`` (1 until ``calibrate``), columns in ``classes_`` order."""
        X = self._validate_predict_X(X)
        return self.network_.predict_proba(X).cpu().numpy()

    def transform(self, X: Any) -> np.ndarray:
        """``(n, latent_dim)`` latent codes."""
        X = self._validate_predict_X(X)
        return self.network_.transform(X).cpu().numpy()

    @classmethod
    def from_prosemble(cls, obj: Any, input_shape: Sequence[int] | None = None) -> Any:
        """A fitted estimator equivalent to a fitted ``prosemble.models.LVQMLN`` (duck-typed);
        see [`lvqmln_torch.sklearn.migration.estimator_from_prosemble`][lvqmln_torch.sklearn.migration.estimator_from_prosemble]."""
        from .migration import estimator_from_prosemble

        return estimator_from_prosemble(cls, obj, input_shape=input_shape)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # the latent codes are float32
        return tags


def from_prosemble(obj: Any, input_shape: Sequence[int] | None = None) -> LVQMLNClassifier:
    """A fitted [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier] equivalent to a fitted prosemble ``LVQMLN`` (see
    [`lvqmln_torch.sklearn.migration.estimator_from_prosemble`][lvqmln_torch.sklearn.migration.estimator_from_prosemble])."""
    return LVQMLNClassifier.from_prosemble(obj, input_shape=input_shape)
