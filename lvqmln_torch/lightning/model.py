"""The LVQMLN LightningModule: a backbone maps inputs to a latent space where class prototypes
live; the GLVQ loss trains both."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from sklearn.exceptions import NotFittedError
from torch import Tensor, nn
from typing_extensions import override

from ..core import functional as F
from ..core.calibration import DEFAULT_BOUNDS
from ..core.certify import add_robust_term
from ..core.construction import backbone_lr, build_parts
from ..core.network import PrototypeNetwork
from ..core.validation import needs_minibatches_error
from ..training.config import INIT_SAMPLE_SIZE, module_config
from ..training.groups import merge_equal_groups
from ..training.optimizers import OPTIMIZERS, build_optimizer, parameter_groups
from ..training.rules import nonfinite_loss_error
from ..training.schedules import ScheduleLR
from . import calibration, checkpointing
from .metrics import EpochStats, attach_epoch_stats, log_epoch_metrics
from .user_data import (
    DeferredHparams,
    first_samples,
    initialize_from_sample,
    prepare_module,
    size_source,
    sizes_known,
    unpack,
)

__all__ = ["LVQMLN", "nonfinite_loss_error"]


class LVQMLN(PrototypeNetwork, LightningModule):
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
        activation: backbone activation (the CNN's latent codes'); ``None``: the backbone's
            default (sigmoid for the MLP, as upstream; tanh for the CNN, see
            ``docs/images.md``).
        latent_activation: apply the activation after the last backbone layer.
        channels: CNN output channels per conv layer.
        kernel_sizes: CNN kernel size per conv layer.
        cnn_head: [`CNN_HEADS`][lvqmln_torch.core.cnn.CNN_HEADS]: ``"pooled"`` (ours),
            ``"flatten"`` or ``"mean"`` (upstream's), see
            [`CNNBackbone`][lvqmln_torch.core.cnn.CNNBackbone].
        conv_activation: the CNN's activation after its convolutions and dense layers
            (``None``: ``activation``).
        cnn_hidden: the CNN's dense layer widths between its pooled features and the latent
            layer.
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
            ``None``: ``lr`` for the MLP (as upstream), ``0.05 · lr`` for the CNN (see
            [`DEFAULT_BB_LR_FACTOR`][lvqmln_torch.core.construction.DEFAULT_BB_LR_FACTOR]).
        lr_scheduler: one of the nine upstream schedules, stepped per optimizer step.
        lr_scheduler_kwargs: the schedule's keyword arguments (upstream names).
        freeze: ``["backbone"]`` and/or ``["prototypes"]``: kept bit-identical (a frozen
            backbone runs in eval mode: its BatchNorm statistics and dropout are fixed).
        ema_decay: keep an exponential moving average of the weights (see
            [`ExponentialMovingAverage`][lvqmln_torch.lightning.callbacks.ExponentialMovingAverage]).
        lookahead: ``{"sync_period": …, "slow_step_size": …}``, missing keys from
            [`LOOKAHEAD_DEFAULTS`][lvqmln_torch.core.validation.LOOKAHEAD_DEFAULTS] (see
            [`Lookahead`][lvqmln_torch.lightning.callbacks.Lookahead]).
        seed: seeds the backbone and prototype initialisation (identical on every rank).
        init_sample_size: at most this many training samples initialise the prototypes
            (from the datamodule's ``init_sample``, else the first training batches: the
            loader is never read to its end, so endless streams work).
        lipschitz: ``None``, ``"spectral"`` or ``"orthogonal"`` (MLP only): backbone layers
            of norm 1 during training (see
            [`constrain`][lvqmln_torch.core.lipschitz_control.constrain]).
        robust_eps: train for certified robustness at this L2 radius in input space: adds
            ``robust_weight`` times the hinge on the certified radius (see
            [`robust_hinge`][lvqmln_torch.core.certify.robust_hinge]) to the GLVQ loss;
            0 (default): off.
        robust_weight: the weight of that hinge.

    ``backbone="identity"`` keeps the prototypes in input space (the shallow GLVQ; its
    ``latent_dim`` is ``in_features``). Certified radii: [`certify`][lvqmln_torch.core.certify.certify].
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
        channels: Sequence[int] = (32, 64),
        kernel_sizes: Sequence[int] = (3, 3),
        cnn_head: str = "pooled",
        standardize_input: bool = True,
        conv_activation: str | None = "relu",
        cnn_hidden: Sequence[int] = (128,),
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
        lipschitz: str | None = None,
        robust_eps: float = 0.0,
        robust_weight: float = 1.0,
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
        attach_epoch_stats(self)  # train_stats, train_loss, train_acc, val_stats, ...
        # The optimizer step the epoch started at: with the train stats' count of steps before
        # the loss turned non-finite, it locates a non-finite loss without a host sync per step.
        self._epoch_start_step = 0
        if sizes_known(self.hparams, self._custom_backbone is not None):
            self._build()

    # ------------------------------------------------------------------ construction
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

    @override
    def install(self, *args: Any, **kwargs: Any) -> None:
        """The network's [`install`][lvqmln_torch.core.network.PrototypeNetwork.install], plus
        the ``val_ece`` metric for its class count."""
        super().install(*args, **kwargs)
        self.val_ece = calibration.calibration_error_metric(self.head.n_classes)

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
        prepare_module(self, datamodule, initialize)

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        # fit without a datamodule: the sizes come from the training loader's first batch.
        source = size_source(self.trainer) if stage == "fit" else datamodule
        self.prepare(source, initialize=stage == "fit" and self.trainer.ckpt_path is None)
        # Made here, not in __init__: modules pickled by 0.1 have no such attribute.
        self._deferred_hparams = DeferredHparams()
        self._deferred_hparams.defer(self, datamodule)

    @override
    def on_train_start(self) -> None:
        self._deferred_hparams.log(self)
        if self._backbone_frozen:  # after Lightning's check for modules in eval mode
            self.backbone.eval()  # BatchNorm statistics and dropout fixed (see train())
        if not self._prototypes_ready:
            initialize_from_sample(
                self,
                self._initializer,
                lambda: first_samples(self.trainer.train_dataloader, self.hparams.init_sample_size),
                "the first training batches",
            )
        if self.trainer.accumulate_grad_batches > 1 and self.trainer.num_training_batches == 1:
            raise needs_minibatches_error(" (accumulate_grad_batches > 1)")

    @override
    def on_validation_start(self) -> None:
        self._deferred_hparams.log(self)  # trainer.validate: no train start

    @override
    def on_test_start(self) -> None:
        self._deferred_hparams.log(self)
        self.check_fitted()  # an untrained model would be scored on zero prototypes

    @override
    def on_predict_start(self) -> None:
        self._deferred_hparams.log(self)
        self.check_fitted()

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpointing.store_in_checkpoint(self, checkpoint)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpointing.restore_from_checkpoint(self, checkpoint)

    @override
    def configure_callbacks(self) -> list[Callback]:
        from .callbacks.defaults import default_callbacks

        # See default_callbacks: stall detection and the shadow-weight rules' callbacks.
        return default_callbacks(self.hparams, self.trainer.callbacks if self._trainer else [])

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (see [`parameter_groups`][lvqmln_torch.training.optimizers.parameter_groups]),
        as one group ``"all"`` when both train alike ([`merge_equal_groups`][lvqmln_torch.training.groups.merge_equal_groups])."""
        hp = self.hparams
        groups = parameter_groups(self.prototypes, self.backbone, hp.lr, backbone_lr(hp), hp.freeze)
        # The built-in optimizers update element by element, so grouping changes nothing.
        return merge_equal_groups(groups, self._optimizer_cls in OPTIMIZERS.values())

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

    # ------------------------------------------------------------------ steps
    def _step(self, batch: Any, stats: EpochStats) -> Tensor:
        x, y, w = unpack(batch)
        if (
            x.is_floating_point()
            and x.dtype != self.prototypes.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            x = x.to(self.prototypes.dtype)
        z = self.backbone(x)
        distances = self.distances(z)
        loss = F.glvq_loss(
            distances,
            y,
            self.prototype_labels,
            self._transfer,
            self.hparams.beta,
            self.hparams.margin,
            w,
        )
        loss = add_robust_term(self, loss, z, y, w)
        # The masked min caps infinite distances at the dtype's max (as upstream), which would
        # hide a numeric blow-up behind a finite loss: a NaN or Inf distance makes it NaN.
        loss = loss.add(distances.detach().amax(), alpha=0)
        winners = self.prototype_labels.index_select(0, distances.argmin(dim=1))  # no grad
        n = y.shape[0]
        stats.add(loss.detach(), w.detach().sum() if w is not None else n, (winners == y).sum(), n)
        calibration.track_calibration(self, stats, distances, y)  # val_ece
        return loss

    @override
    def on_train_epoch_start(self) -> None:
        self._epoch_start_step = self.global_step

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._step(batch, self.train_stats)
        log_epoch_metrics(self, "train", prog_bar=True)
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
        log_epoch_metrics(self, "val", prog_bar=True)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, self.test_stats)
        log_epoch_metrics(self, "test", prog_bar=False)

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

    # ------------------------------------------------------------------ calibration
    # Each is the function of the same name in lvqmln_torch.lightning.calibration (documented there).
    @override
    def calibrate(
        self,
        data: Any,
        y: Any = None,
        bounds: tuple[float, float] = DEFAULT_BOUNDS,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ) -> float:
        """Fit the temperature on held-out data: a DataLoader of ``(x, y[, w])`` batches, or
        ``(n, …)`` inputs with ``(n,)`` class indices ``y``; returns it (see
        [`calibrate`][lvqmln_torch.lightning.calibration.calibrate])."""
        return calibration.calibrate(self, data, y, bounds, reduce)

    def nonconformity_from(self, loader: Iterable[Any]) -> tuple[Tensor, Tensor]:
        """``(scores (n, k), y (n,))``: the nonconformity scores μ of every class for every
        sample of a loader, and the labels (see
        [`nonconformity_from`][lvqmln_torch.lightning.calibration.nonconformity_from])."""
        return calibration.nonconformity_from(self, loader)
