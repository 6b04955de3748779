"""What the LightningModule reads from a user's data without knowing its type: the parts of a
batch, the sizes, a bounded sample for the prototype initialisation (and the initialisation
from it), and how the
datamodule's hyperparameters are logged beside the module's."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from ..core.construction import FLAT_BACKBONES
from ..core.initializers import SAMPLE_INITIALIZERS
from ..core.validation import plain

__all__ = [
    "DeferredHparams",
    "check_init_sample",
    "first_samples",
    "initialize_from_sample",
    "merged_hparams",
    "prepare_module",
    "read_sizes",
    "sample_shape_of",
    "sizes_known",
    "size_source",
    "unpack",
]


def unpack(batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(x, y, sample_weight or None)`` of a batch.

    Args:
        batch: ``(x, y)``, ``(x, y, sample_weight)`` or a mapping with keys ``"x"``, ``"y"``
            and optionally ``"sample_weight"``.

    Raises:
        ValueError: for any other structure, or inputs and labels of different lengths.
    """
    if isinstance(batch, Mapping):
        x, y, w = batch["x"], batch["y"], batch.get("sample_weight")
    elif len(batch) in (2, 3):
        x, y, w = batch[0], batch[1], batch[2] if len(batch) == 3 else None
    else:
        raise ValueError(f"a batch must be (x, y) or (x, y, sample_weight), got {len(batch)} items")
    if len(x) != len(y):
        raise ValueError(f"a batch has {len(x)} inputs but {len(y)} labels: X and y lengths differ")
    return x, y, w


def first_samples(loader: Iterable[Any], limit: int) -> tuple[Tensor, Tensor]:
    """The inputs and labels of a loader's first batches, ``limit`` samples at most.

    Reading stops as soon as the sample is complete, so an endless loader is fine and the
    cost does not grow with the data set.

    Args:
        loader: yields batches (see [`unpack`][lvqmln_torch.lightning.user_data.unpack]).
        limit: the most samples to read.

    Returns:
        ``(n, ...)`` inputs and ``(n,)`` labels, ``n = min(limit, samples in the loader)``,
        where the loader put them (the CPU for a ``DataLoader``).

    Raises:
        ValueError: for a loader without any batch.
    """
    xs, ys, n = [], [], 0
    for batch in loader:
        x, y, _ = unpack(batch)
        xs.append(x[: limit - n])
        ys.append(y[: limit - n])
        n += len(ys[-1])
        if n >= limit:
            break
    if not xs:
        raise ValueError("the training loader is empty: no samples to initialise the prototypes")
    return torch.cat(xs), torch.cat(ys)


def sample_shape_of(datamodule: Any) -> tuple[tuple[int, ...] | None, str]:
    """The per-sample input shape of a datamodule's data, and where it was read.

    From its ``input_shape`` (images) or ``n_features`` (flat) attribute when it has one,
    else from the first batch of its ``train_dataloader()``.

    Returns:
        ``(shape, where)``: ``shape`` is ``(d,)`` or ``(C, H, W)``, ``None`` when the
        datamodule tells nothing; ``where`` names the source for error messages.
    """
    if getattr(datamodule, "input_shape", None) is not None:
        shape = tuple(int(s) for s in datamodule.input_shape)
        return shape, f"{type(datamodule).__name__}.input_shape"
    if getattr(datamodule, "n_features", None) is not None:
        return (int(datamodule.n_features),), f"{type(datamodule).__name__}.n_features"
    if hasattr(datamodule, "train_dataloader"):
        for batch in datamodule.train_dataloader():
            shape = tuple(int(s) for s in unpack(batch)[0].shape[1:])
            name = (
                "the DataLoader passed to Trainer.fit"
                if isinstance(datamodule, TrainLoader)
                else type(datamodule).__name__
            )
            return shape, f"the first training batch of {name}"
    return None, type(datamodule).__name__


class TrainLoader:
    """A training loader handed to ``Trainer.fit`` without a datamodule, seen as a datamodule
    that has only a ``train_dataloader``: its sizes come from its first batch."""

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader

    def train_dataloader(self) -> Iterable[Any]:
        return self.loader


def size_source(trainer: Any) -> Any:
    """Where ``fit`` reads the sizes left ``None``: the trainer's datamodule, else the training
    loader passed to ``Trainer.fit(model, train_dataloaders)`` (as a
    [`TrainLoader`][lvqmln_torch.lightning.user_data.TrainLoader]), else ``None``.

    Args:
        trainer: the Lightning ``Trainer`` in its ``fit`` setup.
    """
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        return datamodule
    # Lightning keeps the loader given to fit in its fit loop's data source (no public
    # accessor before the loop starts). A LightningModule there means fit got no loader;
    # several loaders (a list or dict) yield combined batches, which are not (x, y).
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    loader = getattr(source, "instance", None)
    if loader is None or isinstance(loader, LightningModule | Mapping | list | tuple):
        return None
    return TrainLoader(loader)


