"""Helpers for the trajectory-parity tests: identical starting points for the Lightning model and
the JAX reference, the datamodule's batch order, and a callback that records what the torch
run did at every step.

Assumes ``jax_enable_x64`` (set once by ``tests/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from _trainers import quiet_trainer
from lightning.pytorch.callbacks import Callback

from lvqmln_torch import LVQMLN
from lvqmln_torch.core.construction import UPSTREAM_CNN
from lvqmln_torch.data.batches import BatchPlan, InMemoryBatches
from lvqmln_torch.data.datamodule import ArrayDataModule
from lvqmln_torch.io.interop import backbone_to_jax

GROUPS = ("prototypes", "backbone")


def images_nchw_to_nhwc(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(n, C, H, W)`` → ``(n, H, W, C)`` as numpy (the JAX reference's image layout)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))


@contextmanager
def default_dtype(dtype: torch.dtype):
    """Temporarily set torch's default floating dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def blobs(
    n: int = 48, d: int = 4, n_classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes: X (n, d) float64, y (n,) int in [0, n_classes),
    every class equally often (n divisible by n_classes), in interleaved order."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centers = rng.normal(scale=1.5, size=(n_classes, d))
    return centers[y] + rng.normal(size=(n, d)), y


def images(n: int = 24, shape=(2, 5, 5), n_classes: int = 2, seed: int = 0):
    """Tiny NCHW images whose class shifts the mean of one channel: (n, C, H, W), (n,)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, *shape))
    x[:, 0] += 0.8 * y[:, None, None]
    return x, y


def batch_order(
    n: int, batch_size: int | None, shuffle: bool, seed: int, epochs: int
) -> list[np.ndarray]:
    """The index of every training step, epochs concatenated, taken from
    :class:`~lvqmln_torch.data.batches.InMemoryBatches` itself (over ``arange(n)``), so it cannot
    drift from what the datamodule feeds the trainer."""
    index = torch.arange(n)
    order = []
    for epoch in range(epochs):
        batches = InMemoryBatches(
            (index,), BatchPlan(batch_size, shuffle=shuffle, seed=seed, epoch_fn=lambda e=epoch: e)
        )
        order.extend(batch[0].numpy().copy() for batch in batches)
    return order


class Recorder(Callback):
    """Per-step training losses, the learning rate of each parameter group right before each
    optimizer step, and the raw prototypes after the last step (before EMA / lookahead put
    their weights in place at the end of training)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.lrs: list[dict[str, float]] = []
        self.last_raw_prototypes: np.ndarray | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning hands back the loss divided by accumulate_grad_batches; undo that.
        self.losses.append(float(outputs["loss"]) * trainer.accumulate_grad_batches)
        self.last_raw_prototypes = pl_module.prototypes.detach().numpy().copy()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        if "all" in lrs:  # one group when the prototypes and the backbone train alike
            lrs = {"prototypes": lrs["all"], "backbone": lrs.pop("all")}
        self.lrs.append(lrs)

    def lr_matrix(self, groups: Sequence[str]) -> np.ndarray:
        """(n_steps, len(groups)) learning rates."""
        return np.array([[step[g] for g in groups] for step in self.lrs], dtype=np.float64)


@dataclass
class Run:
    """A configured pair of runs (torch model, datamodule, reference inputs) and its results."""

    model: LVQMLN
    datamodule: ArrayDataModule
    init_params: dict[str, Any]
    prototype_labels: np.ndarray
    X_ref: np.ndarray
    y: np.ndarray
    recorder: Recorder = field(default_factory=Recorder)


