"""LitData streaming (the ``stream`` extra): a data set optimised locally with
``litdata.optimize`` trains LVQMLN through ``StreamingDataset`` / ``StreamingDataLoader`` in a
plain ``LightningDataModule``, as docs/large-data.md shows (there with an object-storage
URL). Skipped without litdata."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from _trainers import quiet_trainer

from lvqmln_torch import LVQMLN

ld = pytest.importorskip("litdata")

N, D, K = 480, 6, 3
RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, K, N)
FEATURES = RNG.normal(size=(N, D)) + 3.0 * LABELS[:, None]
FEATURES = ((FEATURES - FEATURES.mean(0)) / FEATURES.std(0)).astype(np.float32)  # standardised


def sample(i: int) -> dict[str, object]:
    """One sample as LitData stores it: a dict of an array and an integer."""
    return {"x": FEATURES[i], "y": int(LABELS[i])}


class StreamingData(L.LightningDataModule):
    """Batches ``{"x": (b, D), "y": (b,)}`` streamed from an optimised data set (a local
    folder here; an ``s3://`` / ``gs://`` URL in production)."""

    def __init__(self, input_dir: str, batch_size: int = 32) -> None:
        super().__init__()
        self.input_dir, self.batch_size = input_dir, batch_size

    def train_dataloader(self):
        dataset = ld.StreamingDataset(self.input_dir, shuffle=True, seed=1)
        return ld.StreamingDataLoader(dataset, batch_size=self.batch_size)


@pytest.fixture(scope="module")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("optimized")
    ld.optimize(
        fn=sample, inputs=list(range(N)), output_dir=str(out), chunk_size=100, num_workers=1
    )
    assert len(list(out.glob("*.bin"))) > 1, "several chunks, as a large data set has"
    return out


def test_lvqmln_trains_on_a_streaming_dataset(optimized):
    model = LVQMLN(in_features=D, n_classes=K, hidden_sizes=[32], latent_dim=4, lr=0.05, seed=0)
    trainer = quiet_trainer(max_steps=150)
    trainer.fit(model, StreamingData(str(optimized)))
    assert trainer.global_step == 150
    accuracy = (model.predict(torch.as_tensor(FEATURES)) == LABELS).mean()
    assert accuracy >= 0.9
