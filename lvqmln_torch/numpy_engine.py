"""Train an MLP LVQMLN on the CPU without Lightning's loop: the estimator's engine for small
problems.

On a problem the size of iris, an epoch of ``Trainer.fit`` spends about 1 ms in the step's
torch operations and autograd nodes (dispatch, not arithmetic) and several more in
Lightning's loop, logging and hooks. This engine computes the step with
:mod:`lvqmln_torch.numpy_core` (the forward pass and hand-derived gradients in NumPy) and
keeps everything else the Lightning path uses: the module's seeded initialisation, the
datamodule's batches and shuffling, the module's parameter groups, torch optimizer and
learning-rate schedule (run on flat views of the same memory), the EMA and lookahead callbacks'
update rules, and the semantics of the estimator's stopping callbacks. It trains the same
model: the trajectories agree with the Lightning path to rounding (``1e-10`` in float64; see
``tests/test_numpy_engine.py``), not bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController
from torch import Tensor, nn

from .callbacks import ExponentialMovingAverage, Lookahead
from .callbacks._shadow import ShadowWeights
from .data import ArrayDataModule
from .model import DEFAULT_ACTIVATION, LVQMLN, nonfinite_loss_error
from .numpy_core import (
    TRANSFERS,
    GLVQTargets,
    Layer,
    glvq_loss_and_grads,
    glvq_targets,
    mlp_backward,
    mlp_forward,
)

__all__ = ["FitHistory", "fit_numpy", "numpy_engine_unsupported"]


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The process's thread pools (inspected once: the first inspection takes milliseconds)."""
    return ThreadpoolController()


def numpy_engine_unsupported(model: LVQMLN) -> str | None:
    """Why ``model`` cannot train on this engine (``None`` when it can): the engine covers the
    built-in MLP backbone with a built-in transfer."""
    hp = model.hparams
    if hp.backbone != "mlp":
        return f"backbone={hp.backbone!r} (the numpy engine trains the MLP backbone only)"
    if not isinstance(hp.transfer, str) or hp.transfer not in TRANSFERS:
        return "a callable transfer_fn (the numpy engine knows the built-in transfers only)"
    return None


@dataclass
class FitHistory:
    """Per-epoch monitored values of a fit, as the estimator's Lightning callbacks see them."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)


class _EpochMean:
    """The epoch loss as the module's ``_WeightedMean`` metric computes it: float32 sums of
    ``loss_b · weight_b`` and ``weight_b`` over the batches, so stopping rules compare the
    same numbers as on the Lightning path."""

    def __init__(self) -> None:
        self.total = np.float32(0.0)
        self.weight = np.float32(0.0)

    def update(self, loss: Any, weight: Any) -> None:
        weight = np.float32(weight)
        self.total += np.float32(loss) * weight
        self.weight += weight

    def compute(self) -> float:
        return float(self.total / self.weight)


class _Stopping:
    """The estimator's stopping rules: Lightning's ``EarlyStopping(mode="min")`` with
    ``patience`` (``min_delta`` = ``epsilon``), else :class:`~lvqmln_torch.callbacks.LossConvergence`
    with ``epsilon``, else none; the comparisons in the callbacks' arithmetic."""

    def __init__(self, epsilon: float | None, patience: int | None) -> None:
        self.epsilon = epsilon
        self.patience = patience
        self.previous: float | None = None
        self.best = np.float32(np.inf)
        self.wait = 0

    def early_stop(self, current: float) -> bool:
        """EarlyStopping's decision for this epoch's monitored value (float32 tensors there)."""
        if self.patience is None:
            return False
        current32 = np.float32(current)
        if not np.isfinite(current32):
            return True
        if current32 + np.float32(self.epsilon or 0.0) < self.best:
            self.best, self.wait = current32, 0
            return False
        self.wait += 1
        return self.wait >= self.patience

    def converged(self, current: float) -> bool:
        """LossConvergence's decision (Python floats there)."""
        if self.patience is not None or self.epsilon is None:
            return False
        done = self.previous is not None and abs(current - self.previous) < self.epsilon
        self.previous = current
        return done


def _parameters(model: LVQMLN) -> list[Tensor]:
    """The prototypes, then every backbone layer's weight and bias."""
    layers = model.backbone.layers
    return [model.prototypes] + [t for layer in layers for t in (layer.weight, layer.bias)]