def prototypes_from_latent(
    model: LVQMLN, X: np.ndarray, y: np.ndarray, per_class: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Class-blocked prototypes: the untrained backbone's latent codes of the first
    ``per_class`` samples of each class, shifted a little so copies are not identical."""
    with torch.no_grad():
        z = model.backbone(torch.as_tensor(X, dtype=torch.get_default_dtype())).numpy()
    protos, labels = [], []
    for c in range(n_classes):
        rows = np.flatnonzero(y == c)[:per_class]
        for j, r in enumerate(rows):
            protos.append(z[r] + 0.01 * (j + 1) * np.cos(np.arange(z.shape[1]) + c))
            labels.append(c)
    return np.array(protos), np.array(labels)


def setup_run(
    X: np.ndarray,
    y: np.ndarray,
    *,
    dtype: torch.dtype = torch.float64,
    per_class: int = 1,
    batch_size: int | None = None,
    shuffle: bool = True,
    data_seed: int = 7,
    sample_weight: np.ndarray | None = None,
    class_weight: Any = None,
    **model_kwargs: Any,
) -> Run:
    """Build the Lightning model (weights in ``dtype``) with explicit initial prototypes, its
    datamodule, and the reference's identical starting parameters."""
    n_classes = int(y.max()) + 1
    cnn = X.ndim == 4
    sizes = {"input_shape": X.shape[1:]} if cnn else {"in_features": X.shape[1]}
    if cnn:  # upstream's CNN (the reference's); the module's own default is ours
        lr = model_kwargs.get("lr", 0.01)
        model_kwargs = {**UPSTREAM_CNN, "bb_lr": lr, **model_kwargs}
    common = dict(backbone="cnn" if cnn else "mlp", n_classes=n_classes, **sizes, **model_kwargs)
    with default_dtype(dtype):
        probe = LVQMLN(**common)
        protos, labels = prototypes_from_latent(probe, X, y, per_class, n_classes)
        model = LVQMLN(initial_prototypes=protos, initial_prototype_labels=labels, **common)
    # The explicit prototypes must arrive unrounded; the backbone is the seeded one.
    np.testing.assert_array_equal(model.prototypes.detach().numpy(), protos.astype(dtype_np(dtype)))
    init = {
        "prototypes": model.prototypes.detach().numpy().astype(np.float64),
        "backbone": _as_float64(backbone_to_jax(model.backbone)),
    }
    datamodule = ArrayDataModule(
        X,
        y,
        sample_weight=sample_weight,
        class_weight=class_weight,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=data_seed,
        dtype=dtype,
    )
    X_in = X.astype(dtype_np(dtype)).astype(np.float64)
    X_ref = images_nchw_to_nhwc(X_in) if cnn else X_in
    return Run(model, datamodule, init, labels, X_ref, y)


def dtype_np(dtype: torch.dtype) -> type:
    return {torch.float64: np.float64, torch.float32: np.float32}[dtype]


def _as_float64(tree: Any) -> Any:
    import jax

    return jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), tree)


def fit(run: Run, epochs: int, precision: str = "64-true", **trainer_kwargs: Any) -> None:
    """Train the torch side with a quiet Trainer, recording losses and learning rates."""
    trainer = quiet_trainer(
        precision=precision,
        max_epochs=epochs,
        num_sanity_val_steps=0,
        callbacks=[run.recorder],
        **trainer_kwargs,
    )
    trainer.fit(run.model, datamodule=run.datamodule)


def reference(run: Run, order: list[np.ndarray], **kwargs: Any) -> dict[str, Any]:
    """Run ``lvqmln_jax_ref.train`` from the same start; the model's hyperparameters supply
    the settings the two implementations share."""
    from lvqmln_jax_ref import train

    hp = run.model.hparams
    settings = dict(
        backbone=hp.backbone,
        activation=hp.activation or ("relu" if hp.backbone == "cnn" else "sigmoid"),
        latent_activation=hp.latent_activation,
        optimizer=hp.optimizer,
        lr=hp.lr,
        bb_lr=hp.bb_lr,
        lr_scheduler=hp.lr_scheduler,
        lr_scheduler_kwargs=hp.lr_scheduler_kwargs,
        transfer_fn=hp.transfer,
        beta=hp.beta,
        margin=hp.margin,
        ema_decay=hp.ema_decay,
        lookahead=hp.lookahead,
        freeze=tuple(hp.freeze),
    )
    settings.update(kwargs)
    return train(run.init_params, run.X_ref, run.y, run.prototype_labels, order, **settings)


def final_params(model: LVQMLN) -> dict[str, Any]:
    """The torch model's parameters in the reference's layout (float64 numpy)."""
    return {
        "prototypes": model.prototypes.detach().numpy().astype(np.float64),
        "backbone": _as_float64(backbone_to_jax(model.backbone)),
    }


def leaves(tree: Any) -> list[np.ndarray]:
    import jax

    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def assert_params_close(got: Any, expected: Any, tol: float) -> None:
    """Same structure, shapes and values to ``tol`` (absolute plus relative)."""
    got_leaves, expected_leaves = leaves(got), leaves(expected)
    assert len(got_leaves) == len(expected_leaves)
    for a, b in zip(got_leaves, expected_leaves):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def assert_trajectory(run: Run, ref: dict[str, Any], tol: float = 1e-10) -> None:
    """Per-step losses, learning rates of every trained group, and final parameters agree."""
    losses = np.array(run.recorder.losses)
    assert losses.shape == ref["losses"].shape
    np.testing.assert_allclose(losses, ref["losses"], rtol=tol, atol=tol)
    trained = [g for g in GROUPS if g not in run.model.hparams.freeze]
    columns = [GROUPS.index(g) for g in trained]
    np.testing.assert_allclose(
        run.recorder.lr_matrix(trained), ref["lrs"][:, columns], rtol=1e-12, atol=1e-15
    )
    assert_params_close(final_params(run.model), ref["params"], tol)
