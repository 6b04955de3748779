"""Two-process CPU DDP runs of :class:`~lvqmln_torch.lightning.callbacks.PrototypeProjection`, launched
by ``tests/lightning/test_projection_ddp.py`` as a subprocess (DDP cannot run under pytest).

Usage::

    python tests/ddp_projection_script.py OUT_DIR [--devices 2]

Each rank writes ``OUT_DIR/<case>_rank<r>.pt`` with its final state, ``prototype_sources``
and, per projection, the brute-force nearest same-class sample of every prototype over the
whole training set (computed on the rank from the full data, just before the projection).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _ddp import ddp_trainer
from lightning.pytorch import Callback
from torch.utils.data import DataLoader, TensorDataset

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.lightning.callbacks import PrototypeProjection

N_SAMPLES, N_FEATURES, GLOBAL_BATCH, EPOCHS = 90, 4, 18, 4
CASES = ("datamodule", "loader")


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs, float64 (an odd sample count: the ranks' shares differ)."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, N_SAMPLES)
    X = rng.normal(scale=2.0, size=(3, N_FEATURES))[y] + rng.normal(size=(N_SAMPLES, N_FEATURES))
    return X, y


class BruteForce(Callback):
    """Before each projection (the callback runs after this one), the nearest same-class
    training row of every prototype, from all the data."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X, self.y, self.expected = X, y, []

    def _record(self, module: LVQMLN) -> None:
        with torch.no_grad():
            z = module.backbone(torch.as_tensor(self.X).to(module.prototypes)).double()
            d = torch.cdist(z, module.prototypes.double()).square().numpy()
        d[self.y[:, None] != module.prototype_labels.numpy()[None, :]] = np.inf
        self.expected.append(torch.as_tensor(d.argmin(0)))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(pl_module)


def fit_case(name: str, devices: int) -> dict[str, Any]:
    X, y = make_data()
    brute = BruteForce(X, y)
    model = LVQMLN(
        in_features=N_FEATURES, n_classes=3, n_prototypes_per_class=2, latent_dim=3, seed=3
    )
    trainer = ddp_trainer(devices, EPOCHS, [brute, PrototypeProjection(every_n_epochs=1)])
    if name == "loader":
        dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
        trainer.fit(
            model, train_dataloaders=DataLoader(dataset, batch_size=GLOBAL_BATCH // devices)
        )
    else:
        data = ArrayDataModule(X, y, batch_size=GLOBAL_BATCH, seed=5, dtype=torch.float64)
        trainer.fit(model, datamodule=data)
    return {
        "final": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "sources": model.prototype_sources,
        "expected": brute.expected,
        "rank": trainer.global_rank,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1000 + int(os.environ.get("LOCAL_RANK", 0)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        result = fit_case(name, args.devices)
        torch.save(result, args.out_dir / f"{name}_rank{result['rank']}.pt")


if __name__ == "__main__":
    main()
