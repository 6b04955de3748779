"""Memory-mapped inputs (``np.memmap``, ``np.load(..., mmap_mode="r")``, ``.npy`` paths) in
``ArrayData`` / ``ArrayDataModule``: the same splits, statistics, batches and initialisation
sample as the in-memory path, read per step, and never materialised (a subprocess measures its
anonymous memory). Bad files are in tests/data/test_data_bad_inputs.py; DDP in
tests/lightning/test_ddp.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _paths import TESTS
from _trainers import quiet_trainer

from lvqmln_torch import LVQMLN, ArrayData, ArrayDataModule, LVQMLNClassifier, mapped
from lvqmln_torch.data.batches import MappedBatches

N, D = 300, 5
SCRIPT = TESTS / "mapped_memory_script.py"


def blobs(n: int = N, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three blobs; column 0 holds the row number, so a batch tells which rows it read."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, d)) + 3.0 * y[:, None]).astype(np.float32)
    X[:, 0] = np.arange(n)
    return X, y


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    X, y = blobs()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "X.npy", tmp_path / "y.npy", X, y


def by_row(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A batch in ascending row order (the order a memory-mapped batch is read in)."""
    order = batch[0][:, 0].argsort()
    return tuple(t[order] for t in batch)


@pytest.mark.parametrize("source", ["path", "np.load", "np.memmap"])
def test_every_form_stays_on_disk(files, source):
    x_path, y_path, X, y = files
    inputs = {
        "path": str(x_path),
        "np.load": np.load(x_path, mmap_mode="r"),
        "np.memmap": np.memmap(x_path, np.float32, "r", offset=128, shape=X.shape),
    }[source]
    data = ArrayData(inputs, y_path, batch_size=16)
    assert data.memory_mapped and isinstance(data.loader("train"), MappedBatches)
    assert torch.equal(data.train_tensors()[0], torch.as_tensor(X))
    assert mapped.is_memory_mapped(np.load(x_path, mmap_mode="r")[10:20])
    assert not mapped.is_memory_mapped(np.load(x_path))


def test_memory_mapped_validation_and_predict_files_next_to_in_memory_training(files):
    x_path, y_path, X, y = files
    data = ArrayData(X, y, X_val=x_path, y_val=y_path, X_predict=x_path, batch_size=64)
    assert not data.memory_mapped  # the training inputs are in memory
    assert isinstance(data.loader("val"), MappedBatches)
    predicted = torch.cat([batch[0] for batch in data.loader("predict")])
    assert torch.equal(predicted, torch.as_tensor(X))


@pytest.mark.parametrize("dtype", [">f4", "<f8", "int16", "uint16"])
def test_file_dtypes_and_byte_orders(tmp_path, dtype):
    X, y = blobs()
    np.save(tmp_path / "X.npy", X.astype(dtype))
    data = ArrayData(tmp_path / "X.npy", y, batch_size=64, standardize=True)
    memory = ArrayData(X.astype(dtype).astype(np.float64), y, batch_size=64, standardize=True)
    batch, reference = next(iter(data.loader("train"))), next(iter(memory.loader("train")))
    assert batch[0].dtype == torch.float32
    torch.testing.assert_close(batch[0], reference[0], rtol=1e-5, atol=1e-5)


def test_full_batch_loads_the_file_into_memory(files):
    x_path, y_path, X, _ = files
    data = ArrayData(x_path, y_path)  # batch_size=None: every step needs every row
    assert not data.memory_mapped
    assert torch.equal(data.train_tensors()[0], torch.as_tensor(X))


def test_same_splits_statistics_batches_and_sample_as_in_memory(files):
    x_path, y_path, X, y = files
    kwargs = dict(batch_size=32, val_size=0.2, test_size=0.1, standardize=True, seed=4)
    disk, memory = ArrayData(x_path, y_path, **kwargs), ArrayData(X, y, **kwargs)
    np.testing.assert_array_equal(disk.classes_, memory.classes_)
    np.testing.assert_allclose(disk.mean_, memory.mean_, rtol=1e-5)
    np.testing.assert_allclose(disk.scale_, memory.scale_, rtol=1e-5)
    for name in ("train", "val", "test", "predict"):
        a = disk.loader(name, shuffle=name == "train")
        b = memory.loader(name, shuffle=name == "train")
        assert len(a) == len(b)
        for epoch in range(2):  # reshuffled per epoch, identically
            a.epoch_fn = b.epoch_fn = lambda epoch=epoch: epoch
            for batch_a, batch_b in zip(a, b, strict=True):
                for t_a, t_b in zip(batch_a, by_row(batch_b), strict=True):
                    torch.testing.assert_close(t_a, t_b, rtol=1e-5, atol=1e-5)
    for bound in (40, 10_000):  # a seeded subset; the whole split in order
        for t_a, t_b in zip(disk.init_sample(bound, 7), memory.init_sample(bound, 7), strict=True):
            torch.testing.assert_close(t_a, t_b, rtol=1e-5, atol=1e-5)


