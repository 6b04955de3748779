"""The estimator's Lightning engine: train an [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] on a ``Trainer``
with the estimator's stopping callbacks (the rules of [`lvqmln_torch.training.rules`][lvqmln_torch.training.rules])."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from lightning.pytorch import Callback, Trainer

from ..data.datamodule import ArrayDataModule
from ..lightning.callbacks import (
    LossConvergence,
    PatienceStopping,
    PrototypeProjection,
    RestoreBest,
)
from ..lightning.model import LVQMLN
from ..training.stopping import StoppingPlan
from .numpy_engine import FitHistory

__all__ = ["as_module", "fit_lightning"]


class _History(Callback):
    """Per-epoch training (and validation) loss: one host read per epoch."""

    def __init__(self) -> None:
        self.history = FitHistory()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LVQMLN) -> None:
        metrics = trainer.callback_metrics
        self.history.train.append(float(metrics["train_loss"]))
        if "val_loss" in metrics:
            self.history.val.append(float(metrics["val_loss"]))


def fit_lightning(
    arguments: Mapping[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    data_kwargs: Mapping[str, Any],
    params: Mapping[str, Any],
    precision: Any,
    accumulation: int,
) -> tuple[LVQMLN, FitHistory]:
    """Build the module from ``arguments`` and the datamodule from ``X``, ``y`` and
    ``data_kwargs``, and train with the estimator's checked ``params``.

    Returns:
        The trained module (without its trainer) and the per-epoch losses.
    """
    model = LVQMLN(**arguments)
    datamodule = ArrayDataModule(X, y, **data_kwargs)
    validate = datamodule.has("val")
    plan = StoppingPlan(params["patience"], params["epsilon"], params["restore_best"], validate)
    recorder = _History()
    callbacks: list[Callback] = [recorder]
    if plan.patience is not None:
        callbacks.append(PatienceStopping(plan.patience, plan.min_delta, monitor=plan.monitor))
    if plan.converges:
        callbacks.append(LossConvergence(plan.epsilon, monitor="train_loss"))
    if plan.restore_best:
        callbacks.append(RestoreBest(monitor=plan.monitor))
    if params.get("project_prototypes"):
        callbacks.append(PrototypeProjection(at_end=True))
    devices = params["devices"]
    trainer = Trainer(
        accelerator=params.get("accelerator", "cpu"),
        devices=1 if devices == "auto" else devices,  # never several
        precision=precision,
        max_epochs=params["max_iter"],
        accumulate_grad_batches=accumulation,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=params["verbose"],
        enable_model_summary=params["verbose"],
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validate else 0,
    )
    trainer.fit(model, datamodule=datamodule)
    model.trainer = None  # drop the trainer (and the data it holds)
    return model, recorder.history


def as_module(network: Any, hparams: Mapping[str, Any]) -> LVQMLN:
    """A fitted network as an [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] LightningModule
    with the same weights, dtype and projection sources (``network`` itself when it is one).

    Args:
        network: a fitted [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork]
            (from the numpy engine) or ``LVQMLN``.
        hparams: the module's hyperparameters (the estimator's ``module_hparams_``).

    Returns:
        The LightningModule.
    """
    if isinstance(network, LVQMLN):
        return network
    model = LVQMLN(**hparams)
    model.to(network.prototypes.dtype)
    model.load_state_dict(network.state_dict())
    model.prototype_sources = network.prototype_sources
    return model
