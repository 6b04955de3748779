"""The LVQMLN LightningModule: a backbone maps inputs to a latent space where class prototypes
live; the GLVQ loss trains both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from sklearn.exceptions import NotFittedError
from torch import Tensor, nn
from torchmetrics import MeanMetric
from typing_extensions import override

from . import functional as F
from .backbones import CNNBackbone, MLPBackbone, get_activation
from .initializers import (
    check_initializer,
    initialize_prototypes,
    prototype_labels_for,
    resolve_prototypes_per_class,
)
from .optimizers import OPTIMIZERS, resolve_optimizer
from .schedules import ScheduleLR, build_schedule, check_schedule_args

__all__ = ["LVQMLN"]

BACKBONES = ("mlp", "cnn")
FREEZABLE = ("backbone", "prototypes")
DEFAULT_ACTIVATION = {"mlp": "sigmoid", "cnn": "relu"}
# Latent codes are computed in chunks of this many samples for initialisation and inference.
_CHUNK = 65536


def _to_primitive(value: Any) -> Any:
    """Numpy scalars / arrays and tensors to plain Python values (checkpoint-safe)."""
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return {_to_primitive(k): _to_primitive(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_primitive(v) for v in value]
    return value


class LVQMLN(LightningModule):
    """LVQ Multi-Layer Network.

    ``x → backbone → z (n, latent_dim)``; prototypes ``W (P, latent_dim)`` with labels
    ``c (P,)`` live in latent space (they are not passed through the backbone). The GLVQ loss
    on the squared Euclidean distances trains backbone and prototypes jointly.

    Sizes that the data determine (``in_features`` / ``input_shape``, ``n_classes``,
    ``classes``) may be left ``None``: they are read from the datamodule in ``setup`` and
    written back to the hyperparameters, so checkpoints reload without the data.

    Args:
        backbone: ``"mlp"``, ``"cnn"`` or any ``nn.Module`` mapping inputs to
            ``(n, latent_dim)`` (then pass it again to ``load_from_checkpoint``).
        in_features: MLP input dimension.
        input_shape: CNN image shape ``(C, H, W)``.
        n_classes: number of classes.
        classes: the original labels, in class-index order (any sortable values).
        hidden_sizes: MLP hidden layer widths.
        latent_dim: dimension of the latent space.
        activation: backbone activation (default sigmoid for MLP, relu for CNN).
        latent_activation: apply the activation after the last backbone layer.
        channels: CNN output channels per conv layer.
        kernel_sizes: CNN kernel size per conv layer.
        n_prototypes_per_class: int, list indexed by class, or dict class → count.
        prototypes_initializer: name (see :mod:`lvqmln_torch.initializers`) or callable
            ``(z, y, n_per_class, generator) -> (prototypes, labels)``.
        prototypes_initializer_kwargs: keyword arguments of the initializer.
        initial_prototypes: explicit ``(P, latent_dim)`` initial prototypes.
        initial_prototype_labels: their ``(P,)`` class indices (required with them).
        transfer: ``"identity"``, ``"sigmoid_beta"`` or ``"swish_beta"``.
        beta: transfer steepness.
        margin: added to μ before the transfer.
        optimizer: name, dotted path or ``torch.optim.Optimizer`` subclass.
        optimizer_kwargs: extra keyword arguments of the optimizer.
        lr: learning rate (of the prototypes, and of the backbone unless ``bb_lr``).
        bb_lr: backbone learning rate: a second parameter group of the same optimizer.
        lr_scheduler: one of the nine upstream schedules, stepped per optimizer step.
        lr_scheduler_kwargs: the schedule's keyword arguments (upstream names).
        freeze: ``["backbone"]`` and/or ``["prototypes"]``: kept bit-identical.
        ema_decay: keep an exponential moving average of the weights (see
            :class:`~lvqmln_torch.callbacks.ExponentialMovingAverage`).
        lookahead: ``{"sync_period": 6, "slow_step_size": 0.5}`` (see
            :class:`~lvqmln_torch.callbacks.Lookahead`).
        seed: seeds the backbone and prototype initialisation (identical on every rank).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "mlp",
        in_features: int | None = None,
        input_shape: Sequence[int] | None = None,
        n_classes: int | None = None,
        classes: Sequence[Any] | None = None,
        hidden_sizes: Sequence[int] = (10,),
        latent_dim: int = 2,
        activation: str | None = None,
        latent_activation: bool = True,
        channels: Sequence[int] = (16, 32),
        kernel_sizes: Sequence[int] = (3, 3),
        n_prototypes_per_class: int | Sequence[int] | Mapping[Any, int] = 1,
        prototypes_initializer: str | Callable = "stratified_random",
        prototypes_initializer_kwargs: Mapping[str, Any] | None = None,
        initial_prototypes: Any = None,
        initial_prototype_labels: Any = None,
        transfer: str = "identity",
        beta: float = 10.0,
        margin: float = 0.0,
        optimizer: str | type[torch.optim.Optimizer] = "adam",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        lr: float = 0.01,
        bb_lr: float | None = None,
        lr_scheduler: str | None = None,
        lr_scheduler_kwargs: Mapping[str, Any] | None = None,
        freeze: Sequence[str] = (),
        ema_decay: float | None = None,
        lookahead: Mapping[str, Any] | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        custom_backbone = backbone if isinstance(backbone, nn.Module) else None
        if custom_backbone is None and backbone not in BACKBONES:
            raise ValueError(
                f"Unknown backbone {backbone!r}. Valid backbones: {', '.join(BACKBONES)}, "
                "or an nn.Module"
            )
        F.get_transfer(transfer)  # fail fast on an unknown name
        if activation is not None:
            get_activation(activation)  # also when the backbone is built later, in setup
        optimizer_cls = resolve_optimizer(optimizer)
        if lr_scheduler is not None:
            check_schedule_args(lr_scheduler, lr_scheduler_kwargs)
        _check_positive("lr", lr)
        if bb_lr is not None:
            _check_positive("bb_lr", bb_lr)
        freeze = _check_freeze(freeze)
        check_initializer(prototypes_initializer, prototypes_initializer_kwargs)
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay!r}")
        if initial_prototypes is not None:
            initial_prototypes, initial_prototype_labels = _check_initial_prototypes(
                initial_prototypes, initial_prototype_labels, latent_dim
            )
        elif initial_prototype_labels is not None:
            raise ValueError("initial_prototype_labels needs initial_prototypes")

        # Hyperparameters are primitives only, so checkpoints load with weights_only=True.
        if not isinstance(optimizer, str):
            optimizer = f"{optimizer_cls.__module__}.{optimizer_cls.__qualname__}"
        classes = _to_primitive(classes)
        input_shape = _to_primitive(input_shape)
        hidden_sizes, channels, kernel_sizes = map(list, (hidden_sizes, channels, kernel_sizes))
        n_prototypes_per_class = _to_primitive(n_prototypes_per_class)
        ignore = ["backbone"] if custom_backbone is not None else []
        if callable(prototypes_initializer):
            ignore.append("prototypes_initializer")
        self.save_hyperparameters(ignore=ignore)
        if custom_backbone is not None:
            self.hparams["backbone"] = "custom"

        self._custom_backbone = custom_backbone
        self._initializer = prototypes_initializer
        self._transfer = F.get_transfer(transfer)
        self._optimizer_cls = optimizer_cls
        self._prototypes_ready = False
        self.backbone: nn.Module | None = None
        self.prototypes: nn.Parameter | None = None
        self.register_buffer("prototype_labels", None)
        self.train_loss, self.val_loss, self.test_loss = (
            _WeightedMean(nan_strategy="disable") for _ in range(3)
        )
        self.train_acc, self.val_acc, self.test_acc = (
            MeanMetric(nan_strategy="disable") for _ in range(3)
        )
        # Optimizer step of the first non-finite training loss (-1: none); read once per epoch
        # so the steps themselves never wait for the device.
        self.register_buffer("_nonfinite_step", torch.tensor(-1), persistent=False)
        if self._sizes_known():
            self._build()

    # ------------------------------------------------------------------ construction
    def _sizes_known(self) -> bool:
        hp = self.hparams
        if hp.n_classes is None and hp.initial_prototype_labels is None:
            return False
        if self._custom_backbone is not None:
            return True
        return hp.in_features is not None if hp.backbone == "mlp" else hp.input_shape is not None

    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.hparams.seed) + offset)

    def _build(self) -> None:
        """Create backbone, prototype parameter and label buffer from the hyperparameters."""
        hp = self.hparams
        activation = hp.activation or DEFAULT_ACTIVATION.get(hp.backbone, "sigmoid")
        if self._custom_backbone is not None:
            backbone = self._custom_backbone
        elif hp.backbone == "mlp":
            if hp.in_features is None:
                raise ValueError("backbone='mlp' needs in_features (or a datamodule that has it)")
            backbone = MLPBackbone(
                hp.in_features,
                hp.hidden_sizes,
                hp.latent_dim,
                activation,
                hp.latent_activation,
                generator=self._generator(0),
            )
        else:
            if hp.input_shape is None:
                raise ValueError("backbone='cnn' needs input_shape (C, H, W)")
            backbone = CNNBackbone(
                hp.input_shape,
                hp.channels,
                hp.kernel_sizes,
                hp.latent_dim,
                activation,
                hp.latent_activation,
                generator=self._generator(0),
            )
        if hp.initial_prototypes is not None:
            prototypes = torch.tensor(hp.initial_prototypes, dtype=torch.get_default_dtype())
            labels = torch.tensor(hp.initial_prototype_labels, dtype=torch.long)
            n_classes = hp.n_classes if hp.n_classes is not None else int(labels.max()) + 1
            if int(labels.max()) >= n_classes:
                raise ValueError(
                    f"initial_prototype_labels must be class indices in [0, {n_classes}), "
                    f"got max {int(labels.max())}"
                )
            hp.n_classes = n_classes
            self._prototypes_ready = True
        else:
            counts = resolve_prototypes_per_class(
                hp.n_prototypes_per_class, hp.n_classes, hp.classes
            )
            prototypes = torch.zeros(sum(counts), hp.latent_dim)
            labels = prototype_labels_for(counts)
        if hp.n_classes < 2:
            raise ValueError(f"LVQMLN needs at least 2 classes, got n_classes={hp.n_classes}")
        if hp.classes is not None and len(hp.classes) != hp.n_classes:
            raise ValueError(f"classes has {len(hp.classes)} entries but n_classes={hp.n_classes}")
        self.backbone = backbone
        self.prototypes = nn.Parameter(prototypes)
        self.register_buffer("prototype_labels", labels)
        # Frozen tensors never enter the optimizer and never get a gradient: bit-identical.
        if "backbone" in hp.freeze:
            self.backbone.requires_grad_(False)
        if "prototypes" in hp.freeze:
            self.prototypes.requires_grad_(False)

    @property
    def is_built(self) -> bool:
        return self.backbone is not None

    @property
    def classes_(self) -> np.ndarray:
        """The original labels in class-index order (``arange(n_classes)`` if none were given)."""
        if self.hparams.classes is not None:
            return np.asarray(self.hparams.classes)
        if self.hparams.n_classes is None:
            raise NotFittedError("LVQMLN does not know its classes yet: fit it first")
        return np.arange(self.hparams.n_classes)

    def _read_sizes_from(self, source: Any) -> None:
        """Fill unknown sizes from a datamodule-like object (``n_features`` / ``input_shape``,
        ``n_classes``, ``classes_``) and record them in the hyperparameters."""
        hp = self.hparams
        if hp.n_classes is None and getattr(source, "n_classes", None) is not None:
            hp.n_classes = int(source.n_classes)
        if hp.classes is None and getattr(source, "classes_", None) is not None:
            hp.classes = _to_primitive(source.classes_)
        if hp.backbone == "mlp" and hp.in_features is None:
            if getattr(source, "input_shape", None) is not None:
                raise ValueError(
                    f"backbone='mlp' needs flat (n, d) inputs but the data are images of shape "
                    f"{tuple(source.input_shape)}; use backbone='cnn'"
                )
            if getattr(source, "n_features", None) is not None:
                hp.in_features = int(source.n_features)
        if hp.backbone == "cnn" and hp.input_shape is None:
            if getattr(source, "input_shape", None) is None:
                raise ValueError(
                    "backbone='cnn' needs 4-D image inputs (n, C, H, W); the data are flat"
                )
            hp.input_shape = _to_primitive(source.input_shape)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare(self, datamodule: Any = None, initialize: bool = True) -> None:
        """Build the backbone and the prototypes (reading the sizes left ``None`` from
        ``datamodule``) and, with ``initialize``, initialise the prototypes from the untrained
        backbone's latent codes of the datamodule's ``train_tensors()``. Steps already done
        are skipped; ``Trainer.fit`` calls this in ``setup``.

        Raises:
            ValueError: when the sizes are neither given nor readable from ``datamodule``.
        """
        if not self.is_built:
            if datamodule is not None:
                self._read_sizes_from(datamodule)
            if not self._sizes_known():
                raise ValueError(
                    "LVQMLN cannot infer its sizes: pass in_features (MLP) or input_shape (CNN) "
                    "and n_classes, or use a datamodule that exposes n_features / input_shape "
                    "and n_classes (such as ArrayDataModule)"
                )
            self._build()
        if initialize and not self._prototypes_ready and hasattr(datamodule, "train_tensors"):
            self._initialize_from_data(*datamodule.train_tensors()[:2])

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        self.prepare(datamodule, initialize=stage == "fit" and self.trainer.ckpt_path is None)

    @override
    def on_train_start(self) -> None:
        if not self._prototypes_ready:
            xs, ys = [], []
            for batch in self.trainer.train_dataloader:
                x, y, _ = _unpack(batch)
                xs.append(x)
                ys.append(y)
            self._initialize_from_data(torch.cat(xs), torch.cat(ys))
        if self.trainer.accumulate_grad_batches > 1 and self.trainer.num_training_batches == 1:
            raise ValueError(
                "gradient accumulation needs mini-batches, but the data come as one full batch "
                "per epoch: set a batch_size or drop accumulate_grad_batches"
            )

    @override
    def on_test_start(self) -> None:
        self._check_fitted()  # an untrained model would be scored on zero prototypes

    @override
    def on_predict_start(self) -> None:
        self._check_fitted()

    @override
    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        # Weights loaded by hand (not through a checkpoint hook) include trained prototypes.
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if "prototypes" in state_dict:
            self._prototypes_ready = True
        return result

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._prototypes_ready = True
        if self._trainer is not None and self.is_built:
            from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision

            # Lightning loads the weights before the precision plugin converts the module;
            # convert first, or a 64-true resume would round the float64 weights to float32.
            plugin = self.trainer.precision_plugin
            if isinstance(plugin, DoublePrecision | HalfPrecision):
                plugin.convert_module(self)

    @override
    def configure_callbacks(self) -> list[Callback]:
        from .callbacks import ExponentialMovingAverage, Lookahead

        callbacks: list[Callback] = []
        if self.hparams.lookahead is not None:
            callbacks.append(Lookahead(**self.hparams.lookahead))
        if self.hparams.ema_decay is not None:
            callbacks.append(ExponentialMovingAverage(self.hparams.ema_decay))
        return callbacks

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: ``prototypes`` (``lr``) and ``backbone``
        (``bb_lr``, else ``lr``); frozen parameters are left out.

        Raises:
            ValueError: when ``freeze`` covers every parameter.
        """
        hp = self.hparams
        groups = []
        if "prototypes" not in hp.freeze:
            groups.append({"params": [self.prototypes], "lr": hp.lr, "name": "prototypes"})
        backbone_params = [p for p in self.backbone.parameters() if p.requires_grad]
        if backbone_params:
            bb_lr = hp.bb_lr if hp.bb_lr is not None else hp.lr
            groups.append({"params": backbone_params, "lr": bb_lr, "name": "backbone"})
        if not groups:
            raise ValueError("freeze covers every parameter: there is nothing to train")
        return groups

    @property
    def elementwise_optimizer(self) -> bool:
        """Whether the optimizer is one of the built-in :data:`~lvqmln_torch.optimizers.OPTIMIZERS`,
        which update every parameter element by element (so grouping does not matter)."""
        return self._optimizer_cls in OPTIMIZERS.values()

    def build_optimizer(
        self, groups: list[dict[str, Any]], total_steps: Callable[[], int]
    ) -> tuple[torch.optim.Optimizer, ScheduleLR | None]:
        """The configured optimizer over ``groups`` (see :meth:`parameter_groups`) and, with an
        ``lr_scheduler``, its per-step schedule over ``total_steps()`` optimizer steps (called
        only then: Lightning's estimate has a cost)."""
        hp = self.hparams
        optimizer = _build_optimizer(self._optimizer_cls, groups, dict(hp.optimizer_kwargs or {}))
        if hp.lr_scheduler is None:
            return optimizer, None
        steps = int(total_steps())
        schedules = [
            build_schedule(hp.lr_scheduler, g["lr"], steps, hp.lr_scheduler_kwargs) for g in groups
        ]
        return optimizer, ScheduleLR(optimizer, schedules)

    @override
    def configure_optimizers(self) -> Any:
        optimizer, scheduler = self.build_optimizer(
            self.parameter_groups(), lambda: self.trainer.estimated_stepping_batches
        )
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _initialize_from_data(self, x: Tensor, y: Tensor) -> None:
        """Initialise the prototypes from the untrained backbone's latent codes of the training
        data; seeded, and broadcast from rank 0 so every rank starts identical."""
        hp = self.hparams
        y = torch.as_tensor(y, dtype=torch.long)
        if y.numel() == 0:
            raise ValueError("the training data are empty (0 samples)")
        if int(y.min()) < 0 or int(y.max()) >= hp.n_classes:
            raise ValueError(
                f"training labels must be class indices in [0, {hp.n_classes}), got values in "
                f"[{int(y.min())}, {int(y.max())}]; map labels with ArrayDataModule (any "
                "sortable labels) or set n_classes"
            )
        present = torch.unique(y)
        if present.numel() < 2:
            raise ValueError(
                f"the training data must contain at least 2 classes, got {present.numel()}"
            )
        z = self._latent_in_chunks(x)
        counts = torch.bincount(self.prototype_labels.cpu(), minlength=hp.n_classes).tolist()
        prototypes, labels = initialize_prototypes(
            z.cpu(),
            y.cpu(),
            counts,
            self._initializer,
            generator=self._generator(1),
            **dict(hp.prototypes_initializer_kwargs or {}),
        )
        if prototypes.shape != self.prototypes.shape:
            raise ValueError(
                f"the initializer returned {tuple(prototypes.shape)} prototypes; the model "
                f"expects {tuple(self.prototypes.shape)}"
            )
        if self._trainer is not None and self.trainer.world_size > 1:
            prototypes, labels = self.trainer.strategy.broadcast((prototypes, labels), src=0)
        self.prototypes.copy_(prototypes.to(self.prototypes))
        self.prototype_labels.copy_(labels.to(self.prototype_labels))
        self._prototypes_ready = True

    def _latent_in_chunks(self, x: Any) -> Tensor:
        x = self._as_input(x)
        return torch.cat([self.backbone(x[i : i + _CHUNK]) for i in range(0, len(x), _CHUNK)])

    def _as_input(self, x: Any) -> Tensor:
        """Inputs as a tensor on the model's device, in the model's floating dtype."""
        dtype = self.prototypes.dtype if self.prototypes is not None else torch.float32
        return torch.as_tensor(x).to(device=self.device, dtype=dtype)

    # ------------------------------------------------------------------ math
    @override
    def forward(self, x: Tensor) -> Tensor:
        """Latent codes: ``(n, …) → (n, latent_dim)``."""
        return self.backbone(x)

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances ``(n, P)`` from latent codes ``(n, latent_dim)`` to the prototypes,
        always in float32 or wider (also under mixed precision)."""
        dtype = torch.promote_types(z.dtype, torch.float32)
        dtype = torch.promote_types(dtype, self.prototypes.dtype)
        with torch.autocast(z.device.type, enabled=False):
            return F.squared_euclidean_distance(z.to(dtype), self.prototypes.to(dtype))

    def _step(self, batch: Any, loss_metric: MeanMetric, acc_metric: MeanMetric) -> Tensor:
        x, y, w = _unpack(batch)
        if (
            x.is_floating_point()
            and x.dtype != self.prototypes.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            x = x.to(self.prototypes.dtype)
        distances = self.distances(self.backbone(x))
        loss = F.glvq_loss(
            distances,
            y,
            self.prototype_labels,
            self._transfer,
            self.hparams.beta,
            self.hparams.margin,
            w,
        )
        # The masked min caps infinite distances at the dtype's max (as upstream), which would
        # hide a numeric blow-up behind a finite loss of 0: report it as a non-finite loss.
        loss = torch.where(torch.isfinite(distances).all(), loss, loss.new_tensor(float("nan")))
        correct = (self.prototype_labels[distances.argmin(dim=1)] == y).to(distances.dtype)
        weight = w.sum() if w is not None else y.numel()
        loss_metric.update(loss.detach(), weight)
        acc_metric.update(correct)
        return loss

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._step(batch, self.train_loss, self.train_acc)
        first_bad = (~torch.isfinite(loss.detach())) & (self._nonfinite_step < 0)
        self._nonfinite_step = torch.where(
            first_bad, torch.full_like(self._nonfinite_step, self.global_step), self._nonfinite_step
        )
        self._log_epoch_metrics("train", batch_idx, prog_bar=True)
        return loss

    @override
    def on_train_epoch_end(self) -> None:
        step = int(self._nonfinite_step)
        if step >= 0:
            raise nonfinite_loss_error(step, self.current_epoch)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, self.val_loss, self.val_acc)
        self._log_epoch_metrics("val", batch_idx, prog_bar=True)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, self.test_loss, self.test_acc)
        self._log_epoch_metrics("test", batch_idx, prog_bar=False)

    def _log_epoch_metrics(self, stage: str, batch_idx: int, prog_bar: bool) -> None:
        """Hand the stage's loss and accuracy metrics to ``self.log`` (per epoch).

        The metrics accumulate in every step and Lightning computes and resets them at the
        epoch's end, so registering them once per epoch logs the same values as once per step,
        while each ``self.log`` call costs Lightning about a millisecond of Python. Logged on
        an epoch's first batch, and on the first update after a reset (a run resumed
        mid-epoch).
        """
        loss, acc = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        if batch_idx == 0 or loss.update_count == 1:
            self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=prog_bar)
            self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=prog_bar)

    @override
    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """``{"labels": (n,) class indices, "probabilities": (n, k), "latent": (n, latent_dim)}``;
        map indices to the original labels with :attr:`classes_`."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        z = self.backbone(x)
        distances = self.distances(z)
        return {
            "labels": F.wtac(distances, self.prototype_labels),
            "probabilities": self._proba_from_distances(distances),
            "latent": z,
        }

    def _proba_from_distances(self, distances: Tensor) -> Tensor:
        pooled = F.stratified_min_pooling(distances, self.prototype_labels, self.hparams.n_classes)
        return torch.softmax(-pooled, dim=1)

    # ------------------------------------------------------------------ inference API
    def _check_fitted(self) -> None:
        if not self.is_built or not self._prototypes_ready:
            raise NotFittedError("This LVQMLN is not fitted yet: train it (Trainer.fit) first")

    def _check_input_shape(self, x: Tensor) -> None:
        """Inputs must match the built backbone: ``(n, in_features)`` or ``(n, C, H, W)``."""
        hp = self.hparams
        if hp.backbone == "mlp" and (x.dim() != 2 or x.shape[1] != hp.in_features):
            raise ValueError(
                f"expected inputs of shape (n, {hp.in_features}) (the MLP was fitted on "
                f"{hp.in_features} features), got {tuple(x.shape)}"
            )
        if hp.backbone == "cnn" and (x.dim() != 4 or list(x.shape[1:]) != list(hp.input_shape)):
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, hp.input_shape))}) (the CNN "
                f"was fitted on that shape), got {tuple(x.shape)}"
            )

    def _inference(self, x: Any, fn: Callable[[Tensor], Tensor]) -> Tensor:
        self._check_fitted()
        x = self._as_input(x)
        self._check_input_shape(x)
        if len(x) == 0:
            raise ValueError(f"the inputs are empty (shape {tuple(x.shape)})")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the inputs contain NaN or Inf values; clean or impute them first")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return torch.cat([fn(x[i : i + _CHUNK]) for i in range(0, len(x), _CHUNK)])
        finally:
            self.train(was_training)

    def transform(self, x: Any) -> Tensor:
        """Latent codes ``(n, latent_dim)`` of ``x`` (array or tensor)."""
        return self._inference(x, self.backbone)

    def predict_proba(self, x: Any) -> Tensor:
        """``(n, n_classes)`` softmax over classes of −(per-class minimum squared distance),
        columns in :attr:`classes_` order."""
        return self._inference(
            x, lambda b: self._proba_from_distances(self.distances(self.backbone(b)))
        )

    def predict_indices(self, x: Any) -> Tensor:
        """``(n,)`` class indices of the nearest prototypes (first index on ties)."""
        return self._inference(
            x, lambda b: F.wtac(self.distances(self.backbone(b)), self.prototype_labels)
        )

    def predict(self, x: Any) -> np.ndarray:
        """``(n,)`` original labels (from :attr:`classes_`) of the nearest prototypes."""
        indices = self.predict_indices(x).cpu().numpy()  # first: raises NotFittedError
        return self.classes_[indices]


