"""What the LightningModule adds to and takes from its checkpoints, as functions of the module
(its ``on_save_checkpoint`` / ``on_load_checkpoint`` hooks call these): the projected
prototypes' sources, the upgrade of 0.1.x checkpoints, the optimizer state matched to the
resuming run's parameter groups, and the precision conversion before the weights load."""

from __future__ import annotations

from typing import Any

from ..training.config import upgrade_checkpoint
from ..training.groups import regroup_checkpoint

__all__ = ["restore_from_checkpoint", "store_in_checkpoint"]


def store_in_checkpoint(module: Any, checkpoint: dict[str, Any]) -> None:
    """Add the module's own state to a checkpoint Lightning is writing, in place: the
    ``(P,)`` sample indices the prototypes were projected onto (``prototype_sources``, see
    [`PrototypeProjection`][lvqmln_torch.lightning.callbacks.PrototypeProjection]).

    Args:
        module: the [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] being saved.
        checkpoint: the checkpoint dictionary.
    """
    checkpoint["prototype_sources"] = module.prototype_sources


def restore_from_checkpoint(module: Any, checkpoint: dict[str, Any]) -> None:
    """Prepare the module for the checkpoint's weights, before Lightning loads them.

    The prototypes count as ready and their projection sources come back; an older
    checkpoint is brought up to date (see
    [`upgrade_checkpoint`][lvqmln_torch.training.config.upgrade_checkpoint]: a CNN predating
    ``cnn_hidden`` is rebuilt as it was, without dense layers and with its latent activation
    after the convolutions; one predating ``cnn_head`` as upstream's). When a Trainer resumes: the saved optimizer
    state is matched to this run's parameter groups (saved with two groups, resumed with one,
    or the other way round: see
    [`regroup_checkpoint`][lvqmln_torch.training.groups.regroup_checkpoint]), and a double or
    half precision plugin converts the module first.

    Args:
        module: the [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] being loaded.
        checkpoint: the loaded checkpoint dictionary, updated in place.
    """
    module._prototypes_ready = True
    module.prototype_sources = checkpoint.get("prototype_sources")
    if upgrade_checkpoint(checkpoint, module.hparams) and module.is_built:
        module._build()
    if module._trainer is None or not module.is_built:
        return
    from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision

    groups = module.parameter_groups()
    regroup_checkpoint(checkpoint, [g["name"] for g in groups], [len(g["params"]) for g in groups])
    # Lightning loads the weights before the precision plugin converts the module; convert
    # first, or a 64-true resume would round the float64 weights to float32.
    plugin = module.trainer.precision_plugin
    if isinstance(plugin, DoublePrecision | HalfPrecision):
        plugin.convert_module(module)
