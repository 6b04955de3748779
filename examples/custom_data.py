"""A user's own DataModule and backbone, trained by ``lvqmln fit`` through their import paths:

    lvqmln fit --config configs/custom_datamodule.yaml

Nothing here is lvqmln-specific except the ``n_classes`` attribute, which tells the model how
many classes there are (the input size is read from the first training batch).
"""

from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_wine
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class WineDataModule(L.LightningDataModule):
    """scikit-learn's wine data (13 features, 3 classes), standardised with the training split's
    statistics.

    Args:
        batch_size: mini-batch size.
        test_fraction: share of the samples held out for validation and testing.
        seed: seed of the split and the shuffling (the datamodule's own hyperparameter).
    """

    def __init__(self, batch_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n_classes = 3

    def setup(self, stage: str) -> None:
        X, y = load_wine(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X,
            y,
            test_size=self.hparams.test_fraction,
            random_state=self.hparams.seed,
            stratify=y,
        )
        mean, std = X_train.mean(0), X_train.std(0)

        def dataset(x, labels) -> TensorDataset:
            x = torch.tensor((x - mean) / std, dtype=torch.float32)
            return TensorDataset(x, torch.tensor(labels))

        self.train_set, self.test_set = dataset(X_train, y_train), dataset(X_test, y_test)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(
            self.train_set, batch_size=self.hparams.batch_size, shuffle=True, generator=generator
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=len(self.test_set))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=len(self.test_set))


class TanhMLP(nn.Module):
    """A small tanh MLP mapping ``(n, in_features)`` inputs to ``(n, latent_dim)`` codes.

    Args:
        in_features: input dimension.
        hidden: hidden layer width.
        latent_dim: latent dimension (the model's ``latent_dim`` must match it).
    """

    def __init__(self, in_features: int = 13, hidden: int = 32, latent_dim: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, latent_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