class _FlatParameters:
    """The module's parameters in one flat NumPy buffer, prototypes first, then every backbone
    layer's weight and bias, so each optimizer group (``prototypes``, ``backbone``) is one
    contiguous slice that torch optimizes in place through a shared-memory tensor."""

    def __init__(self, model: LVQMLN, dtype: np.dtype) -> None:
        tensors = _parameters(model)
        self.shapes = [tuple(t.shape) for t in tensors]
        self.offsets = np.cumsum([0] + [math.prod(s) for s in self.shapes]).tolist()
        self.slices = {
            "prototypes": slice(0, self.offsets[1]),
            "backbone": slice(self.offsets[1], self.offsets[-1]),
            "all": slice(0, self.offsets[-1]),
        }
        self.values = np.empty(self.offsets[-1], dtype=dtype)
        for tensor, part in zip(tensors, self.views(self.values)):
            part[...] = tensor.detach().cpu().numpy()

    def views(self, buffer: np.ndarray) -> list[np.ndarray]:
        """The parameters as views of ``buffer`` (any array of this layout)."""
        return [
            buffer[start:end].reshape(shape)
            for start, end, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        ]

    def unflatten(self, buffer: np.ndarray) -> tuple[np.ndarray, list[Layer]]:
        """``(prototypes, [(W, b), …])`` as views of ``buffer``."""
        views = self.views(buffer)
        return views[0], list(zip(views[1::2], views[2::2]))

    def write_to(self, model: LVQMLN, buffer: np.ndarray) -> None:
        """Copy the weights in ``buffer`` into the module's parameters."""
        with torch.no_grad():
            for tensor, part in zip(_parameters(model), self.views(buffer)):
                tensor.copy_(torch.from_numpy(part))


@dataclass(frozen=True)
class _Batch:
    """A batch as the NumPy core takes it."""

    x_t: np.ndarray  # (in_features, n) C-contiguous, in the working dtype
    targets: GLVQTargets
    weight_sum: Any  # Σw, or n without sample weights: the batch's weight in the epoch loss


class _Batches:
    """The loader's batches for the NumPy core; a batch that repeats (the same tensors every
    epoch, as the full batch is) is converted once."""

    def __init__(self, loader: Any, labels: np.ndarray, dtype: np.dtype) -> None:
        self.loader, self.labels, self.dtype = loader, labels, dtype
        self._last: tuple[Tensor, _Batch] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[_Batch]:
        for batch in self.loader:
            if self._last is not None and self._last[0] is batch[0]:
                yield self._last[1]
                continue
            x, y = batch[0].numpy(), batch[1].numpy()
            w = batch[2].numpy() if len(batch) == 3 else None
            converted = _Batch(
                np.ascontiguousarray(x.T, dtype=self.dtype),
                glvq_targets(y, self.labels, w, self.dtype),
                w.sum() if w is not None else len(y),
            )
            self._last = (batch[0], converted)
            yield converted


