"""Checkpoint safety: checkpoints hold only tensors and primitives (``weights_only=True``
loads them, with every training callback active), resuming in float64 is exact, and damaged
checkpoints give clear errors. Checkpoints of another configuration (loaded or resumed from)
are rows of the bad-input catalogue, ``tests/io/test_checkpoint_bad_inputs.py``."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.io.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from lvqmln_torch.lightning.callbacks import LossConvergence, RestoreBest


def _trainer(tmp_path, **kw) -> L.Trainer:
    return quiet_trainer(**{"enable_checkpointing": True, "default_root_dir": tmp_path, **kw})


def _datamodule(**kw) -> ArrayDataModule:
    X, y = load_builtin("iris")
    y = y.astype(str)  # string labels must survive the checkpoint
    return ArrayDataModule(X, y, batch_size=32, val_size=0.2, standardize=True, seed=1, **kw)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fit with EMA, lookahead, RestoreBest, LossConvergence, EarlyStopping and
    ModelCheckpoint(save_last) active; returns (model, datamodule, checkpoint directory)."""
    root = tmp_path_factory.mktemp("ckpt")
    model = LVQMLN(
        hidden_sizes=[6],
        n_prototypes_per_class={"0": 1, "1": 2, "2": 1},
        ema_decay=0.9,
        lookahead={"sync_period": 3, "slow_step_size": 0.5},
        lr_scheduler="cosine_decay",
        seed=2,
    )
    callbacks = [
        ModelCheckpoint(dirpath=root, save_last=True, monitor="val_loss", save_top_k=2),
        RestoreBest(),
        LossConvergence(epsilon=1e-12),
        EarlyStopping(monitor="val_loss", patience=50),
    ]
    dm = _datamodule()
    _trainer(root, max_epochs=4, callbacks=callbacks).fit(model, dm)
    return model, dm, root


def test_checkpoints_load_with_weights_only(fitted):
    _, _, root = fitted
    checkpoint = torch.load(root / "last.ckpt", weights_only=True)
    callbacks = " ".join(checkpoint["callbacks"])
    for name in (
        "ExponentialMovingAverage",
        "Lookahead",
        "RestoreBest",
        "LossConvergence",
        "EarlyStopping",
    ):
        assert name in callbacks
    assert checkpoint["hyper_parameters"]["classes"] == ["0", "1", "2"]
    loaded = LVQMLN.load_from_checkpoint(root / "last.ckpt", weights_only=True)
    assert torch.equal(loaded.prototypes, checkpoint["state_dict"]["prototypes"])
    assert loaded.prototypes.shape == (4, 2)


def test_load_checkpoint_helper_predicts_like_the_checkpointed_weights(fitted):
    _, dm, root = fitted
    model = load_checkpoint(root / "last.ckpt")
    reference = LVQMLN.load_from_checkpoint(root / "last.ckpt", weights_only=True)
    x = dm._tensors["val"][0]
    assert not model.training
    assert list(model.predict(x)) == list(reference.predict(x))
    assert set(model.predict(x)) <= {"0", "1", "2"}
    assert torch.equal(model.predict_proba(x), reference.predict_proba(x))
    assert read_checkpoint(root / "last.ckpt")["hyper_parameters"]["ema_decay"] == 0.9


def test_resume_in_float64_is_exact(tmp_path):
    """Lightning restores the weights before the precision plugin converts the module; the
    model converts itself first, so a 64-true resume does not round through float32."""
    X, y = load_builtin("iris")

    def run(max_epochs, ckpt_path=None, callbacks=()):
        dm = ArrayDataModule(X, y, batch_size=25, dtype=torch.float64, standardize=True)
        model = LVQMLN(lr=0.03, lr_scheduler="exponential_decay", seed=5)
        trainer = _trainer(
            tmp_path, max_epochs=max_epochs, precision="64-true", callbacks=list(callbacks)
        )
        trainer.fit(model, dm, ckpt_path=ckpt_path)
        return model

    every_epoch = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    full = run(6, callbacks=[every_epoch])
    resumed = run(6, ckpt_path=tmp_path / "epoch=2.ckpt")
    for key, value in full.state_dict().items():
        assert value.dtype == resumed.state_dict()[key].dtype
        assert torch.equal(value, resumed.state_dict()[key]), key


def _damage(source: bytes, kind: str) -> bytes:
    if kind == "truncated":
        return source[: len(source) // 2]
    if kind == "random":
        return os.urandom(4096)
    if kind == "empty":
        return b""
    if kind == "flipped":  # corrupt bytes in the middle of the zip archive
        middle = len(source) // 2
        return (
            source[:middle]
            + bytes(b ^ 0xFF for b in source[middle : middle + 64])
            + source[middle + 64 :]
        )
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("truncated", "is truncated or corrupt and cannot be read"),
        ("random", "is truncated or corrupt and cannot be read"),
        ("flipped", "is truncated or corrupt and cannot be read"),
        ("empty", "is empty \\(0 bytes\\)"),
    ],
)
@pytest.mark.parametrize("loader", [load_checkpoint, read_checkpoint])
def test_damaged_checkpoints_give_a_clear_error(fitted, tmp_path, kind, match, loader):
    _, _, root = fitted
    path = tmp_path / f"{kind}.ckpt"
    path.write_bytes(_damage((root / "last.ckpt").read_bytes(), kind))
    with pytest.raises(CheckpointError, match=match):
        loader(path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": EarlyStopping("x")}, path)
    with pytest.raises(CheckpointError, match="holds a pickled Python object .*EarlyStopping"):
        load_checkpoint(path)


def test_non_lvqmln_checkpoint(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hyper_parameters": {}}, path)
    with pytest.raises(CheckpointError, match="not an LVQMLN checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holds a list, not a Lightning checkpoint"):
        read_checkpoint(path)
