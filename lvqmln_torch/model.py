"""The LVQMLN LightningModule: a backbone maps inputs to a latent space where class prototypes
live; the GLVQ loss trains both."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
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
from .config import legacy_hparams, module_config
from .metrics import WeightedMean
from .network import PrototypeNetwork, backbone_lr, build_parts
from .optimizers import OPTIMIZERS, build_optimizer, parameter_groups
from .rules import nonfinite_loss_error
from .schedules import ScheduleLR
from .validation import needs_minibatches_error, plain

__all__ = ["LVQMLN", "nonfinite_loss_error"]


class LVQMLN(PrototypeNetwork, LightningModule):
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
        activation: backbone activation; ``None``: the backbone's default (sigmoid for the
            MLP, as upstream; tanh for the CNN, see ``docs/images.md``).
        latent_activation: apply the activation after the last backbone layer.
        channels: CNN output channels per conv layer.
        kernel_sizes: CNN kernel size per conv layer.
        cnn_head: ``"flatten"`` (2×2 max-pool, flatten, linear: ours) or ``"mean"`` (global
            average pooling, linear: upstream's), see :class:`~lvqmln_torch.CNNBackbone`.
        standardize_input: CNN only: standardise the pixels with one global mean and standard
            deviation measured on the sample the prototypes are initialised from, kept in the
            ``state_dict`` (``backbone.input_mean`` / ``backbone.input_std``) and exported.
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
        bb_lr: backbone learning rate: a second parameter group of the same optimizer;
            ``None``: ``lr`` for the MLP (as upstream), ``0.3 · lr`` for the CNN (see
            :data:`~lvqmln_torch.network.DEFAULT_BB_LR_FACTOR`).
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
        cnn_head: str = "flatten",
        standardize_input: bool = True,
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
        super().__init__()  # an empty PrototypeNetwork, then LightningModule
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        config = module_config(arguments)
        # The validated, plain values are the hyperparameters (not the raw arguments in this
        # frame, which may hold arrays or modules): checkpoints load with weights_only=True.
        self.save_hyperparameters(ignore=list(arguments))
        self._set_hparams(config.hparams)
        self._hparams_initial = copy.deepcopy(self._hparams)
        # Not a submodule until built (then it is ``self.backbone``): its weights are stored once.
        object.__setattr__(self, "_custom_backbone", config.custom_backbone)
        self._initializer = config.initializer
        self._transfer = config.transfer
        self._optimizer_cls = config.optimizer_cls
        self.train_loss, self.val_loss, self.test_loss = (WeightedMean() for _ in range(3))
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

    def _build(self) -> None:
        """Create backbone, prototype parameter and label buffer from the hyperparameters."""
        hp = self.hparams
        backbone, prototypes, labels, n_classes, input_shape, given = build_parts(
            hp, self._custom_backbone
        )
        hp.n_classes = n_classes
        self.install(backbone, prototypes, labels, n_classes, input_shape)
        self._prototypes_ready = given
        self.freeze_parts(hp.freeze)

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
            hp.classes = plain(source.classes_)
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
            hp.input_shape = plain(source.input_shape)

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
            raise needs_minibatches_error(" (accumulate_grad_batches > 1)")

    @override
    def on_test_start(self) -> None:
        self.check_fitted()  # an untrained model would be scored on zero prototypes

    @override
    def on_predict_start(self) -> None:
        self.check_fitted()

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._prototypes_ready = True
        # Checkpoints of 0.1.0 stored a custom backbone twice; its weights are ``backbone.*``.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("_custom_backbone.")]:
            del state[key]
        # Checkpoints of 0.1.x predate cnn_head: their CNN is upstream's, rebuilt as such.
        saved = checkpoint.get("hyper_parameters", {})
        if "cnn_head" not in saved and self.hparams.backbone == "cnn":
            legacy = legacy_hparams(saved)
            keys = ("cnn_head", "standardize_input", "activation", "bb_lr")
            self.hparams.update({key: legacy[key] for key in keys})
            if self.is_built:
                self._build()
        if self._trainer is not None and self.is_built:
            from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision

            # Lightning loads the weights before the precision plugin converts the module;
            # convert first, or a 64-true resume would round the float64 weights to float32.
            plugin = self.trainer.precision_plugin
            if isinstance(plugin, DoublePrecision | HalfPrecision):
                plugin.convert_module(self)

    @override
    def configure_callbacks(self) -> list[Callback]:
        from .callbacks import ExponentialMovingAverage, Lookahead, StallDetection

        callbacks: list[Callback] = [StallDetection()]
        if self.hparams.lookahead is not None:
            callbacks.append(Lookahead(**self.hparams.lookahead))
        if self.hparams.ema_decay is not None:
            callbacks.append(ExponentialMovingAverage(self.hparams.ema_decay))
        return callbacks

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (see :func:`~lvqmln_torch.optimizers.parameter_groups`)."""
        hp = self.hparams
        return parameter_groups(self.prototypes, self.backbone, hp.lr, backbone_lr(hp), hp.freeze)

    @property
    def elementwise_optimizer(self) -> bool:
        """Whether the optimizer is one of the built-in :data:`~lvqmln_torch.optimizers.OPTIMIZERS`,
        which update every parameter element by element (so grouping does not matter)."""
        return self._optimizer_cls in OPTIMIZERS.values()

    def build_optimizer(
        self, groups: list[dict[str, Any]], total_steps: Callable[[], int]
    ) -> tuple[torch.optim.Optimizer, ScheduleLR | None]:
        """The configured optimizer and schedule (see :func:`~lvqmln_torch.optimizers.build_optimizer`)."""
        return build_optimizer(self._optimizer_cls, groups, self.hparams, total_steps)

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
    def _initialize_from_data(self, x: Tensor, y: Tensor) -> None:
        """Initialise the prototypes (and a CNN's input statistics) from the untrained
        backbone's codes of ``x``; seeded, and broadcast from rank 0 so every rank starts
        identical."""
        hp = self.hparams
        prototypes, labels = self.initialize_from(
            x,
            y,
            self._initializer,
            hp.prototypes_initializer_kwargs,
            hp.seed,
        )
        if self._trainer is not None and self.trainer.world_size > 1:
            # The CNN's input statistics too: initialize_from measured them on this rank's shard.
            statistics = self.input_statistics()
            prototypes, labels, *values = self.trainer.strategy.broadcast(
                [prototypes, labels, *(s.clone() for s in statistics)], src=0
            )
            for buffer, value in zip(statistics, values):
                buffer.copy_(value)
        self.set_prototypes(prototypes, labels)

    # ------------------------------------------------------------------ steps
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
            "labels": self.head.labels(distances, self.prototype_labels),
            "probabilities": self.head.probabilities(distances, self.prototype_labels),
            "latent": z,
        }

    def predict(self, x: Any) -> np.ndarray:
        """``(n,)`` original labels (from :attr:`classes_`) of the nearest prototypes."""
        indices = self.predict_indices(x).cpu().numpy()  # first: raises NotFittedError
        return self.classes_[indices]


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