class _Engine:
    """One fit: the model's current (initialised) weights in, trained weights out."""

    def __init__(self, model: LVQMLN, datamodule: ArrayDataModule, max_epochs: int) -> None:
        hp = model.hparams
        self.dtype = np.dtype(str(model.prototypes.dtype).removeprefix("torch."))
        self.activation = hp.activation or DEFAULT_ACTIVATION["mlp"]
        self.latent_activation = bool(hp.latent_activation)
        self.transfer, self.beta, self.margin = hp.transfer, float(hp.beta), float(hp.margin)
        labels = model.prototype_labels.cpu().numpy()
        self.train_batches = _Batches(datamodule.train_dataloader(), labels, self.dtype)
        val_loader = datamodule.val_dataloader()
        self.val_batches = _Batches(val_loader, labels, self.dtype) if val_loader else None

        self.flat = _FlatParameters(model, self.dtype)
        self.grad = np.zeros_like(self.flat.values)
        self.prototypes, self.layers = self.flat.unflatten(self.flat.values)
        self.grad_prototypes, self.grad_layers = self.flat.unflatten(self.grad)

        groups = model.parameter_groups()
        self.trained = [g["name"] for g in groups]
        settings = [{k: v for k, v in g.items() if k not in ("params", "name")} for g in groups]
        if len(groups) == 2 and settings[0] == settings[1] and model.elementwise_optimizer:
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
        self.optimizer, self.scheduler = model.build_optimizer(groups, lambda: steps)

        # The module's EMA / lookahead callbacks, in its order, updating shadows of the groups.
        self.shadows: list[ShadowWeights] = list(model.configure_callbacks())
        for shadow in self.shadows:
            shadow.shadow = {n: p.detach().clone() for n, p in self.params.items()}
        emas = [s for s in self.shadows if isinstance(s, ExponentialMovingAverage)]
        lookaheads = [s for s in self.shadows if isinstance(s, Lookahead)]
        self.evaluating = (emas or lookaheads or [None])[0]

    def evaluation_buffer(self) -> np.ndarray:
        """The weights the model evaluates with and ends on: the evaluating shadow in place."""
        if self.evaluating is None:
            return self.flat.values.copy()
        buffer = self.flat.values.copy()
        for name, shadow in self.evaluating.shadow.items():
            buffer[self.flat.slices[name]] = shadow.numpy()
        return buffer

    def _loss(
        self, prototypes: np.ndarray, layers: list[Layer], batch: _Batch, grads: bool
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

    def _backward(self, batch: _Batch) -> tuple[Any, bool]:
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
        epoch_loss = _EpochMean()
        first_bad: list[int] = []

        def closure(batch: _Batch, step: int) -> Tensor:
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
            for shadow in self.shadows:
                shadow.after_optimizer_step(self.params, step)
        return epoch_loss.compute(), step, (first_bad or [None])[0]

    def validate(self) -> float:
        """The validation loss on the evaluation weights."""
        prototypes, layers = self.flat.unflatten(self.evaluation_buffer())
        val_loss = _EpochMean()
        for batch in self.val_batches:
            _, loss, finite, _, _ = self._loss(prototypes, layers, batch, grads=False)
            val_loss.update(loss if finite else np.nan, batch.weight_sum)
        return val_loss.compute()


def fit_numpy(
    model: LVQMLN,
    datamodule: ArrayDataModule,
    max_epochs: int,
    epsilon: float | None = None,
    patience: int | None = None,
    restore_best: bool = False,
    double: bool = False,
    verbose: bool = False,
) -> FitHistory:
    """Train ``model`` on ``datamodule`` for up to ``max_epochs`` epochs, with the estimator's
    stopping rules, on the NumPy engine; ``model`` ends on the trained weights.

    Args:
        model: an MLP :class:`~lvqmln_torch.model.LVQMLN` (see
            :func:`numpy_engine_unsupported`), built or not.
        datamodule: the training (and optional validation) data.
        max_epochs: the number of epochs unless a stopping rule ends the fit earlier.
        epsilon: with ``patience``, the minimum improvement; alone, stop when the epoch loss
            changes by less than this.
        patience: early stopping after this many epochs without improvement.
        restore_best: end on the weights of the epoch with the best monitored loss.
        double: train in float64 (Lightning's ``64-true``: initialised in float32, then cast).
        verbose: print the losses about ten times per fit.

    Returns:
        The per-epoch training (and validation) losses.

    Raises:
        ValueError: for a model this engine cannot train.
        FloatingPointError: when the training loss becomes non-finite.
    """
    model.prepare(datamodule)
    reason = numpy_engine_unsupported(model)
    if reason is not None:
        raise ValueError(f"the numpy engine cannot train this model: {reason}")
    if double:
        model.double()
    engine = _Engine(model, datamodule, max_epochs)
    stopping = _Stopping(epsilon, patience)
    history = FitHistory()
    best_score, best_buffer = None, None
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
            should_stop = False
            if engine.val_batches is not None:
                history.val.append(engine.validate())
                should_stop = stopping.early_stop(history.val[-1])
            history.train.append(train_loss)
            should_stop |= stopping.converged(train_loss)
            monitored = history.val[-1] if engine.val_batches is not None else train_loss
            if restore_best and (best_score is None or monitored < best_score):
                best_score, best_buffer = monitored, engine.evaluation_buffer()
            if first_bad is not None:
                raise nonfinite_loss_error(first_bad, epoch)
            if engine.val_batches is None:
                should_stop |= stopping.early_stop(train_loss)
            if verbose and ((epoch + 1) % report_every == 0 or should_stop):
                val = f", val_loss {history.val[-1]:.6g}" if history.val else ""
                print(f"epoch {epoch + 1}/{max_epochs}: train_loss {train_loss:.6g}{val}")
            if should_stop:
                break
    final = best_buffer if best_buffer is not None else engine.evaluation_buffer()
    engine.flat.write_to(model, final)
    return history
