"""Train an MLP LVQMLN on the CPU without Lightning's loop: the estimator's engine for small
problems.

On a problem the size of iris, an epoch of ``Trainer.fit`` spends about 1 ms in the step's
torch operations and autograd nodes (dispatch, not arithmetic) and several more in
Lightning's loop, logging and hooks. This engine computes the step with
[`lvqmln_torch.sklearn.numpy_core`][lvqmln_torch.sklearn.numpy_core] (the forward pass and hand-derived gradients in NumPy) and
keeps everything else the Lightning path uses: the module's seeded initialisation, the
datamodule's batches and shuffling, the module's parameter groups, torch optimizer and
learning-rate schedule (run on flat views of the same memory), the EMA and lookahead callbacks'
update rules, and the semantics of the estimator's stopping callbacks. It trains the same
model: the trajectories agree with the Lightning path to rounding (``1e-10`` in float64; see
``tests/sklearn/test_numpy_engine.py``), not bit for bit.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor, nn

from ..core.construction import DEFAULT_ACTIVATION, backbone_lr
from ..core.network import PrototypeNetwork
from ..data.arrays import ArrayData
from ..training.config import ModuleConfig
from ..training.optimizers import OPTIMIZERS, build_optimizer, parameter_groups
from ..training.rules import (
    EpochMean,
    StallRule,
    TrainingStallWarning,
    evaluating_rule,
    nonfinite_loss_error,
    shadow_rules,
)
from ..training.stopping import StoppingPlan
from .numpy_core import Layer, glvq_loss_and_grads, mlp_backward, mlp_forward
from .numpy_layout import CoreBatch, CoreBatches, FlatParameters

__all__ = ["FitHistory", "fit_estimator_numpy", "fit_numpy"]


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The process's thread pools (inspected once: the first inspection takes milliseconds)."""
    return ThreadpoolController()


