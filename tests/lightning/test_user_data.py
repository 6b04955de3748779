"""A user's own data, as a Lightning user brings it: endless streams, map-style data sets far
larger than the initialisation sample, DataModules that only say how many classes there are,
and DataModules with hyperparameters of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from _trainers import quiet_trainer
from lightning.pytorch import LightningDataModule
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin


class EndlessBlobs(IterableDataset):
    """Three Gaussian blobs in 5-D, sampled forever."""

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        centres = torch.eye(3, 5) * 4
        while True:
            y = int(torch.randint(3, (), generator=generator))
            yield centres[y] + torch.randn(5, generator=generator), y


class CountingBlobs(Dataset):
    """``n`` samples made on the fly; counts every read."""

    def __init__(self, n: int, shape: tuple[int, ...] = (5,)) -> None:
        self.n, self.shape, self.reads = n, shape, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.reads += 1
        y = i % 3
        x = torch.full(self.shape, float(y)) + torch.randn(self.shape) * 0.1
        return x, y


class StreamDataModule(LightningDataModule):
    """A user's datamodule that only knows its number of classes (and has its own seed)."""

    def __init__(self, dataset, n_classes: int = 3, batch_size: int = 32, seed: int = 7) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["dataset"])
        self.dataset, self.n_classes = dataset, n_classes

    def train_dataloader(self) -> DataLoader:
        shuffle = not isinstance(self.dataset, IterableDataset)
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, shuffle=shuffle)


def test_an_endless_stream_trains_to_max_steps_with_sizes_from_its_first_batch():
    model = LVQMLN(latent_dim=3, lr=0.05, init_sample_size=256)
    trainer = quiet_trainer(max_steps=20)
    trainer.fit(model, StreamDataModule(EndlessBlobs()))
    assert trainer.global_step == 20
    assert model.hparams.in_features == 5 and model.hparams.n_classes == 3
    assert torch.isfinite(model.prototypes).all()


def test_the_initialisation_reads_no_more_than_its_bound_whatever_the_data_size():
    reads = []
    for n in (10_000, 1_000_000):
        data = CountingBlobs(n)
        model = LVQMLN(n_classes=3, init_sample_size=200)
        quiet_trainer(max_steps=2).fit(model, StreamDataModule(data, batch_size=50))
        reads.append(data.reads)
    # the first batch for the sizes, 200 samples for the prototypes, 2 steps and one batch
    # that Lightning fetches ahead: the same for both sizes
    assert reads[0] == reads[1] <= 50 + 200 + 3 * 50


def test_images_from_a_plain_datamodule_size_a_cnn_from_the_first_batch():
    model = LVQMLN(backbone="cnn", latent_dim=4, channels=[4], kernel_sizes=[3])
    quiet_trainer(max_steps=3).fit(model, StreamDataModule(CountingBlobs(300, (1, 6, 6))))
    assert model.hparams.input_shape == [1, 6, 6]
    assert model.input_shape == (1, 6, 6)


def test_a_datamodule_with_its_own_seed_trains_and_both_seeds_are_logged(tmp_path):
    model = LVQMLN(seed=3)
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(max_epochs=1, logger=logger)
    trainer.fit(model, StreamDataModule(CountingBlobs(200), seed=7))
    logged = yaml.safe_load((tmp_path / "run" / "version_0" / "hparams.yaml").read_text())
    assert logged["seed"] == 3 and logged["datamodule.seed"] == 7
    assert logged["batch_size"] == 32 and logged["lr"] == model.hparams.lr
    # a later fit without a clash logs through Lightning again
    trainer = quiet_trainer(max_epochs=1, logger=CSVLogger(tmp_path, name="again"))
    trainer.fit(model, StreamDataModule(CountingBlobs(200), seed=3))
    assert model._log_hyperparams


def test_array_datamodule_initialises_from_a_bounded_seeded_sample():
    X, y = load_builtin("digits")
    dm = ArrayDataModule(X, y)
    x_all, y_all = dm.train_tensors()[:2]
    x_small, y_small = dm.init_sample(len(y), seed=0)  # no larger than the bound: everything
    assert x_small is x_all and y_small is y_all
    x_a, y_a = dm.init_sample(500, seed=1)
    x_b, _ = dm.init_sample(500, seed=1)
    assert len(y_a) == 500 and torch.equal(x_a, x_b)
    rows = {tuple(r) for r in x_all.numpy().round(5)}
    assert all(tuple(r) in rows for r in x_a.numpy().round(5))
    assert not torch.equal(x_a, dm.init_sample(500, seed=2)[0])


@pytest.mark.parametrize(
    ("kwargs", "shape"),
    [
        ({"in_features": 300}, (2_000, 300)),  # about 870 samples per chunk: 3 chunks
        (
            {"backbone": "cnn", "input_shape": (1, 28, 28), "channels": [4], "kernel_sizes": [3]},
            (700, 1, 28, 28),
        ),
    ],
)
def test_latent_codes_in_chunks_are_the_backbones_codes_of_the_whole_sample(kwargs, shape):
    # The initialisation's forward pass goes about a MB of inputs at a time; every sample's
    # code is the one a single pass gives (to float rounding: the chunks' shapes differ).
    model = LVQMLN(n_classes=3, latent_dim=4, **kwargs).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.latent_in_chunks(x), model.backbone(x))


def test_the_bound_changes_nothing_for_data_smaller_than_it():
    X, y = load_builtin("iris")
    trained = []
    for bound in (150, 20_000):
        model = LVQMLN(init_sample_size=bound)
        quiet_trainer(max_epochs=2).fit(model, ArrayDataModule(X, y, batch_size=32))
        trained.append(model.prototypes.detach().clone())
    assert torch.equal(*trained)


@pytest.mark.parametrize("bound", [30, 90])
def test_a_smaller_bound_still_initialises_every_class_from_shuffled_batches(bound):
    X, y = load_builtin("iris")
    data = torch.utils.data.TensorDataset(
        torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32), torch.tensor(y)
    )
    loader = DataLoader(
        data, batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    model = LVQMLN(in_features=4, n_classes=3, init_sample_size=bound)
    quiet_trainer(max_epochs=1).fit(model, loader)
    assert np.array_equal(model.prototype_labels.numpy(), [0, 1, 2])