def test_ddp_shards_are_the_single_process_batches(files):
    x_path, y_path, _, _ = files
    data = ArrayData(x_path, y_path, batch_size=24)
    single = data.loader("train", shuffle=True, epoch_fn=lambda: 1)
    shards = [
        data.loader("train", shuffle=True, epoch_fn=lambda: 1, rank=r, world_size=2)
        for r in range(2)
    ]
    for whole, *parts in zip(single, *shards, strict=True):
        rows = torch.cat([p[0][:, 0] for p in parts])
        assert not set(parts[0][0][:, 0].tolist()) & set(parts[1][0][:, 0].tolist())
        assert sorted(rows.tolist()) == whole[0][:, 0].tolist()


def test_integer_images_standardised_per_channel(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (60, 2, 4, 4), dtype=np.uint8)
    images[:, 1] //= 4
    labels = np.repeat([0, 1], 30)
    np.save(tmp_path / "images.npy", images)
    dm = ArrayDataModule(tmp_path / "images.npy", labels, batch_size=16, standardize=True)
    memory = ArrayData(images, labels, batch_size=16, standardize=True)
    assert dm.memory_mapped and dm.input_shape == (2, 4, 4) and dm.mean_.shape == (2, 1, 1)
    np.testing.assert_allclose(dm.mean_, memory.mean_, rtol=1e-6)
    np.testing.assert_allclose(dm.scale_, memory.scale_, rtol=1e-6)
    model = LVQMLN(backbone="cnn", channels=[2], kernel_sizes=[3], latent_dim=2, seed=0)
    quiet_trainer(max_steps=5).fit(model, dm)
    assert model.predict(images[:4].astype(np.float32)).shape == (4,)


def test_chunked_scan_matches_numpy(monkeypatch, files):
    x_path, _, X, _ = files
    monkeypatch.setattr(mapped, "CHUNK_BYTES", 7 * D * 4)  # 7 rows a chunk: 43 chunks
    rows = mapped.MappedRows(np.load(x_path, mmap_mode="r"))
    mean, std = mapped.scan(rows, statistics_of=np.arange(5, N, 3))
    np.testing.assert_allclose(mean, X[5::3].astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, X[5::3].astype(np.float64).std(0), rtol=1e-12)


def test_nan_is_found_in_a_later_chunk_and_named(monkeypatch, tmp_path):
    X, y = blobs()
    X[251, 3] = np.nan
    np.save(tmp_path / "X.npy", X)
    monkeypatch.setattr(mapped, "CHUNK_BYTES", 64 * D * 4)
    with pytest.raises(
        ValueError, match=r"X \(.*X.npy\) contains NaN or Inf values \(first in row 251\)"
    ):
        ArrayData(tmp_path / "X.npy", y, batch_size=8, val_size=0.5)


def test_lightning_fit_and_estimator_on_memory_mapped_data(files):
    x_path, y_path, X, y = files
    dm = ArrayDataModule(x_path, y_path, batch_size=32, standardize=True, test_size=0.2)
    model = LVQMLN(lr=0.05, seed=0)
    quiet_trainer(max_epochs=4).fit(model, dm)
    assert quiet_trainer().test(model, dm, verbose=False)[0]["test_acc"] >= 0.9
    assert set(dm.state_dict()) == {"mean", "scale"}
    # The estimator reads a memory-mapped X per batch too: the losses of the in-memory fit (up to
    # float32 rounding: a batch is summed in row order).
    disk, memory = (
        LVQMLNClassifier(batch_size=32, max_iter=5, random_seed=0).fit(inputs, y)
        for inputs in (np.load(x_path, mmap_mode="r"), X)
    )
    np.testing.assert_allclose(disk.loss_history_, memory.loss_history_, rtol=5e-3)


def test_a_memory_mapped_file_is_never_materialised(tmp_path):
    """Data module, initialisation sample and 30 training steps over a 266 MB file grow the
    process's anonymous memory by well under the file's size (materialising it would add at
    least the file's size, twice that when standardised in float64)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LIGHTNING_DISABLE_TIPS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["memory_mapped"] and result["steps"] == 30
    limit = 0.3 * result["file_bytes"]
    for key in ("data_growth", "sample_growth", "fit_growth"):
        assert result[key] < limit, (key, result)
