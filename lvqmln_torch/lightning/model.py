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
from typing_extensions import override

from ..core import functional as F
from ..core.initializers import SAMPLE_INITIALIZERS
from ..core.network import PrototypeNetwork, backbone_lr, build_parts
from ..core.validation import needs_minibatches_error
from ..training.config import INIT_SAMPLE_SIZE, module_config, upgrade_checkpoint
from ..training.optimizers import OPTIMIZERS, build_optimizer, parameter_groups
from ..training.rules import nonfinite_loss_error
from ..training.schedules import ScheduleLR
from .metrics import EpochStats
from .user_data import (
    DatamoduleHparamsLogging,
    check_init_sample,
    first_samples,
    read_sizes,
    size_source,
    unpack,
)

__all__ = ["LVQMLN", "nonfinite_loss_error"]


class LVQMLN(PrototypeNetwork, DatamoduleHparamsLogging, LightningModule):
    """LVQ Multi-Layer Network.

    ``x → backbone → z (n, latent_dim)``; prototypes ``W (P, latent_dim)`` with labels
    ``c (P,)`` live in latent space (they are not passed through the backbone). The GLVQ loss
    on the squared Euclidean distances trains backbone and prototypes jointly.

    Sizes that the data determine (``in_features`` / ``input_shape``, ``n_classes``,
    ``classes``) may be left ``None``: they are read from the datamodule in ``setup`` (the
    input size also from a plain training ``DataLoader``'s first batch) and written back to
    the hyperparameters, so checkpoints reload without the data.

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
            average pooling, linear: upstream's), see [`CNNBackbone`][lvqmln_torch.core.backbones.CNNBackbone].
        standardize_input: CNN only: standardise the pixels with one global mean and standard
            deviation measured on the sample the prototypes are initialised from, kept in the
            ``state_dict`` (``backbone.input_mean`` / ``backbone.input_std``) and exported.
        n_prototypes_per_class: int, list indexed by class, or dict class → count.
        prototypes_initializer: name (see [`lvqmln_torch.core.initializers`][lvqmln_torch.core.initializers]) or callable
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
            ``None``: ``lr`` for the MLP (as upstream), ``0.1 · lr`` for the CNN (see
            [`DEFAULT_BB_LR_FACTOR`][lvqmln_torch.core.network.DEFAULT_BB_LR_FACTOR]).
        lr_scheduler: one of the nine upstream schedules, stepped per optimizer step.
        lr_scheduler_kwargs: the schedule's keyword arguments (upstream names).
        freeze: ``["backbone"]`` and/or ``["prototypes"]``: kept bit-identical.
        ema_decay: keep an exponential moving average of the weights (see
            [`ExponentialMovingAverage`][lvqmln_torch.lightning.callbacks.ExponentialMovingAverage]).
        lookahead: ``{"sync_period": 6, "slow_step_size": 0.5}`` (see
            [`Lookahead`][lvqmln_torch.lightning.callbacks.Lookahead]).
        seed: seeds the backbone and prototype initialisation (identical on every rank).
        init_sample_size: at most this many training samples initialise the prototypes
            (from the datamodule's ``init_sample``, else the first training batches: the
            loader is never read to its end, so endless streams work).
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
        init_sample_size: int = INIT_SAMPLE_SIZE,
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
        self.train_stats, self.val_stats, self.test_stats = (EpochStats() for _ in range(3))
        # The logged values, as attributes: Lightning finds a logged metric by its attribute.
        self.train_loss, self.val_loss, self.test_loss = (
            s.loss for s in (self.train_stats, self.val_stats, self.test_stats)
        )
        self.train_acc, self.val_acc, self.test_acc = (
            s.accuracy for s in (self.train_stats, self.val_stats, self.test_stats)
        )
        # The optimizer step the epoch started at: with the train stats' count of steps before
        # the loss turned non-finite, it locates a non-finite loss without a host sync per step.
        self._epoch_start_step = 0
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

    # ------------------------------------------------------------------ Lightning hooks
    def prepare(self, datamodule: Any = None, initialize: bool = True) -> None:
        """Build the backbone and the prototypes (reading the sizes left ``None`` from
        ``datamodule``: see [`read_sizes`][lvqmln_torch.lightning.user_data.read_sizes]) and, with
        ``initialize``, initialise the prototypes from the untrained backbone's latent codes of
        the datamodule's ``init_sample(init_sample_size, seed)`` when it has one (otherwise
        ``on_train_start`` reads the first training batches). Steps already done are skipped;
        ``Trainer.fit`` calls this in ``setup``.

        Raises:
            ValueError: when the sizes are neither given nor readable from ``datamodule``.
        """
        if not self.is_built:
            if datamodule is not None:
                read_sizes(self.hparams, datamodule, self._custom_backbone is not None)
            if self.hparams.n_classes is None and self.hparams.initial_prototype_labels is None:
                raise ValueError(
                    "LVQMLN needs the number of classes: pass n_classes (or classes), or give "
                    "the datamodule an n_classes attribute; it is not read from batches, "
                    "which need not show every class"
                )
            if not self._sizes_known():
                raise ValueError(
                    "LVQMLN cannot infer its input size: pass in_features (MLP) or input_shape "
                    "(CNN), or fit with a datamodule (its n_features / input_shape, else its "
                    "first training batch) or a training DataLoader (its first batch)"
                )
            self._build()
        if initialize and not self._prototypes_ready and hasattr(datamodule, "init_sample"):
            hp = self.hparams
            self._initialize_from_data(
                lambda: datamodule.init_sample(hp.init_sample_size, hp.seed),
                f"{type(datamodule).__name__}.init_sample",
            )

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        # fit without a datamodule: the sizes come from the training loader's first batch.
        source = size_source(self.trainer) if stage == "fit" else datamodule
        self.prepare(source, initialize=stage == "fit" and self.trainer.ckpt_path is None)
        self._defer_clashing_hparams(datamodule)

    @override
    def on_train_start(self) -> None:
        self._log_pending_hparams()
        if not self._prototypes_ready:
            self._initialize_from_data(
                lambda: first_samples(self.trainer.train_dataloader, self.hparams.init_sample_size),
                "the first training batches",
            )
        if self.trainer.accumulate_grad_batches > 1 and self.trainer.num_training_batches == 1:
            raise needs_minibatches_error(" (accumulate_grad_batches > 1)")

    @override
    def on_validation_start(self) -> None:
        self._log_pending_hparams()  # trainer.validate: no train start

    @override
    def on_test_start(self) -> None:
        self._log_pending_hparams()
        self.check_fitted()  # an untrained model would be scored on zero prototypes

    @override
    def on_predict_start(self) -> None:
        self._log_pending_hparams()
        self.check_fitted()

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["prototype_sources"] = self.prototype_sources  # see PrototypeProjection

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._prototypes_ready = True
        self.prototype_sources = checkpoint.get("prototype_sources")
        # Checkpoints of 0.1.x: a CNN predating cnn_head is upstream's, rebuilt as such.
        if upgrade_checkpoint(checkpoint, self.hparams) and self.is_built:
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
        """The optimizer's parameter groups (see [`parameter_groups`][lvqmln_torch.training.optimizers.parameter_groups])."""
        hp = self.hparams
        return parameter_groups(self.prototypes, self.backbone, hp.lr, backbone_lr(hp), hp.freeze)

    @property
    def elementwise_optimizer(self) -> bool:
        """Whether the optimizer is one of the built-in [`OPTIMIZERS`][lvqmln_torch.training.optimizers.OPTIMIZERS],
        which update every parameter element by element (so grouping does not matter)."""
        return self._optimizer_cls in OPTIMIZERS.values()

    def build_optimizer(
        self, groups: list[dict[str, Any]], total_steps: Callable[[], int]
    ) -> tuple[torch.optim.Optimizer, ScheduleLR | None]:
        """The configured optimizer and schedule (see [`build_optimizer`][lvqmln_torch.training.optimizers.build_optimizer])."""
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
    def _initialize_from_data(
        self, read_sample: Callable[[], tuple[Tensor, Tensor]], source: str
    ) -> None:
        """Initialise the prototypes (and a CNN's input statistics) from the untrained
        backbone's latent codes of the samples that ``read_sample`` returns (``source`` names
        them in errors); seeded. Under DDP rank 0 alone reads and initialises, then
        broadcasts, so every rank starts identical.

        Raises:
            ValueError: when a class the initializer needs samples of is not in the sample.
        """
        hp = self.hparams
        distributed = self._trainer is not None and self.trainer.world_size > 1
        if distributed and self.trainer.global_rank != 0:
            prototypes, labels = self.prototypes.detach(), self.prototype_labels
        else:
            x, y = read_sample()
            if self._initializer in SAMPLE_INITIALIZERS:
                check_init_sample(y, self.classes_, hp.init_sample_size, source)
            prototypes, labels = self.initialize_from(
                x, y, self._initializer, hp.prototypes_initializer_kwargs, hp.seed
            )
        if distributed:
            # The CNN's input statistics too: rank 0 measured them on its sample.
            statistics = self.input_statistics()
            prototypes, labels, *values = self.trainer.strategy.broadcast(
                [prototypes, labels, *(s.clone() for s in statistics)], src=0
            )
            for buffer, value in zip(statistics, values):
                buffer.copy_(value)
        self.set_prototypes(prototypes, labels)

    # ------------------------------------------------------------------ steps
    def _step(self, batch: Any, stats: EpochStats) -> Tensor:
        x, y, w = unpack(batch)
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
        # hide a numeric blow-up behind a finite loss: a NaN or Inf distance makes it NaN.
        loss = loss.add(distances.detach().amax(), alpha=0)
        winners = self.prototype_labels.index_select(0, distances.argmin(dim=1))  # no grad
        n = y.shape[0]
        stats.add(loss.detach(), w.detach().sum() if w is not None else n, (winners == y).sum(), n)
        return loss

    @override
    def on_train_epoch_start(self) -> None:
        self._epoch_start_step = self.global_step

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._step(batch, self.train_stats)
        self._log_epoch_metrics("train", prog_bar=True)
        return loss

    @override
    def on_train_epoch_end(self) -> None:
        epoch_loss, _ = self.train_stats.compute()  # synced: every rank raises, or none
        if not torch.isfinite(epoch_loss):
            batches = int(self.train_stats.finite_steps) // self.trainer.accumulate_grad_batches
            raise nonfinite_loss_error(self._epoch_start_step + batches, self.current_epoch)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, self.val_stats)
        self._log_epoch_metrics("val", prog_bar=True)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, self.test_stats)
        self._log_epoch_metrics("test", prog_bar=False)

    def _log_epoch_metrics(self, stage: str, prog_bar: bool) -> None:
        """Hand the stage's loss and accuracy to ``self.log`` (per epoch).

        The sums accumulate in every step and Lightning computes and resets them at the
        epoch's end, so registering them once per epoch logs the same values as once per step,
        while each ``self.log`` call costs Lightning about a millisecond of Python. Logged on
        the first update after a reset: an epoch's first batch, or a run resumed mid-epoch.
        """
        stats = getattr(self, f"{stage}_stats")
        if stats.update_count == 1:
            self.log(f"{stage}_loss", stats.loss, on_step=False, on_epoch=True, prog_bar=prog_bar)
            self.log(
                f"{stage}_acc", stats.accuracy, on_step=False, on_epoch=True, prog_bar=prog_bar
            )

    @override
    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """``{"labels": (n,) class indices, "probabilities": (n, k), "latent": (n, latent_dim)}``;
        map indices to the original labels with [`classes_`][lvqmln_torch.lightning.model.LVQMLN.classes_]."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        z = self.backbone(x)
        distances = self.distances(z)
        return {
            "labels": self.head.labels(distances, self.prototype_labels),
            "probabilities": self.head.probabilities(distances, self.prototype_labels),
            "latent": z,
        }

    def predict(self, x: Any) -> np.ndarray:
        """``(n,)`` original labels (from [`classes_`][lvqmln_torch.lightning.model.LVQMLN.classes_]) of the nearest prototypes."""
        indices = self.predict_indices(x).cpu().numpy()  # first: raises NotFittedError
        return self.classes_[indices]
