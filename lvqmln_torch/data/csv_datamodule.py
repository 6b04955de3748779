"""CSV files in and out: a datamodule over a user's own CSV file, and a prediction writer
that stores labels and class probabilities as CSV (written atomically)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from ..core.files import atomic_write
from .csv_read import read_csv_table
from .datamodule import SourceDataModule

__all__ = [
    "CsvDataModule",
    "CsvPredictionWriter",
    "write_predictions_csv",
]


class CsvDataModule(SourceDataModule):
    """An [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] over a CSV file with a header row.

    Args:
        path: the training CSV file.
        target: name of the label column (labels may be integers or strings).
        features: names of the feature columns; ``None`` uses every other column.
        predict_path: a CSV file with the same feature columns (the target column may be
            absent) to predict on; default: the test split, else the whole file.
        delimiter: field separator.
        **kwargs: the split and batching arguments of
            [`SourceDataModule`][lvqmln_torch.data.datamodule.SourceDataModule] (``val_size``,
            ``test_size``, ``batch_size``, ``shuffle``, ``seed``, ``standardize``,
            ``on_device``).

    Raises:
        FileNotFoundError: if ``path`` or ``predict_path`` does not exist.
        ValueError: for an empty file, a missing target or feature column, or a non-numeric
            feature column (the message names it).
    """

    def __init__(
        self,
        path: str,
        target: str = "label",
        features: list[str] | None = None,
        predict_path: str | None = None,
        delimiter: str = ",",
        **kwargs: Any,
    ) -> None:
        X, y, names = read_csv_table(path, target, features, delimiter)
        X_predict = None
        if predict_path is not None:
            X_predict, _, _ = read_csv_table(
                predict_path, target, names, delimiter, require_target=False
            )
        super().__init__(X, y, X_predict=X_predict, **kwargs)
        self.path = str(path)
        self.target = target
        self.feature_names_ = names
        self.predict_path = predict_path


def write_predictions_csv(
    path: str | os.PathLike,
    labels: Sequence[Any] | np.ndarray,
    probabilities: np.ndarray | Tensor,
    classes: Sequence[Any] | np.ndarray,
    latent: np.ndarray | Tensor | None = None,
) -> Path:
    """Write predictions as CSV: a ``prediction`` column (original labels), one
    ``proba_<class>`` column per class, and optionally ``latent_<i>`` columns.

    Args:
        path: output file (written atomically; parent folders are created).
        labels: ``(n,)`` predicted labels (original label values).
        probabilities: ``(n, k)`` class probabilities, columns in ``classes`` order.
        classes: the ``k`` class labels.
        latent: optional ``(n, latent_dim)`` latent codes.

    Returns:
        The path written.
    """
    probabilities = np.asarray(torch.as_tensor(probabilities).detach().cpu().double())
    labels = np.asarray(labels)
    classes = [c.item() if isinstance(c, np.generic) else c for c in np.asarray(classes)]
    if probabilities.shape != (len(labels), len(classes)):
        raise ValueError(
            f"probabilities must have shape ({len(labels)}, {len(classes)}), "
            f"got {probabilities.shape}"
        )
    header = ["prediction"] + [f"proba_{c}" for c in classes]
    columns: list[np.ndarray] = [probabilities]
    if latent is not None:
        latent = np.asarray(torch.as_tensor(latent).detach().cpu().double())
        if latent.ndim != 2 or len(latent) != len(labels):
            raise ValueError(f"latent must have shape ({len(labels)}, d), got {latent.shape}")
        header += [f"latent_{i}" for i in range(latent.shape[1])]
        columns.append(latent)
    values = np.concatenate(columns, axis=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for label, row in zip(labels.tolist(), values.tolist()):
        writer.writerow([label, *(repr(v) for v in row)])
    text = buffer.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            handle.write(text)

    return atomic_write(path, write)


class CsvPredictionWriter(Callback):
    """Collect the predictions of ``Trainer.predict`` and write them to one CSV file at the
    end (see [`write_predictions_csv`][lvqmln_torch.data.csv_datamodule.write_predictions_csv]); on the global-zero rank only.

    Args:
        path: output CSV file.
        latent: also write the latent codes.
    """

    def __init__(self, path: str | os.PathLike = "predictions.csv", latent: bool = False) -> None:
        self.path = Path(path)
        self.latent = latent
        self._batches: list[dict[str, Tensor]] = []
        self.written: Path | None = None

    @override
    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = []
        self.written = None

    @override
    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        prediction = outputs
        if not isinstance(prediction, dict) or not {"labels", "probabilities"} <= set(prediction):
            raise TypeError(
                "CsvPredictionWriter needs predict_step to return a dict with 'labels' and "
                f"'probabilities' (as LVQMLN does), got {type(prediction).__name__}"
            )
        keep = ("labels", "probabilities", "latent") if self.latent else ("labels", "probabilities")
        self._batches.append({k: prediction[k].detach().cpu() for k in keep})

    @override
    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self._batches:
            return
        indices = torch.cat([b["labels"] for b in self._batches]).numpy()
        classes = np.asarray(pl_module.classes_)
        self.written = write_predictions_csv(
            self.path,
            classes[indices],
            torch.cat([b["probabilities"] for b in self._batches]),
            classes,
            torch.cat([b["latent"] for b in self._batches]) if self.latent else None,
        )
        self._batches = []
