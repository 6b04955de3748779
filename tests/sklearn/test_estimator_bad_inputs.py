"""The bad-input catalogue of SPEC §3 for the estimator (LVQMLNClassifier): fit, inference, save and
load. The harness, its fixtures and the shared data are in ``tests/_bad_inputs.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _bad_inputs import (
    BAD_COUNTS,
    IMAGES,
    NOT_FITTED,
    UNKNOWN,
    Ctx,
    X,
    Y,
    cases,
    check,
    corrupt_copy,
    random_bytes,
    with_value,
)
from sklearn.exceptions import NotFittedError

from lvqmln_torch.sklearn.estimator import LVQMLNClassifier


# --------------------------------------------------------------------------- X rank
@cases(
    (
        "estimator-mlp-3d",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X[:, :, None], Y),
        ValueError,
        r"backbone='mlp' needs 2-D inputs \(n_samples, n_features\), got shape \(150, 4, 1\)",
    ),
    (
        "estimator-cnn-2d",
        lambda c: LVQMLNClassifier(max_iter=1, backbone="cnn").fit(X, Y),
        ValueError,
        r"backbone='cnn' needs 4-D images \(n_samples, C, H, W\), got shape \(150, 4\)",
    ),
    (
        "estimator-predict-1d",
        lambda c: c.fitted_estimator.predict(X[0]),
        ValueError,
        r"Expected 2D array, got 1D array instead",
    ),
)
def test_x_not_2d_or_4d(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- lengths
@cases(
    (
        "estimator",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X, Y[:-1]),
        ValueError,
        r"inconsistent numbers of samples: \[150, 149\]",
    ),
)
def test_x_y_lengths_differ(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- NaN / Inf
@cases(
    (
        "estimator-nan",
        lambda c: LVQMLNClassifier(max_iter=1).fit(with_value(np.nan), Y),
        ValueError,
        r"Input X contains NaN",
    ),
    (
        "estimator-inf",
        lambda c: LVQMLNClassifier(max_iter=1).fit(with_value(np.inf), Y),
        ValueError,
        r"Input X contains infinity",
    ),
    (
        "estimator-predict-nan",
        lambda c: c.fitted_estimator.predict(with_value(np.nan)),
        ValueError,
        r"Input X contains NaN",
    ),
)
def test_nan_or_inf_in_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- classes
@cases(
    (
        "estimator",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X[:50], Y[:50]),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
)
def test_fewer_than_two_classes(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- empty X
@cases(
    (
        "estimator",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X[:0], Y[:0]),
        ValueError,
        r"Found array with 0 sample\(s\)",
    ),
)
def test_empty_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- prototypes
@pytest.mark.parametrize(("counts", "match"), BAD_COUNTS)
def test_bad_n_prototypes_per_class(counts, match):
    with pytest.raises(ValueError, match=match):
        LVQMLNClassifier(max_iter=1, n_prototypes_per_class=counts).fit(X, Y)


# --------------------------------------------------------------------------- unknown names
@pytest.mark.parametrize(("name", "value", "match"), UNKNOWN)
def test_unknown_names_list_the_valid_ones(name, value, match):
    estimator_name = "transfer_fn" if name == "transfer" else name
    with pytest.raises(ValueError, match=match):
        LVQMLNClassifier(max_iter=1, **{estimator_name: value}).fit(X, Y)


@cases(
    (
        "estimator-backbone",
        lambda c: LVQMLNClassifier(backbone="resnet").fit(X, Y),
        ValueError,
        r"Unknown backbone 'resnet'. Valid backbones: mlp, cnn",
    ),
)
def test_unknown_backbone_and_dataset(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- not fitted
@cases(
    ("estimator-predict", lambda c: LVQMLNClassifier().predict(X), NotFittedError, NOT_FITTED),
    (
        "estimator-predict-proba",
        lambda c: LVQMLNClassifier().predict_proba(X),
        NotFittedError,
        NOT_FITTED,
    ),
    (
        "estimator-transform",
        lambda c: LVQMLNClassifier().transform(X),
        NotFittedError,
        NOT_FITTED,
    ),
)
def test_predict_before_fit(ctx, action, error, match):
    check(ctx, action, error, match)


def test_estimator_save_before_fit_writes_nothing(tmp_path):
    with pytest.raises(NotFittedError, match=NOT_FITTED):
        LVQMLNClassifier().save(tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- predict shape
@cases(
    (
        "estimator-features",
        lambda c: c.fitted_estimator.predict(X[:, :3]),
        ValueError,
        r"X has 3 features, but LVQMLNClassifier is expecting 4 features",
    ),
    (
        "estimator-image-shape",
        lambda c: c.fitted_cnn_estimator.predict(IMAGES[:5, :, :7, :]),
        ValueError,
        r"per-sample shape \(1, 7, 8\), but LVQMLNClassifier was fitted on images of shape "
        r"\(1, 8, 8\)",
    ),
)
def test_wrong_feature_count_or_image_shape_at_predict(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- checkpoints
def _inconsistent_estimator_file(c: Ctx) -> Path:
    """A saved estimator whose hyperparameters no longer match its weights."""
    path = c.tmp_path / "estimator.pt"
    c.fitted_estimator.save(path)
    payload = torch.load(path, weights_only=True)
    payload["hparams"]["hidden_sizes"] = [3]
    torch.save(payload, path)
    return path


@cases(
    (
        "estimator-truncated",
        lambda c: LVQMLNClassifier.load(corrupt_copy(c, c.model_checkpoint)),
        ValueError,
        r"is not a readable LVQMLNClassifier file \(corrupt, truncated",
    ),
    (
        "estimator-random-bytes",
        lambda c: LVQMLNClassifier.load(random_bytes(c)),
        ValueError,
        r"is not a readable LVQMLNClassifier file",
    ),
    (
        "estimator-lightning-checkpoint",
        lambda c: LVQMLNClassifier.load(c.model_checkpoint),
        ValueError,
        r"was not written by LVQMLNClassifier.save",
    ),
    (
        "estimator-other-configuration",
        lambda c: LVQMLNClassifier.load(_inconsistent_estimator_file(c)),
        ValueError,
        r"(?s)is damaged or inconsistent: .*size mismatch",
    ),
)
def test_corrupt_or_mismatched_checkpoint(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- nothing half-written
def test_failed_estimator_save_leaves_no_file(fitted_estimator, tmp_path):
    estimator = LVQMLNClassifier(**fitted_estimator.get_params())
    estimator.__dict__.update(
        {k: v for k, v in fitted_estimator.__dict__.items() if k.endswith("_")}
    )
    estimator.transfer_fn = lambda x, beta: x  # a callable cannot be stored
    target = tmp_path / "model.pt"
    with pytest.raises(ValueError, match=r"save stores plain values only, but transfer_fn"):
        estimator.save(target)
    assert list(tmp_path.iterdir()) == []


def test_failed_estimator_save_keeps_the_previous_file(fitted_estimator, tmp_path):
    target = tmp_path / "model.pt"
    fitted_estimator.save(target)
    before = target.read_bytes()
    estimator = LVQMLNClassifier(**fitted_estimator.get_params())
    estimator.__dict__.update(
        {k: v for k, v in fitted_estimator.__dict__.items() if k.endswith("_")}
    )
    estimator.prototypes_initializer = lambda z, y, n, g: None
    with pytest.raises(ValueError, match="prototypes_initializer"):
        estimator.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
