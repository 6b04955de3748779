"""Frozen means frozen: a frozen backbone with BatchNorm and dropout (a stand-in for a
pretrained feature extractor, built here) runs in eval mode during training, and its
parameters and buffers stay bit-identical through fit, validation, checkpoint and resume;
Lightning's own ``BaseFinetuning`` freezes and unfreezes an LVQMLN's backbone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from torch import nn

from lvqmln_torch import LVQMLN, ArrayDataModule


def pretrained_extractor() -> nn.Module:
    """``(n, 4) -> (n, 3)`` with BatchNorm1d and Dropout, its running statistics moved away
    from their defaults (as a pretrained network's are)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)
    )
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(32, 4) * 2 + 1)
    return net


def blobs(n: int = 120, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return rng.normal(scale=2.0, size=(3, 4))[y] + rng.normal(size=(n, 4)), y


def datamodule() -> ArrayDataModule:
    X, y = blobs()
    return ArrayDataModule(X, y, val_size=0.25, batch_size=16, seed=0)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Modes(Callback):
    """Records the backbone's training flag in every training step and after validation."""

    def __init__(self) -> None:
        self.steps: list[bool] = []
        self.after_validation: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(pl_module.backbone.training)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.after_validation.append(pl_module.backbone.training)


def model(**kwargs) -> LVQMLN:
    return LVQMLN(backbone=pretrained_extractor(), latent_dim=3, n_classes=3, lr=0.05, **kwargs)


def test_frozen_backbone_is_bit_identical_through_fit_validation_checkpoint_and_resume(tmp_path):
    start = snapshot(pretrained_extractor())
    assert start["1.num_batches_tracked"] == 5  # really "pretrained"
    frozen, modes = model(freeze=["backbone"]), Modes()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(max_epochs=3, callbacks=[modes, checkpoints], enable_checkpointing=True)
    prototypes = frozen.prototypes.detach().clone() if frozen.prototypes_ready else None
    trainer.fit(frozen, datamodule())
    assert_bit_identical(snapshot(frozen.backbone), start)
    assert prototypes is None or not torch.equal(prototypes, frozen.prototypes)
    assert modes.steps and not any(modes.steps)  # eval mode in every step
    assert modes.after_validation and not any(modes.after_validation)
    frozen.train()  # a user's train() keeps the frozen part in eval mode too
    assert frozen.training and not frozen.backbone.training
    # ... in the checkpoint, and on through a resume.
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert_bit_identical({k: saved[f"backbone.{k}"] for k in start}, start)
    resumed = model(freeze=["backbone"])
    again = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(max_epochs=5, callbacks=[Modes(), again], enable_checkpointing=True)
    trainer.fit(resumed, datamodule(), ckpt_path=tmp_path / "last.ckpt", weights_only=True)
    assert trainer.current_epoch == 5
    assert_bit_identical(snapshot(resumed.backbone), start)


def test_a_trainable_batchnorm_backbone_trains_in_training_mode():
    """The control: without freezing, the same backbone's weights and statistics move."""
    start, modes = snapshot(pretrained_extractor()), Modes()
    free = model()
    quiet_trainer(max_epochs=2, callbacks=[modes]).fit(free, datamodule())
    end = snapshot(free.backbone)
    assert all(modes.steps)
    for key in ("0.weight", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert not torch.equal(end[key], start[key]), key


def test_initialisation_leaves_batchnorm_statistics_alone():
    net = LVQMLN(backbone=pretrained_extractor(), latent_dim=3, n_classes=3)
    start = snapshot(net.backbone)
    net.prepare(datamodule())
    assert net.prototypes_ready
    assert_bit_identical(snapshot(net.backbone), start)


class Finetune(BaseFinetuning):
    """Lightning's recipe: frozen at the start (BatchNorm too), unfrozen at ``at_epoch`` as a
    new parameter group with its own learning rate."""

    def __init__(self, at_epoch: int, lr: float) -> None:
        super().__init__()
        self.at_epoch, self.lr = at_epoch, lr
        self.backbone_by_epoch: list[dict[str, torch.Tensor]] = []

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module, epoch, optimizer) -> None:
        if epoch == self.at_epoch:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, lr=self.lr)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.backbone_by_epoch.append(snapshot(pl_module.backbone))


@pytest.mark.parametrize("lr_scheduler", [None, "cosine_decay"])
def test_lightning_base_finetuning_freezes_then_unfreezes(lr_scheduler):
    start = snapshot(pretrained_extractor())
    finetune = Finetune(at_epoch=2, lr=1e-3)
    net = model(lr_scheduler=lr_scheduler)
    trainer = quiet_trainer(max_epochs=4, callbacks=[finetune])
    trainer.fit(net, datamodule())
    before, after = finetune.backbone_by_epoch[1], finetune.backbone_by_epoch[3]
    assert_bit_identical(before, start)  # frozen for epochs 0 and 1, statistics included
    assert not torch.equal(after["0.weight"], start["0.weight"])  # trained from epoch 2
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2 and groups[-1]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in net.backbone.parameters()}
    if lr_scheduler is not None:  # the prototypes follow their schedule, the added group not
        assert groups[0]["lr"] < net.hparams.lr


def test_a_copied_frozen_model_keeps_its_backbone_in_eval_mode():
    frozen = model(freeze=["backbone"])
    twin = copy.deepcopy(frozen).train()
    assert twin.training and not twin.backbone.training