@dataclass
class FitHistory:
    """Per-epoch monitored values of a fit, as the estimator's Lightning callbacks see them."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)


class _Engine:
    """One fit: the model's current (initialised) weights in, trained weights out."""

    def __init__(
        self,
        model: PrototypeNetwork,
        hparams: Mapping[str, Any],
        optimizer_cls: type[torch.optim.Optimizer],
        data: ArrayData,
        max_epochs: int,
    ) -> None:
        hp = hparams
        self.dtype = np.dtype(str(model.prototypes.dtype).removeprefix("torch."))
        self.activation = hp["activation"] or DEFAULT_ACTIVATION["mlp"]
        self.latent_activation = bool(hp["latent_activation"])
        self.transfer, self.beta, self.margin = (
            hp["transfer"],
            float(hp["beta"]),
            float(hp["margin"]),
        )
        labels = model.prototype_labels.cpu().numpy()
        self.data, self.labels = data, labels
        self.train_batches = CoreBatches(data.loader("train", data.shuffle), labels, self.dtype)
        self.val_batches = (
            CoreBatches(data.loader("val"), labels, self.dtype) if data.has("val") else None
        )

        self.flat = FlatParameters(model, self.dtype)
        self.grad = np.zeros_like(self.flat.values)
        self.prototypes, self.layers = self.flat.unflatten(self.flat.values)
        self.grad_prototypes, self.grad_layers = self.flat.unflatten(self.grad)

        groups = parameter_groups(
            model.prototypes, model.backbone, hp["lr"], backbone_lr(hp), hp["freeze"]
        )
        self.trained = [g["name"] for g in groups]
        settings = [{k: v for k, v in g.items() if k not in ("params", "name")} for g in groups]
        elementwise = optimizer_cls in OPTIMIZERS.values()
        if len(groups) == 2 and settings[0] == settings[1] and elementwise:
            # Equal settings: one group over both slices (contiguous) halves the optimizer's
            # per-step Python; an element-wise optimizer updates every element the same way.
            groups = [{**groups[0], "name": "all"}]
        self.params: dict[str, nn.Parameter] = {}
        for group in groups:
            part = self.flat.slices[group["name"]]
            param = nn.Parameter(torch.from_numpy(self.flat.values[part]))
            param.grad = torch.from_numpy(self.grad[part])  # filled in place every step
            self.params[group["name"]] = param
            group["params"] = [param]
        steps = max_epochs * len(self.train_batches)
        self.optimizer, self.scheduler = build_optimizer(optimizer_cls, groups, hp, lambda: steps)

        # The EMA / lookahead rules (as the module's callbacks run them), on shadows of the groups.
        self.shadows = [
            (rule, {n: p.detach().clone() for n, p in self.params.items()})
            for rule in shadow_rules(hp["ema_decay"], hp["lookahead"])
        ]
        evaluating = evaluating_rule([rule for rule, _ in self.shadows])
        self.evaluating = next((sh for rule, sh in self.shadows if rule is evaluating), None)

    def evaluation_buffer(self) -> np.ndarray:
        """The weights the model evaluates with and ends on: the evaluating shadow in place."""
        if self.evaluating is None:
            return self.flat.values.copy()
        buffer = self.flat.values.copy()
        for name, shadow in self.evaluating.items():
            buffer[self.flat.slices[name]] = shadow.numpy()
        return buffer

    def _loss(
        self, prototypes: np.ndarray, layers: list[Layer], batch: CoreBatch, grads: bool
    ) -> tuple[list[np.ndarray], Any, bool, np.ndarray | None, np.ndarray | None]:
        """``(activations, loss, distances finite, ∂L/∂zᵀ, ∂L/∂W)`` of ``batch`` for these
        weights; the gradients (of the trained parameters only) with ``grads``."""
        outputs = mlp_forward(layers, batch.x_t, self.activation, self.latent_activation)
        loss, finite, grad_latent, grad_prototypes = glvq_loss_and_grads(
            outputs[-1],
            prototypes,
            batch.targets,
            self.transfer,
            self.beta,
            self.margin,
            need_latent_grad=grads and "backbone" in self.trained,
            need_prototype_grad=grads and "prototypes" in self.trained,
        )
        return outputs, loss, finite, grad_latent, grad_prototypes

    def _backward(self, batch: CoreBatch) -> tuple[Any, bool]:
        """The batch's loss, with its gradients written into the optimizer's ``.grad``
        buffers; and whether the distances were finite."""
        outputs, loss, finite, grad_latent, grad_prototypes = self._loss(
            self.prototypes, self.layers, batch, grads=True
        )
        if grad_latent is not None:
            mlp_backward(
                self.layers,
                outputs,
                grad_latent,
                self.activation,
                self.latent_activation,
                self.grad_layers,
            )
        if grad_prototypes is not None:
            self.grad_prototypes[...] = grad_prototypes
        return loss, finite

    def train_epoch(self, step: int) -> tuple[float, int, int | None]:
        """One epoch of optimizer steps from global step ``step``.

        The step runs in the optimizer's closure, as Lightning runs the training step, so an
        optimizer that evaluates it several times (a line search) works as on the Lightning
        path, and every evaluation counts in the epoch loss as every ``training_step`` does
        there.

        Returns:
            ``(epoch loss, global step after the epoch, first step with a non-finite loss)``.
        """
        epoch_loss = EpochMean()
        first_bad: list[int] = []

        def closure(batch: CoreBatch, step: int) -> Tensor:
            loss, finite = self._backward(batch)
            if not (finite and np.isfinite(loss)):
                first_bad.append(step)
                loss = np.nan  # as the module reports a loss over non-finite distances
            epoch_loss.update(loss, batch.weight_sum)
            return torch.as_tensor(loss)

        for batch in self.train_batches:
            self.optimizer.step(functools.partial(closure, batch, step))
            if self.scheduler is not None:
                self.scheduler.step()
            step += 1
            for rule, shadow in self.shadows:
                rule.after_step(shadow, self.params, step)
        return epoch_loss.compute(), step, (first_bad or [None])[0]

    def train_accuracy(self) -> float:
        """The share of training samples whose nearest prototype (current weights) has their
        class; over unshuffled batches (the training batches' shuffling is left alone)."""
        correct = total = 0
        for batch in CoreBatches(self.data.loader("train"), self.labels, self.dtype):
            latent = mlp_forward(self.layers, batch.x_t, self.activation, self.latent_activation)[
                -1
            ]
            distances = (self.prototypes * self.prototypes).sum(axis=1)[:, None]
            distances = distances + (latent * latent).sum(axis=0) - 2 * (self.prototypes @ latent)
            nearest = distances.argmin(axis=0)
            correct += int(batch.targets.same_class[nearest, np.arange(len(nearest))].sum())
            total += len(nearest)
        return correct / total

    def validate(self) -> float:
        """The validation loss on the evaluation weights."""
        prototypes, layers = self.flat.unflatten(self.evaluation_buffer())
        val_loss = EpochMean()
        for batch in self.val_batches:
            _, loss, finite, _, _ = self._loss(prototypes, layers, batch, grads=False)
            val_loss.update(loss if finite else np.nan, batch.weight_sum)
        return val_loss.compute()


