"""Numeric safety: d⁺ = d⁻ = 0 stays finite, a non-finite training loss stops the run with a
FloatingPointError naming the optimizer step, and float64 works end to end."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch import functional as F

_trainer = quiet_trainer


class ConstantBackbone(nn.Module):
    """Maps every input to the same latent point (zero weights): ``(n, d) -> (n, 2)``."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transfer", ["identity", "sigmoid_beta", "swish_beta"])
def test_zero_distances_give_finite_loss_and_gradients(dtype, transfer):
    """Every latent code on every prototype: d⁺ = d⁻ = 0, μ = 0/1e-10."""
    z = torch.zeros(4, 2, dtype=dtype, requires_grad=True)
    prototypes = torch.zeros(3, 2, dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    targets = torch.tensor([0, 1, 2, 0])
    distances = F.squared_euclidean_distance(z, prototypes)
    assert torch.equal(distances, torch.zeros(4, 3, dtype=dtype))
    mu = F.glvq_mu(distances, targets, labels)
    assert torch.equal(mu, torch.zeros(4, dtype=dtype))
    loss = F.glvq_loss(distances, targets, labels, transfer=transfer, beta=10.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all() and torch.isfinite(prototypes.grad).all()


def test_zero_distances_in_a_training_step_stay_finite():
    """A model whose backbone collapses everything onto the prototypes trains without NaN."""
    X, y = load_builtin("iris")
    grads: list[torch.Tensor] = []

    class GradCheck(L.Callback):
        def on_after_backward(self, trainer, pl_module):
            grads.extend(p.grad.clone() for p in pl_module.parameters() if p.grad is not None)

    model = LVQMLN(
        backbone=ConstantBackbone(4),
        n_classes=3,
        latent_dim=2,
        initial_prototypes=[[0.0, 0.0]] * 3,
        initial_prototype_labels=[0, 1, 2],
    )
    trainer = _trainer(max_steps=3, callbacks=[GradCheck()])
    trainer.fit(model, ArrayDataModule(X, y, batch_size=50, standardize=True))
    assert trainer.global_step == 3
    assert np.isfinite(float(trainer.callback_metrics["train_loss"]))
    assert len(grads) == 9 and all(torch.isfinite(g).all() for g in grads)
    assert all(torch.isfinite(p).all() for p in model.parameters())


class CorruptBatch(L.Callback):
    """Writes ``value`` into one input of one training batch (a corrupted sample reaching the
    model past the datamodule's checks)."""

    def __init__(self, batch_idx: int, value: float) -> None:
        self.batch_idx = batch_idx
        self.value = value

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.batch_idx and trainer.current_epoch == 0:
            batch[0][0, 0] = self.value


@pytest.mark.parametrize(
    ("value", "step"),
    [
        # NaN reaches the loss at once.
        (float("nan"), 2),
        # +inf saturates the sigmoid backbone: the loss of step 2 is still finite, but its
        # gradient (0 · inf) is NaN, so the loss of the next step is the first non-finite one.
        (float("inf"), 3),
    ],
)
def test_non_finite_loss_stops_training_naming_the_step(value, step):
    X, y = load_builtin("iris")
    loader = DataLoader(
        TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(y)), batch_size=30
    )
    model = LVQMLN(in_features=4, n_classes=3)
    trainer = _trainer(max_epochs=5, callbacks=[CorruptBatch(2, value)])
    pattern = (
        rf"training loss became non-finite \(NaN or Inf\) at optimizer step {step} \(epoch 0\)"
    )
    with pytest.raises(FloatingPointError, match=pattern):
        trainer.fit(model, loader)
    assert trainer.current_epoch == 0  # stopped at the end of the first epoch


def test_huge_learning_rate_stops_training_with_a_clear_error():
    X, y = load_builtin("iris")
    model = LVQMLN(lr=1e30, optimizer="sgd", latent_activation=False, hidden_sizes=[10])
    trainer = _trainer(max_epochs=20)
    with pytest.raises(FloatingPointError, match=r"at optimizer step \d+ \(epoch \d+\); lower"):
        trainer.fit(model, ArrayDataModule(X, y, batch_size=16))
    assert trainer.current_epoch < 19


def test_float64_end_to_end():
    X, y = load_builtin("wine")
    dm = ArrayDataModule(
        X, y, test_size=0.3, standardize=True, batch_size=32, dtype=torch.float64, seed=0
    )
    model = LVQMLN(n_prototypes_per_class=2, lr=0.02, ema_decay=0.9, seed=0)
    trainer = _trainer(max_epochs=40, precision="64-true")
    trainer.fit(model, dm)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    x_test, y_test = dm._tensors["test"][:2]
    assert x_test.dtype == torch.float64
    assert model.transform(x_test).dtype == torch.float64
    proba = model.predict_proba(x_test)
    assert proba.dtype == torch.float64
    torch.testing.assert_close(proba.sum(1), torch.ones(len(x_test), dtype=torch.float64))
    accuracy = (model.predict_indices(x_test) == y_test).double().mean()
    assert accuracy > 0.9
    # Distances of float64 codes are float64 (never narrowed).
    with torch.no_grad():
        assert model.distances(model.transform(x_test)).dtype == torch.float64
    test_metrics = trainer.test(model, dm, verbose=False)[0]
    assert test_metrics["test_acc"] == pytest.approx(float(accuracy), abs=1e-6)
