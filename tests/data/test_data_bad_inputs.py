"""The bad-input catalogue of SPEC §3 for the DataModules (ArrayDataModule, BuiltinDataModule,
CsvDataModule) and memory-mapped ``.npy`` files. The harness, its fixtures and the shared data are
in ``tests/_bad_inputs.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _bad_inputs import IMAGE_LABELS, IMAGES, Ctx, X, Y, cases, check, fit_module, with_value

from lvqmln_torch import LVQMLN, ArrayDataModule, BuiltinDataModule
from lvqmln_torch.data.csv_datamodule import CsvDataModule


# --------------------------------------------------------------------------- X rank
@cases(
    (
        "array-datamodule-3d",
        lambda c: ArrayDataModule(X[:, :, None], Y),
        ValueError,
        r"X must be 2-D \(n_samples, n_features\) for an MLP or 4-D \(n, C, H, W\) .*"
        r"got shape \(150, 4, 1\)",
    ),
    (
        "array-datamodule-1d",
        lambda c: ArrayDataModule(X[:, 0], Y),
        ValueError,
        r"X must be 2-D .* got shape \(150,\)",
    ),
    (
        "builtin-datamodule-images-of-flat-data",
        lambda c: BuiltinDataModule("iris", as_images=True),
        ValueError,
        r"as_images is only available for 'digits', not 'iris'",
    ),
    (
        "builtin-datamodule-cnn-on-flat",
        lambda c: fit_module(LVQMLN(backbone="cnn"), BuiltinDataModule("iris")),
        ValueError,
        r"needs \(n, C, H, W\) image inputs",
    ),
)
def test_x_not_2d_or_4d(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- lengths
@cases(
    (
        "array-datamodule",
        lambda c: ArrayDataModule(X, Y[:-1]),
        ValueError,
        r"X has 150 samples but its labels have 149",
    ),
    (
        "array-datamodule-validation",
        lambda c: ArrayDataModule(X, Y, X_val=X[:10], y_val=Y[:9]),
        ValueError,
        r"X_val has 10 samples but its labels have 9",
    ),
    (
        "array-datamodule-sample-weight",
        lambda c: ArrayDataModule(X, Y, sample_weight=np.ones(149)),
        ValueError,
        r"sample_weight must have shape \(150,\), got \(149,\)",
    ),
    (
        "csv-datamodule-short-row",
        lambda c: CsvDataModule(c.csv("a,b,label\n1,2,x\n3,y\n4,5,y\n")),
        ValueError,
        r"line 3: 2 fields but the header has 3 columns",
    ),
)
def test_x_y_lengths_differ(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- NaN / Inf
@cases(
    (
        "array-datamodule-nan",
        lambda c: ArrayDataModule(with_value(np.nan), Y),
        ValueError,
        r"X contains NaN or Inf values",
    ),
    (
        "array-datamodule-inf",
        lambda c: ArrayDataModule(with_value(-np.inf), Y),
        ValueError,
        r"X contains NaN or Inf values",
    ),
    (
        "array-datamodule-predict-nan",
        lambda c: ArrayDataModule(X, Y, X_predict=with_value(np.nan)),
        ValueError,
        r"X_predict contains NaN or Inf values",
    ),
    (
        "csv-datamodule-missing",
        lambda c: CsvDataModule(c.csv("a,b,label\n1,2,x\n,3,y\n4,5,x\n")),
        ValueError,
        r"column 'a' .* has a missing or non-finite value \(line 3: ''\)",
    ),
    (
        "csv-datamodule-inf",
        lambda c: CsvDataModule(c.csv("a,b,label\n1,inf,x\n2,3,y\n4,5,x\n")),
        ValueError,
        r"column 'b' .* has a missing or non-finite value \(line 2: 'inf'\)",
    ),
)
def test_nan_or_inf_in_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- classes
@cases(
    (
        "array-datamodule",
        lambda c: ArrayDataModule(X[:50], Y[:50]),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
    (
        "csv-datamodule",
        lambda c: CsvDataModule(c.csv("a,b,label\n1,2,x\n2,3,x\n4,5,x\n")),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
)
def test_fewer_than_two_classes(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- empty X
@cases(
    (
        "array-datamodule",
        lambda c: ArrayDataModule(X[:0], Y[:0]),
        ValueError,
        r"X is empty \(0 samples\)",
    ),
    (
        "array-datamodule-no-features",
        lambda c: ArrayDataModule(X[:, :0], Y),
        ValueError,
        r"X has no features \(shape \(150, 0\)\)",
    ),
    (
        "csv-datamodule-empty-file",
        lambda c: CsvDataModule(c.csv("")),
        ValueError,
        r"CSV file .* is empty",
    ),
    (
        "csv-datamodule-header-only",
        lambda c: CsvDataModule(c.csv("a,b,label\n")),
        ValueError,
        r"has a header but no data rows",
    ),
)
def test_empty_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- unknown names
@cases(
    (
        "builtin-datamodule",
        lambda c: BuiltinDataModule("mnist"),
        ValueError,
        r"Unknown dataset 'mnist'. Valid datasets: iris, wine, breast_cancer, digits",
    ),
)
def test_unknown_backbone_and_dataset(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- predict shape
@cases(
    (
        "array-datamodule-predict",
        lambda c: ArrayDataModule(X, Y, X_predict=X[:, :3]),
        ValueError,
        r"X_predict has per-sample shape \(3,\) but the training data have \(4,\)",
    ),
    (
        "array-datamodule-test-images",
        lambda c: ArrayDataModule(
            IMAGES, IMAGE_LABELS, X_test=IMAGES[:, :, :7], y_test=IMAGE_LABELS
        ),
        ValueError,
        r"X_test has per-sample shape \(1, 7, 8\) but the training data have \(1, 8, 8\)",
    ),
    (
        "csv-datamodule-predict-file",
        lambda c: CsvDataModule(
            c.csv("a,b,c,label\n1,2,3,x\n2,3,4,y\n4,5,6,x\n5,6,7,y\n"),
            predict_path=c.csv("a,b\n1,2\n", name="predict.csv"),
        ),
        ValueError,
        r"feature columns \['c'\] not found",
    ),
)
def test_wrong_feature_count_or_image_shape_at_predict(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- memory-mapped files
def _npz(c: Ctx) -> Path:
    np.savez(c.tmp_path / "X.npz", X=X)
    return c.tmp_path / "X.npz"


def _memmap_with_nan(c: Ctx) -> np.memmap:
    path = c.npy(np.where(np.arange(150)[:, None] == 97, np.nan, X).astype(np.float32))
    return np.load(path, mmap_mode="r")


@cases(
    (
        "not-npy",
        lambda c: ArrayDataModule(c.csv("a,label\n1,0\n"), Y, batch_size=8),
        ValueError,
        r"X must be an array or the path of a .npy file \(np.save\), got '.*data.csv'; convert a CSV",
    ),
    (
        "npz-archive",
        lambda c: ArrayDataModule(_npz(c), Y, batch_size=8),
        ValueError,
        r"X must be an array or the path of a .npy file",
    ),
    (
        "missing-file",
        lambda c: ArrayDataModule(c.tmp_path / "nope.npy", Y, batch_size=8),
        FileNotFoundError,
        r"X: file not found: '.*nope.npy'",
    ),
    (
        "missing-labels-file",
        lambda c: ArrayDataModule(c.npy(X), c.tmp_path / "labels.npy", batch_size=8),
        FileNotFoundError,
        r"y: file not found: '.*labels.npy'",
    ),
    (
        "truncated",
        lambda c: ArrayDataModule(c.npy(X, truncate=100), Y, batch_size=8),
        ValueError,
        r"X: '.*X.npy' is truncated: its header describes 4928 bytes but the file has 4828; write it again",
    ),
    (
        "pickled-objects",
        lambda c: ArrayDataModule(c.npy(np.array([{}] * 150, dtype=object)), Y, batch_size=8),
        ValueError,
        r"X: '.*X.npy' is not a readable .npy array: .*Python objects",
    ),
    (
        "strings",
        lambda c: ArrayDataModule(c.npy(X.astype(str)), Y, batch_size=8),
        ValueError,
        r"X must be numeric \(integers or floats\), got dtype <U",
    ),
    (
        "lengths-differ",
        lambda c: ArrayDataModule(c.npy(X), c.npy(Y[:-1], "y.npy"), batch_size=8),
        ValueError,
        r"X has 150 samples but its labels have 149",
    ),
    (
        "rank",
        lambda c: ArrayDataModule(c.npy(X[:, :, None]), Y, batch_size=8),
        ValueError,
        r"X must be 2-D \(n_samples, n_features\) for an MLP or 4-D",
    ),
    (
        "nan",
        lambda c: ArrayDataModule(_memmap_with_nan(c), Y, batch_size=8),
        ValueError,
        r"X \(.*X.npy\) contains NaN or Inf values \(first in row 97\); clean or impute",
    ),
    (
        "nan-in-validation-file",
        lambda c: ArrayDataModule(
            X, Y, X_val=_memmap_with_nan(c), y_val=Y, batch_size=8
        ),  # fmt: skip
        ValueError,
        r"X_val \(.*X.npy\) contains NaN or Inf values \(first in row 97\)",
    ),
    (
        "shape-of-validation-file",
        lambda c: ArrayDataModule(
            c.npy(X), Y, X_val=c.npy(X[:, :3], "v.npy"), y_val=Y, batch_size=8
        ),
        ValueError,
        r"X_val has per-sample shape \(3,\) but the training data have \(4,\)",
    ),
)
def test_bad_memory_mapped_files(ctx, action, error, match):
    check(ctx, action, error, match)
