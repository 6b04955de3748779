"""The bad-input catalogue of SPEC §3 for the CLI (``lvqmln``, in-process through ``ctx.cli``: each
failing run must leave no checkpoint or predictions file). The harness, its fixtures and the shared
data are in ``tests/_bad_inputs.py``."""

from __future__ import annotations

import pytest
from _bad_inputs import BAD_COUNTS, IRIS_CONFIG, NOT_FITTED, UNKNOWN, cases, check, random_bytes
from sklearn.exceptions import NotFittedError


def fit_csv(c, text: str):
    """``lvqmln fit`` on the iris config with a CSV file of ``text`` as its data."""
    return c.cli(
        "fit", "--config", IRIS_CONFIG, "--data", "CsvDataModule", "--data.path", c.csv(text)
    )


# --------------------------------------------------------------------------- X rank
@cases(
    (
        "cli-cnn-on-flat",
        lambda c: c.cli("fit", "--config", IRIS_CONFIG, "--model.backbone", "cnn"),
        ValueError,
        r"needs \(n, C, H, W\) image inputs",
    ),
)
def test_x_not_2d_or_4d(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- lengths
@cases(
    (
        "cli-csv-short-row",
        lambda c: fit_csv(c, "a,b,label\n1,2,x\n3,y\n4,5,y\n"),
        ValueError,
        r"line 3: 2 fields but the header has 3 columns",
    ),
)
def test_x_y_lengths_differ(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- NaN / Inf
@cases(
    (
        "cli-csv-nan",
        lambda c: fit_csv(c, "a,b,label\n1,2,x\n,3,y\n4,5,x\n"),
        ValueError,
        r"has a missing or non-finite value",
    ),
)
def test_nan_or_inf_in_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- classes
@cases(
    (
        "cli-csv",
        lambda c: fit_csv(c, "a,b,label\n1,2,x\n2,3,x\n4,5,x\n"),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
)
def test_fewer_than_two_classes(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- empty X
@cases(
    (
        "cli-csv",
        lambda c: fit_csv(c, ""),
        ValueError,
        r"CSV file .* is empty",
    ),
)
def test_empty_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- prototypes
@pytest.mark.parametrize(("counts", "match"), BAD_COUNTS)
def test_bad_n_prototypes_per_class(ctx, counts, match):
    with pytest.raises(ValueError, match=match):
        ctx.cli("fit", "--config", IRIS_CONFIG, "--model.n_prototypes_per_class", str(counts))


# --------------------------------------------------------------------------- unknown names
@pytest.mark.parametrize(("name", "value", "match"), UNKNOWN)
def test_unknown_names_list_the_valid_ones(ctx, name, value, match):
    with pytest.raises(ValueError, match=match):
        ctx.cli("fit", "--config", IRIS_CONFIG, f"--model.{name}", value)


@cases(
    (
        "cli-dataset",
        lambda c: c.cli("fit", "--config", IRIS_CONFIG, "--data.name", "mnist"),
        ValueError,
        r"Unknown dataset 'mnist'. Valid datasets: iris, wine, breast_cancer, digits",
    ),
)
def test_unknown_backbone_and_dataset(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- not fitted
@cases(
    (
        "cli-predict-without-checkpoint",
        lambda c: c.cli("predict", "--config", IRIS_CONFIG),
        NotFittedError,
        NOT_FITTED,
    ),
)
def test_predict_before_fit(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- predict shape
@cases(
    (
        "cli-predict-features",
        lambda c: c.cli(
            "predict",
            "--config",
            IRIS_CONFIG,
            "--data",
            "CsvDataModule",
            "--data.path",
            c.csv("a,b,c,label\n" + "".join(f"{i},{i},{i},{'xy'[i % 2]}\n" for i in range(8))),
            "--ckpt_path",
            str(c.cli_checkpoint),
        ),  # fmt: skip
        ValueError,
        r"MLPBackbone expects 2 features, got 3",
    ),
)
def test_wrong_feature_count_or_image_shape_at_predict(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- checkpoints
@cases(
    pytest.param(
        lambda c: c.cli("test", "--config", IRIS_CONFIG, "--ckpt_path", str(random_bytes(c))),
        ValueError,
        r"truncated or corrupt",
        id="cli-random-bytes",
    ),
)
def test_corrupt_or_mismatched_checkpoint(ctx, action, error, match):
    check(ctx, action, error, match)
