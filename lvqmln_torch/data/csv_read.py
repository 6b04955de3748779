"""Reading CSV files at scale, without Lightning: [`read_csv_table`][lvqmln_torch.data.csv_read.read_csv_table] parses with pyarrow's
multithreaded columnar reader, and [`csv_to_npy`][lvqmln_torch.data.csv_read.csv_to_npy] converts a CSV file once to ``.npy`` files
for memory-mapped training ([`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] over paths).

pyarrow's result is taken when it is clean: every feature column parsed as numbers, none
missing or infinite, the target column complete. Anything else (a short row, a non-numeric or
missing value, a row of spaces, ``1_000``, a file that is not UTF-8) goes to the line-by-line
reader kept here, which either reads the file or raises the error that names the column and
the line: a file reads, or fails, as it always did, only faster."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.files import atomic_write

__all__ = ["csv_to_npy", "read_csv_table"]


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CSV file not found: {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    return path


def _check_header(header: list[str], path: Path) -> None:
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise ValueError(f"CSV file {str(path)!r} has duplicate column names: {duplicates}")


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and their line numbers in the file (blank lines skipped)."""
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
    _check_header(header, path)
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
    path = _check_file(path)
    fast = _read_arrow(path, target, features, delimiter, require_target)
    if fast is not None:
        return fast
    header, rows, lines = _read_rows(path, delimiter)
    names, has_target = _select_columns(header, target, features, path, require_target)
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


def _select_columns(
    header: list[str],
    target: str | None,
    features: Sequence[str] | None,
    path: Path,
    require_target: bool,
) -> tuple[list[str], bool]:
    """The feature columns' names and whether the target column is there."""
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
    return names, has_target


def _read_arrow(
    path: Path,
    target: str | None,
    features: Sequence[str] | None,
    delimiter: str,
    require_target: bool,
) -> tuple[np.ndarray, np.ndarray | None, list[str]] | None:
    """The table read by pyarrow (multithreaded), or ``None`` when it is not clean (see the
    module's docs): the line-by-line reader then reads the file or names the problem."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pa_csv
    except ImportError:  # a dependency; without it every file takes the line-by-line reader
        return None

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=True),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter),
            # Only an empty field is missing (pyarrow's default also takes "NA", "null", ...).
            convert_options=pa_csv.ConvertOptions(
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    header = [name.strip() for name in table.column_names]
    if table.num_rows == 0 or len(set(header)) < len(header):
        return None
    table = table.rename_columns(header)
    names, has_target = _select_columns(header, target, features, path, require_target)
    numeric = (pa.types.is_integer, pa.types.is_floating)
    columns = [table.column(name) for name in names]
    if any(not any(f(c.type) for f in numeric) or c.null_count for c in columns):
        return None
    X = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, column in enumerate(columns):
        X[:, j] = column.to_numpy()
    if not np.isfinite(X).all():
        return None
    if not has_target:
        return X, None, names
    labels = table.column(target)
    if labels.null_count:
        return None
    if pa.types.is_integer(labels.type):
        return X, labels.to_numpy().astype(np.int64), names
    if pa.types.is_floating(labels.type):
        return X, labels.to_numpy().astype(np.float64), names
    if not pa.types.is_string(labels.type):
        return None
    stripped = pc.utf8_trim_whitespace(labels)
    if pc.any(pc.equal(stripped, "")).as_py():
        return None
    return X, _parse_labels(stripped.to_pylist(), []), names


def csv_to_npy(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    target: str = "label",
    features: Sequence[str] | None = None,
    delimiter: str = ",",
    dtype: type | np.dtype = np.float32,
) -> tuple[Path, Path]:
    """Convert a CSV file once to ``X.npy`` (features) and ``y.npy`` (labels as read: integers,
    floats or strings) for memory-mapped training: ``ArrayDataModule(x_path, y_path,
    batch_size=...)`` then reads batches from the file instead of holding the data.

    The file is read as [`read_csv_table`][lvqmln_torch.data.csv_read.read_csv_table] reads it (the same errors), so the conversion
    needs the table in memory once. Each output is written to a temporary name and renamed:
    a failure leaves no partial file, and earlier outputs in ``out_dir`` untouched.

    Args:
        path: the CSV file (with a header row).
        out_dir: folder of ``X.npy`` and ``y.npy`` (created if missing).
        target: name of the label column.
        features: names of the feature columns; ``None`` uses every other column.
        delimiter: field separator.
        dtype: floating dtype of ``X.npy`` (float32 halves the file of float64).

    Returns:
        ``(x_path, y_path)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for everything [`read_csv_table`][lvqmln_torch.data.csv_read.read_csv_table] rejects, or a ``dtype`` that is not
            a floating type.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type (float32, float64), got {dtype}")
    X, y, _ = read_csv_table(path, target, features, delimiter)
    out = Path(out_dir)
    x_path, y_path = out / "X.npy", out / "y.npy"

    def write_x(tmp: str) -> None:
        np.save(tmp, X.astype(dtype, copy=False))
        atomic_write(y_path, lambda tmp_y: np.save(tmp_y, y))  # X replaced only after y

    atomic_write(x_path, write_x)
    return x_path, y_path