def nonfinite_loss_error(step: int, epoch: int) -> FloatingPointError:
    """The error for a training loss that became NaN or Inf at optimizer ``step``."""
    return FloatingPointError(
        f"the training loss became non-finite (NaN or Inf) at optimizer step {step} "
        f"(epoch {epoch}); lower the learning rate, check the inputs for extreme values, or "
        "use a wider precision"
    )


class _WeightedMean(MeanMetric):
    """``MeanMetric`` that honours its weights without a NaN check (no host sync per step):
    torchmetrics (1.9) replaces the weights by ones when ``nan_strategy="disable"``, which made
    epoch losses the plain mean of the batch means instead of the per-sample mean."""

    @override
    def update(self, value: Tensor | float, weight: Tensor | float = 1.0) -> None:
        value = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        weight = torch.as_tensor(weight, dtype=self.dtype, device=self.device)
        weight = torch.broadcast_to(weight, value.shape)
        self.mean_value += (value * weight).sum()
        self.weight += weight.sum()


def _unpack(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    if isinstance(batch, Mapping):
        x, y, w = batch["x"], batch["y"], batch.get("sample_weight")
    elif len(batch) in (2, 3):
        x, y, w = batch[0], batch[1], batch[2] if len(batch) == 3 else None
    else:
        raise ValueError(f"a batch must be (x, y) or (x, y, sample_weight), got {len(batch)} items")
    if len(x) != len(y):
        raise ValueError(f"a batch has {len(x)} inputs but {len(y)} labels: X and y lengths differ")
    return x, y, w


# Optimizers whose fused CPU kernel computes the same update as the default per-tensor loop
# (equal up to float rounding in the last bits), and the options that pick an implementation.
_FUSED_ON_CPU = (torch.optim.Adam, torch.optim.AdamW)
_IMPLEMENTATION_OPTIONS = ("fused", "foreach", "capturable", "differentiable")
# Below this many parameter elements the per-tensor loop stays single-threaded and is faster:
# the fused kernel opens a parallel region per call (~0.1 ms idle, ~10 ms on a busy CPU).
_FUSED_MIN_NUMEL = 1 << 16


def _build_optimizer(
    optimizer_cls: type[torch.optim.Optimizer], groups: list[dict], kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    """``optimizer_cls(groups, **kwargs)``; Adam and AdamW on CPU parameters of at least
    ``_FUSED_MIN_NUMEL`` elements get ``fused=True`` unless ``kwargs`` choose an
    implementation: torch's CPU default updates each parameter in
    about ten separate passes over memory, the fused kernel in one (several times faster for
    large layers)."""
    params = [p for group in groups for p in group["params"]]
    if (
        optimizer_cls in _FUSED_ON_CPU
        and not any(option in kwargs for option in _IMPLEMENTATION_OPTIONS)
        and all(p.device.type == "cpu" and p.is_floating_point() for p in params)
        and sum(p.numel() for p in params) >= _FUSED_MIN_NUMEL
    ):
        kwargs = {**kwargs, "fused": True}
    return optimizer_cls(groups, **kwargs)


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_freeze(freeze: Iterable[str] | str | None) -> list[str]:
    if freeze is None:
        return []
    if isinstance(freeze, str):
        freeze = [freeze]
    freeze = list(freeze)
    unknown = [f for f in freeze if f not in FREEZABLE]
    if unknown:
        raise ValueError(f"Unknown freeze entries {unknown}. Valid entries: {', '.join(FREEZABLE)}")
    return freeze


def _check_initial_prototypes(prototypes: Any, labels: Any, latent_dim: int) -> tuple[list, list]:
    prototypes = np.asarray(_to_primitive(prototypes), dtype=float)
    if prototypes.ndim != 2 or prototypes.shape[1] != latent_dim:
        raise ValueError(
            f"initial_prototypes must have shape (P, latent_dim={latent_dim}), got {prototypes.shape}"
        )
    if labels is None:
        raise ValueError("initial_prototypes needs initial_prototype_labels (class indices)")
    labels = np.asarray(_to_primitive(labels))
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