def read_sizes(hparams: Any, datamodule: Any, custom_backbone: bool) -> None:
    """Fill the module's unknown sizes from a datamodule, in place: ``n_classes`` and
    ``classes`` from its ``n_classes`` / ``classes_`` attributes; ``in_features`` (MLP) or
    ``input_shape`` (CNN) from [`sample_shape_of`][lvqmln_torch.lightning.user_data.sample_shape_of].

    Args:
        hparams: the module's hyperparameters (``backbone``, ``in_features``, ``input_shape``,
            ``n_classes``, ``classes``).
        datamodule: any object; missing attributes leave the sizes unknown.
        custom_backbone: a custom backbone needs no input size.

    Raises:
        ValueError: for samples of the wrong rank for the backbone.
    """
    if hparams["n_classes"] is None and getattr(datamodule, "n_classes", None) is not None:
        hparams["n_classes"] = int(datamodule.n_classes)
    if hparams["classes"] is None and getattr(datamodule, "classes_", None) is not None:
        hparams["classes"] = plain(datamodule.classes_)
    backbone = hparams["backbone"]
    flat = backbone in FLAT_BACKBONES
    wanted = "in_features" if flat else "input_shape"
    if custom_backbone or hparams[wanted] is not None:
        return
    shape, where = sample_shape_of(datamodule)
    if shape is None:
        return
    if flat and len(shape) != 1:
        raise ValueError(
            f"backbone={backbone!r} needs flat (n, d) inputs, but the samples have shape {shape} "
            f"({where}); use backbone='cnn' for (n, C, H, W) images, or flatten the inputs"
        )
    if backbone == "cnn" and len(shape) != 3:
        raise ValueError(
            f"backbone='cnn' needs (n, C, H, W) image inputs, but the samples have shape "
            f"{shape} ({where}); use backbone='mlp' for flat inputs, or reshape them to "
            "images and pass input_shape=(C, H, W)"
        )
    hparams[wanted] = shape[0] if flat else list(shape)
    if backbone == "identity":
        hparams["latent_dim"] = shape[0]  # the latent space is the input space


def sizes_known(hparams: Any, custom_backbone: bool) -> bool:
    """Whether the module's hyperparameters give every size its network needs: the class
    count (or initial prototype labels) and, without a custom backbone, ``in_features`` (MLP,
    identity) or ``input_shape`` (CNN)."""
    if hparams["n_classes"] is None and hparams["initial_prototype_labels"] is None:
        return False
    if custom_backbone:
        return True
    wanted = "in_features" if hparams["backbone"] in FLAT_BACKBONES else "input_shape"
    return hparams[wanted] is not None


