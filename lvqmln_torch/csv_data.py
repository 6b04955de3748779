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

from ._files import atomic_write
from .data import ArrayDataModule

__all__ = ["CsvDataModule", "CsvPredictionWriter", "read_csv_table", "write_predictions_csv"]


def _read_rows(
    path: str | os.PathLike, delimiter: str
) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and their line numbers in the file (blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CSV file not found: {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                if row and any(field.strip() for field in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{str(path)!r} is not a readable UTF-8 CSV file: {err}") from err
    if not rows:
        raise ValueError(f"CSV file {str(path)!r} is empty (it needs a header row and data rows)")
    header = [name.strip() for name in rows[0]]
    data, lines = rows[1:], lines[1:]
    if not data:
        raise ValueError(f"CSV file {str(path)!r} has a header but no data rows")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValueError(f"CSV file {str(path)!r} has duplicate column names: {duplicates}")
    for line, row in zip(lines, data):
        if len(row) != len(header):
            raise ValueError(
                f"CSV file {str(path)!r}, line {line}: {len(row)} fields but the header has "
                f"{len(header)} columns"
            )
    return header, data, lines


def _numeric_column(
    values: list[str], name: str, path: str | os.PathLike, lines: list[int]
) -> np.ndarray:
    """A column of numeric strings as float64; missing or non-finite values are an error."""
    column = np.asarray([float(v) if v.strip() else np.nan for v in values], dtype=np.float64)
    if not np.all(np.isfinite(column)):
        bad = int(np.flatnonzero(~np.isfinite(column))[0])
        raise ValueError(
            f"column {name!r} of {str(path)!r} has a missing or non-finite value "
            f"(line {lines[bad]}: {values[bad]!r}); clean or impute it first"
        )
    return column


def _is_number_or_missing(value: str) -> bool:
    if not value.strip():
        return True  # a missing value: reported as such by _numeric_column
    try:
        float(value)
    except ValueError:
        return False
    return True


def _parse_labels(values: list[str], lines: list[int]) -> np.ndarray:
    """Labels as integers if they all are integers, else as floats if all numeric, else strings."""
    stripped = [v.strip() for v in values]
    if any(v == "" for v in stripped):
        line = lines[stripped.index("")]
        raise ValueError(f"the target column has an empty value (line {line})")
    for cast, dtype in ((int, np.int64), (float, np.float64)):
        try:
            return np.asarray([cast(v) for v in stripped], dtype=dtype)
        except ValueError:
            continue
    return np.asarray(stripped)


def read_csv_table(
    path: str | os.PathLike,
    target: str | None = "label",
    features: Sequence[str] | None = None,
    delimiter: str = ",",
    require_target: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read numeric features and (optionally) labels from a CSV file with a header row.

    Args:
        path: the CSV file.
        target: name of the label column.
        features: names of the feature columns; ``None`` means every column but ``target``.
        delimiter: field separator.
        require_target: raise if the target column is missing (else labels are ``None``).

    Returns:
        ``(X, y, feature_names)``: ``X`` of shape ``(n, d)`` as float64, ``y`` of shape
        ``(n,)`` (ints, floats or strings) or ``None``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for an empty file, a missing column, a non-numeric or incomplete feature
            column (named), or rows of the wrong length.
    """
    header, rows, lines = _read_rows(path, delimiter)
    has_target = target is not None and target in header
    if require_target and not has_target:
        raise ValueError(
            f"target column {target!r} not found in {str(path)!r}; its columns are {header}"
        )
    if features is None:
        names = [name for name in header if name != target]
    else:
        names = list(features)
        missing = [name for name in names if name not in header]
        if missing:
            raise ValueError(
                f"feature columns {missing} not found in {str(path)!r}; its columns are {header}"
            )
        if target in names:
            raise ValueError(f"the target column {target!r} cannot also be a feature")
    if not names:
        raise ValueError(f"{str(path)!r} has no feature columns besides the target {target!r}")
    columns = {name: list(values) for name, values in zip(header, zip(*rows))}
    non_numeric = {}
    for name in names:
        bad = next((i for i, v in enumerate(columns[name]) if not _is_number_or_missing(v)), None)
        if bad is not None:
            non_numeric[name] = f"line {lines[bad]}: {columns[name][bad]!r}"
    if non_numeric:
        details = "; ".join(f"{name!r} ({where})" for name, where in non_numeric.items())
        raise ValueError(
            f"non-numeric feature columns in {str(path)!r}: {details}. Leave them out with "
            "`features`, or encode them as numbers first"
        )
    X = np.stack([_numeric_column(columns[name], name, path, lines) for name in names], axis=1)
    y = _parse_labels(columns[target], lines) if has_target else None
    return X, y, names


class CsvDataModule(ArrayDataModule):
    """An :class:`~lvqmln_torch.data.ArrayDataModule` over a CSV file with a header row.

    Args:
        path: the training CSV file.
        target: name of the label column (labels may be integers or strings).
        features: names of the feature columns; ``None`` uses every other column.
        val_size: held-out validation fraction or count (stratified).
        test_size: held-out test fraction or count (stratified); ``None`` trains on every row.
        batch_size: mini-batch size, ``None`` for full batch.
        shuffle: reshuffle the training batches every epoch.
        seed: seed of the splits and the shuffling.
        standardize: z-score the features with training-split statistics.
        on_device: keep the data on the training device.
        predict_path: a CSV file with the same feature columns (the target column may be
            absent) to predict on; default: the test split, else the whole file.
        delimiter: field separator.

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
        val_size: float | int | None = None,
        test_size: float | int | None = 0.2,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        standardize: bool = True,
        on_device: bool = True,
        predict_path: str | None = None,
        delimiter: str = ",",
    ) -> None:
        X, y, names = read_csv_table(path, target, features, delimiter)
        X_predict = None
        if predict_path is not None:
            X_predict, _, _ = read_csv_table(
                predict_path, target, names, delimiter, require_target=False
            )
        super().__init__(
            X,
            y,
            val_size=val_size,
            test_size=test_size,
            X_predict=X_predict,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            standardize=standardize,
            on_device=on_device,
        )
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
    end (see :func:`write_predictions_csv`); on the global-zero rank only.

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
