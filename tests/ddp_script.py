"""Two-process CPU DDP runs of LVQMLN, launched by ``tests/lightning/test_ddp.py`` as a
subprocess.

Usage::

    python tests/ddp_script.py OUT_DIR [--devices 2]

Lightning re-launches this script once per extra rank (DDP cannot run under pytest, which it
would re-run). Every case below is fitted in turn in the same process group; each rank writes
``OUT_DIR/<case>_rank<r>.pt`` with the weights it trains from (recorded at the first training
step, after every ``on_train_start`` hook), its final weights and the epoch metrics it saw.
The test compares ranks with each other and with single-process runs of the same
configuration (:func:`fit_case` with ``devices=1``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _ddp import ddp_trainer
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, TensorDataset

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.core.files import atomic_write
from lvqmln_torch.lightning.callbacks import TemperatureCalibration

N_SAMPLES = 96
N_FEATURES = 5
GLOBAL_BATCH = 16  # divisible by the world size; N_SAMPLES divisible by it
EPOCHS = 4

COMMON: dict[str, Any] = {
    "hidden_sizes": [8],
    "latent_dim": 3,
    "n_prototypes_per_class": 2,
    "seed": 3,
    "lr": 0.02,
}

# name -> (model kwargs, datamodule kwargs); "loader" cases use a plain DataLoader instead of
# an ArrayDataModule, so the prototypes are initialised in on_train_start from each rank's
# own DistributedSampler shard and only the rank-0 broadcast makes them agree.
CASES: dict[str, dict[str, Any]] = {
    "plain": {
        "model": {"lr_scheduler": "exponential_decay", "lr_scheduler_kwargs": {"decay_rate": 0.9}},
        "data": {},
    },
    "ema_lookahead_bblr": {
        "model": {
            "ema_decay": 0.8,
            "lookahead": {"sync_period": 4, "slow_step_size": 0.5},
            "bb_lr": 0.005,
            "lr_scheduler": "cosine_decay",
        },
        "data": {},
    },
    "freeze_backbone_class_weight": {
        "model": {"freeze": ["backbone"], "ema_decay": 0.9},
        "data": {"class_weight": "balanced"},
    },
    # The "plain" case with X memory-mapped from a .npy file (read per step, sorted rows).
    "memmap": {
        "model": {"lr_scheduler": "exponential_decay", "lr_scheduler_kwargs": {"decay_rate": 0.9}},
        "data": {"memmap": True},
    },
    "loader_freeze_prototypes": {
        "model": {"freeze": ["prototypes"], "in_features": N_FEATURES, "n_classes": 3},
        "data": None,
    },
    # The CNN from a plain DataLoader: its input statistics are measured on rank 0's sample in
    # on_train_start and broadcast with the prototypes.
    "loader_cnn": {
        "model": {
            "backbone": "cnn",
            "input_shape": [1, 4, 4],
            "n_classes": 3,
            "channels": [4],
            "kernel_sizes": [3],
        },
        "data": None,
        "images": True,
    },
    # TemperatureCalibration at the end of the fit: each rank reads its validation shard and
    # the NLL is summed over ranks, so both end on the same temperature.
    "calibrated": {
        "model": {},
        "data": {"val_size": 32},
        "calibrate": True,
    },
}


def as_images(X: np.ndarray) -> np.ndarray:
    """``(n, 1, 4, 4)`` images from the first four features of ``X``, each repeated 4 times."""
    return np.repeat(X[:, :4], 4, axis=1).reshape(-1, 1, 4, 4) * 10 + 50


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """Three imbalanced Gaussian blobs, float64: ``X (96, 5)``, ``y (96,)`` with 48/32/16."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [48, 32, 16])
    centers = rng.normal(scale=2.0, size=(3, N_FEATURES))
    X = centers[y] + rng.normal(size=(N_SAMPLES, N_FEATURES))
    order = rng.permutation(N_SAMPLES)
    return X[order], y[order]


class Recorder(Callback):
    """Records the weights of the first training step and the metrics of every epoch."""

    def __init__(self) -> None:
        self.init: dict[str, torch.Tensor] | None = None
        self.epoch_metrics: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.init is None:
            self.init = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_metrics.append(
            {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train_")}
        )


def model_class(shard_mean: bool) -> type[LVQMLN]:
    """``LVQMLN``, or (``shard_mean=True``) a single-process stand-in for a two-rank DDP step:
    the loss is the mean of the losses of the two shards ``batch[0::2]`` and ``batch[1::2]``,
    which is what DDP's gradient averaging computes when each rank normalises by its own
    (weighted) sample count."""
    if not shard_mean:
        return LVQMLN

    class ShardMeanLVQMLN(LVQMLN):
        def training_step(self, batch, batch_idx):
            halves = [tuple(t[r::2] for t in batch) for r in range(2)]
            losses = [super(ShardMeanLVQMLN, self).training_step(h, batch_idx) for h in halves]
            return 0.5 * (losses[0] + losses[1])

    return ShardMeanLVQMLN


def fit_case(
    name: str, devices: int, shard_mean: bool = False, data_dir: Path | None = None
) -> dict[str, Any]:
    """Fit case ``name`` on ``devices`` CPU processes (``strategy='ddp'`` when more than one),
    float64 throughout; a ``memmap`` case writes its ``.npy`` file into ``data_dir`` (every
    rank the same bytes, atomically).

    Returns:
        ``{"init", "final"}`` state dicts (CPU tensors) and ``"epoch_metrics"``.
    """
    spec = CASES[name]
    X, y = make_data()
    if spec.get("images"):
        X = as_images(X)
    model = model_class(shard_mean)(**COMMON, **spec["model"])
    recorder = Recorder()
    callbacks = [recorder, TemperatureCalibration()] if spec.get("calibrate") else [recorder]
    trainer = ddp_trainer(devices, EPOCHS, callbacks)
    if spec["data"] is None:
        dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
        # Under DDP, Lightning gives a training DataLoader a shuffled DistributedSampler.
        loader = DataLoader(dataset, batch_size=GLOBAL_BATCH // devices, shuffle=False)
        trainer.fit(model, train_dataloaders=loader)
    else:
        data = dict(spec["data"])
        if data.pop("memmap", False):
            path = atomic_write(Path(data_dir) / "X.npy", lambda tmp: np.save(tmp, X))
            X = np.load(path, mmap_mode="r")
        datamodule = ArrayDataModule(
            X, y, batch_size=GLOBAL_BATCH, shuffle=True, seed=5, dtype=torch.float64, **data
        )
        assert datamodule.memory_mapped == isinstance(X, np.memmap)
        trainer.fit(model, datamodule=datamodule)
    return {
        "init": {k: v.cpu() for k, v in recorder.init.items()},
        "final": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "epoch_metrics": recorder.epoch_metrics,
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # A different global RNG state per rank: anything that silently depended on it (instead of
    # the model's seeded generators and the rank-0 broadcast) would make the ranks disagree.
    torch.manual_seed(1000 + int(os.environ.get("LOCAL_RANK", 0)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.cases:
        result = fit_case(name, args.devices, data_dir=args.out_dir)
        torch.save(result, args.out_dir / f"{name}_rank{result['rank']}.pt")
    print(f"rank {os.environ.get('LOCAL_RANK', 0)} done", file=sys.stderr)


if __name__ == "__main__":
    main()