def fit_numpy(
    network: PrototypeNetwork,
    hparams: Mapping[str, Any],
    optimizer_cls: type[torch.optim.Optimizer],
    data: ArrayData,
    max_epochs: int,
    epsilon: float | None = None,
    patience: int | None = None,
    restore_best: bool = False,
    verbose: bool = False,
) -> FitHistory:
    """Train ``network`` on ``data`` for up to ``max_epochs`` epochs, with the estimator's
    stopping rules and stall warning ([`lvqmln_torch.training.rules`][lvqmln_torch.training.rules]), on the NumPy engine; ``network`` ends on the
    trained weights, in its dtype (float32 or float64).

    Args:
        network: an MLP network with initialised prototypes (see
            [`numpy_engine_unsupported`][lvqmln_torch.sklearn.engines.numpy_engine_unsupported]).
        hparams: the module's validated hyperparameters ([`module_config`][lvqmln_torch.training.config.module_config]).
        optimizer_cls: the optimizer class.
        data: the training (and optional validation) data.
        max_epochs: the number of epochs unless a stopping rule ends the fit earlier.
        epsilon: with ``patience``, the minimum improvement; alone, stop when the epoch loss
            changes by less than this.
        patience: early stopping after this many epochs without improvement.
        restore_best: end on the weights of the epoch with the best monitored loss.
        verbose: print the losses about ten times per fit.

    Returns:
        The per-epoch training (and validation) losses.

    Raises:
        ValueError: for a model this engine cannot train.
        FloatingPointError: when the training loss becomes non-finite.
    """
    if hparams["backbone"] != "mlp":
        raise ValueError("the numpy engine trains the MLP backbone only")
    engine = _Engine(network, hparams, optimizer_cls, data, max_epochs)
    # The estimator's stopping callbacks, as rules.
    plan = StoppingPlan(patience, epsilon, restore_best, engine.val_batches is not None)
    stop_early, converge, best = plan.patience_rule(), plan.convergence_rule(), plan.best_tracker()
    history = FitHistory()
    stall = StallRule()
    step = 0
    report_every = max(1, max_epochs // 10)
    # One BLAS thread: NumPy's OpenBLAS threads and torch's OpenMP threads, alternating in
    # every step, oversubscribe the cores (measured: a 64x64 by 64x1000 product took 8 ms
    # instead of 0.2 ms on 2 cores); the engine's products are small anyway.
    with (
        _blas_threads().limit(limits=1, user_api="blas"),
        np.errstate(over="ignore", invalid="ignore", divide="ignore"),
    ):
        for epoch in range(max_epochs):
            train_loss, step, first_bad = engine.train_epoch(step)
            if engine.val_batches is not None:
                history.val.append(engine.validate())
            history.train.append(train_loss)
            monitored = history.val[-1] if plan.validates else train_loss
            should_stop = converge is not None and converge.update(train_loss)
            if best is not None:
                best.update(monitored, epoch, engine.evaluation_buffer)
            if first_bad is not None:
                raise nonfinite_loss_error(first_bad, epoch)
            if stop_early is not None:
                should_stop |= stop_early.update(monitored)
            if verbose and ((epoch + 1) % report_every == 0 or should_stop):
                val = f", val_loss {history.val[-1]:.6g}" if history.val else ""
                print(f"epoch {epoch + 1}/{max_epochs}: train_loss {train_loss:.6g}{val}")
            stall.record(train_loss, step)
            if stall.due(last=should_stop or epoch == max_epochs - 1):
                counts = np.bincount(data.train_tensors()[1].cpu().numpy())
                message = stall.check(engine.train_accuracy(), counts.max() / counts.sum())
                if message is not None:
                    warnings.warn(message, TrainingStallWarning, stacklevel=2)
            if should_stop:
                break
    final = best.state if best is not None else engine.evaluation_buffer()
    engine.flat.write_to(network, final)
    return history


def fit_estimator_numpy(
    network: PrototypeNetwork,
    config: ModuleConfig,
    data: ArrayData,
    params: Mapping[str, Any],
    double: bool,
) -> FitHistory:
    """The estimator's fit on this engine: initialise the prototypes from the data's bounded
    sample, train with [`fit_numpy`][lvqmln_torch.sklearn.numpy_engine.fit_numpy], and project the prototypes if asked.

    Args:
        network: the estimator's network, built from ``config``.
        config: the validated module configuration.
        data: the training (and optional validation) data.
        params: the estimator's parameters (``max_iter``, ``epsilon``, ``patience``,
            ``restore_best``, ``verbose``, ``project_prototypes``).
        double: train in float64 (initialised in float32 and then cast, as Lightning's
            ``64-true``).

    Returns:
        The per-epoch training (and validation) losses.
    """
    hp = config.hparams
    x, y = data.init_sample(hp["init_sample_size"], hp["seed"])
    network.set_prototypes(
        *network.initialize_from(
            x, y, config.initializer, hp["prototypes_initializer_kwargs"], hp["seed"]
        )
    )
    if double:
        network.double()
    history = fit_numpy(
        network,
        hp,
        config.optimizer_cls,
        data,
        params["max_iter"],
        epsilon=params["epsilon"],
        patience=params["patience"],
        restore_best=params["restore_best"],
        verbose=params["verbose"],
    )
    if params.get("project_prototypes"):
        network.project_prototypes(*data.train_tensors()[:2])
    return history