def merged_hparams(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The module's hyperparameters to log when they clash with the datamodule's.

    Lightning refuses to log when both share a key with different values (a datamodule with
    its own ``seed``, say); it then logs the datamodule's alone, and the module logs these.

    Args:
        ours: the module's initial hyperparameters.
        theirs: the datamodule's.

    Returns:
        ``None`` when nothing clashes (Lightning merges them itself); else the module's
        hyperparameters plus the datamodule's clashing values as ``datamodule.<key>``.
    """
    clashing = [
        key
        for key in ours.keys() & theirs.keys()
        if key != "_class_path"
        and (type(ours[key]) is not type(theirs[key]) or ours[key] != theirs[key])
    ]
    if not clashing:
        return None
    logged = {key: value for key, value in ours.items() if key != "_class_path"}
    return {**logged, **{f"datamodule.{key}": theirs[key] for key in sorted(clashing)}}


def check_init_sample(y: Tensor, classes: np.ndarray, bound: int, source: str) -> None:
    """Every class must occur in a bounded initialisation sample (for the initializers that
    draw on each class's samples).

    Args:
        y: ``(n,)`` class indices of the sample.
        classes: the original labels in class-index order (named in the error).
        bound: the model's ``init_sample_size``; a sample smaller than it is the whole
            training data, whose missing classes the initializer reports itself.
        source: where the sample came from, for the message.

    Raises:
        ValueError: naming the missing classes and ``init_sample_size``.
    """
    if len(y) < bound:
        return
    counts = torch.bincount(torch.as_tensor(y).cpu(), minlength=len(classes))
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(
            f"classes {classes[missing].tolist()} do not occur in the {len(y)} samples from "
            f"{source} that initialise the prototypes (init_sample_size={bound}); raise "
            "init_sample_size, or shuffle the training data so that every class appears early"
        )


def initialize_from_sample(
    module: Any,
    initializer: str | Callable,
    read_sample: Callable[[], tuple[Tensor, Tensor]],
    source: str,
) -> None:
    """Initialise an [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]'s prototypes (and a CNN's
    input statistics) from the untrained backbone's latent codes of the samples that
    ``read_sample`` returns (``source`` names them in errors); seeded. Under DDP rank 0 alone
    reads and initialises, then broadcasts, so every rank starts identical.

    Args:
        module: the module, built.
        initializer: its prototype initializer (a name or a callable).
        read_sample: returns ``(x (n, ...), y (n,))``, class indices.
        source: where the sample comes from, for the messages.

    Raises:
        ValueError: when a class the initializer needs samples of is not in the sample.
    """
    hp = module.hparams
    distributed = module._trainer is not None and module.trainer.world_size > 1
    if distributed and module.trainer.global_rank != 0:
        prototypes, labels = module.prototypes.detach(), module.prototype_labels
    else:
        x, y = read_sample()
        if initializer in SAMPLE_INITIALIZERS:
            check_init_sample(y, module.classes_, hp.init_sample_size, source)
        prototypes, labels = module.initialize_from(
            x, y, initializer, hp.prototypes_initializer_kwargs, hp.seed
        )
    if distributed:
        # The CNN's input statistics too: rank 0 measured them on its sample.
        statistics = module.input_statistics()
        prototypes, labels, *values = module.trainer.strategy.broadcast(
            [prototypes, labels, *(s.clone() for s in statistics)], src=0
        )
        for buffer, value in zip(statistics, values):
            buffer.copy_(value)
    module.set_prototypes(prototypes, labels)


def prepare_module(module: Any, datamodule: Any = None, initialize: bool = True) -> None:
    """Build a module and initialise its prototypes from a datamodule's sample (see
    [`LVQMLN.prepare`][lvqmln_torch.lightning.model.LVQMLN.prepare]); steps already done are
    skipped.

    Args:
        module: an [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN].
        datamodule: any object: its sizes fill those left ``None`` (see
            [`read_sizes`][lvqmln_torch.lightning.user_data.read_sizes]); its
            ``init_sample(init_sample_size, seed)``, if any, initialises the prototypes.
        initialize: initialise the prototypes (not when a checkpoint brings them).

    Raises:
        ValueError: when the sizes are neither given nor readable from ``datamodule``.
    """
    hp = module.hparams
    if not module.is_built:
        custom = module._custom_backbone is not None
        if datamodule is not None:
            read_sizes(hp, datamodule, custom)
        if hp["n_classes"] is None and hp["initial_prototype_labels"] is None:
            raise ValueError(
                "LVQMLN needs the number of classes: pass n_classes (or classes), or give "
                "the datamodule an n_classes attribute; it is not read from batches, "
                "which need not show every class"
            )
        if not sizes_known(hp, custom):
            raise ValueError(
                "LVQMLN cannot infer its input size: pass in_features (MLP) or input_shape "
                "(CNN), or fit with a datamodule (its n_features / input_shape, else its "
                "first training batch) or a training DataLoader (its first batch)"
            )
        module._build()
    if initialize and not module.prototypes_ready and hasattr(datamodule, "init_sample"):
        initialize_from_sample(
            module,
            module._initializer,
            lambda: datamodule.init_sample(hp["init_sample_size"], hp["seed"]),
            f"{type(datamodule).__name__}.init_sample",
        )


class DeferredHparams:
    """Logs a module's hyperparameters beside a datamodule's that clash with them (a user's
    datamodule with its own ``seed``), which would otherwise stop the run. Lightning refuses to
    log such a pair; then it logs the datamodule's alone and this logs
    [`merged_hparams`][lvqmln_torch.lightning.user_data.merged_hparams] when the module's loop
    starts. The module calls [`defer`][lvqmln_torch.lightning.user_data.DeferredHparams.defer] in
    ``setup`` and [`log`][lvqmln_torch.lightning.user_data.DeferredHparams.log] in its
    ``on_*_start`` hooks."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def defer(self, module: Any, datamodule: Any) -> None:
        """Decide, in ``setup``, whether ``module`` logs its hyperparameters itself."""
        self.pending = None
        if module.trainer.loggers and getattr(datamodule, "_log_hyperparams", False):
            self.pending = merged_hparams(module.hparams_initial, datamodule.hparams_initial)
        module._log_hyperparams = self.pending is None

    def log(self, module: Any) -> None:
        """Log the deferred hyperparameters, once."""
        if self.pending is not None:
            for logger in module.trainer.loggers:
                logger.log_hyperparams(self.pending)
            module._log_hyperparams, self.pending = True, None
