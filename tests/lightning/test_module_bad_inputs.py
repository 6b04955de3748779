"""The bad-input catalogue of SPEC §3 for the LightningModule (LVQMLN): its constructor, fits on
DataModules and on plain batches, and its inference API. The harness, its fixtures and the shared
data are in ``tests/_bad_inputs.py``."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from _bad_inputs import (
    BAD_COUNTS,
    IMAGE_LABELS,
    IMAGES,
    NOT_FITTED,
    UNKNOWN,
    XT,
    YT,
    X,
    Y,
    cases,
    check,
    fit_module,
    short_trainer,
    with_value,
)
from sklearn.exceptions import NotFittedError

from lvqmln_torch import LVQMLN, ArrayDataModule


class Batches:
    """One full batch ``(x, y[, w])`` per epoch: feeds a LightningModule directly, without the
    validation of a datamodule."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __iter__(self):
        yield self.tensors

    def __len__(self) -> int:
        return 1


class PlainDataModule(L.LightningDataModule):
    """A user's datamodule that tells nothing about its data: sizes come from its batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 50) -> None:
        super().__init__()
        self.dataset = torch.utils.data.TensorDataset(x, y)
        self.batch_size = batch_size

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size)


# --------------------------------------------------------------------------- sizes, init sample
@cases(
    (
        "module-no-n-classes-from-a-plain-datamodule",
        lambda c: fit_module(LVQMLN(), PlainDataModule(XT, YT)),
        ValueError,
        r"LVQMLN needs the number of classes: pass n_classes \(or classes\), or give the "
        r"datamodule an n_classes attribute",
    ),
    (
        "module-no-input-size-from-an-empty-loader",
        lambda c: fit_module(
            LVQMLN(n_classes=3),
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(XT[:0], YT[:0])),
        ),
        ValueError,
        r"cannot infer its input size: pass in_features \(MLP\) or input_shape \(CNN\)",
    ),
    (
        "module-mlp-on-image-batches",
        lambda c: fit_module(
            LVQMLN(n_classes=10),
            PlainDataModule(torch.tensor(IMAGES), torch.tensor(IMAGE_LABELS)),
        ),
        ValueError,
        r"backbone='mlp' needs flat \(n, d\) inputs, but the samples have shape \(1, 8, 8\) "
        r"\(the first training batch of PlainDataModule\)",
    ),
    (
        "module-cnn-on-flat-batches",
        lambda c: fit_module(LVQMLN(backbone="cnn", n_classes=3), PlainDataModule(XT, YT)),
        ValueError,
        r"backbone='cnn' needs \(n, C, H, W\) image inputs, but the samples have shape \(4,\) "
        r"\(the first training batch of PlainDataModule\)",
    ),
    (
        "module-class-missing-from-the-init-sample",  # iris is sorted by class
        lambda c: fit_module(LVQMLN(n_classes=3, init_sample_size=60), PlainDataModule(XT, YT)),
        ValueError,
        r"classes \[2\] do not occur in the 60 samples from the first training batches that "
        r"initialise the prototypes \(init_sample_size=60\); raise init_sample_size, or "
        r"shuffle the training data",
    ),
    (
        "module-init-sample-size-zero",
        lambda c: LVQMLN(init_sample_size=0),
        ValueError,
        r"init_sample_size must be an integer >= 1, got 0",
    ),
)
def test_sizes_and_the_init_sample(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- X rank
@cases(
    (
        "module-fit-mlp-3d",
        lambda c: fit_module(LVQMLN(in_features=4, n_classes=3), Batches(XT[:, :, None], YT)),
        ValueError,
        r"MLPBackbone expects 2-D input \(n, 4\), got shape \(150, 4, 1\)",
    ),
    (
        "module-fit-cnn-2d",
        lambda c: fit_module(
            LVQMLN(backbone="cnn", input_shape=[1, 2, 2], n_classes=3), Batches(XT, YT)
        ),
        ValueError,
        r"CNNBackbone expects images of shape \(n, 1, 2, 2\), got \(150, 4\)",
    ),
    (
        "module-cnn-on-flat-datamodule",
        lambda c: fit_module(LVQMLN(backbone="cnn"), ArrayDataModule(X, Y)),
        ValueError,
        r"backbone='cnn' needs \(n, C, H, W\) image inputs, but the samples have shape \(4,\) "
        r"\(ArrayDataModule.n_features\); use backbone='mlp' for flat inputs",
    ),
    (
        "module-mlp-on-image-datamodule",
        lambda c: fit_module(LVQMLN(), ArrayDataModule(IMAGES, IMAGE_LABELS)),
        ValueError,
        r"backbone='mlp' needs flat \(n, d\) inputs, but the samples have shape \(1, \d+, \d+\) "
        r"\(ArrayDataModule.input_shape\); use backbone='cnn'",
    ),
    (
        "module-predict-3d",
        lambda c: c.fitted_model.predict(X[:, :, None]),
        ValueError,
        r"expected inputs of shape \(n, 4\)",
    ),
)
def test_x_not_2d_or_4d(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- lengths
@cases(
    (
        "module-fit",
        lambda c: fit_module(LVQMLN(in_features=4, n_classes=3), Batches(XT, YT[:-1])),
        ValueError,
        r"a batch has 150 inputs but 149 labels: X and y lengths differ",
    ),
    (
        "module-fit-sample-weight",
        lambda c: fit_module(LVQMLN(in_features=4, n_classes=3), Batches(XT, YT, torch.ones(149))),
        ValueError,
        r"sample_weight has 149 entries but there are 150 samples",
    ),
)
def test_x_y_lengths_differ(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- NaN / Inf
@cases(
    (
        "module-fit-nan",
        lambda c: fit_module(
            LVQMLN(in_features=4, n_classes=3),
            Batches(torch.tensor(with_value(np.nan), dtype=torch.float32), YT),
        ),
        FloatingPointError,
        r"training loss became non-finite \(NaN or Inf\) at optimizer step 0",
    ),
    (
        "module-predict-nan",
        lambda c: c.fitted_model.predict(with_value(np.nan)),
        ValueError,
        r"the inputs contain NaN or Inf values",
    ),
    (
        "module-predict-proba-inf",
        lambda c: c.fitted_model.predict_proba(with_value(np.inf)),
        ValueError,
        r"the inputs contain NaN or Inf values",
    ),
)
def test_nan_or_inf_in_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- classes
@cases(
    (
        "module-constructor",
        lambda c: LVQMLN(in_features=4, n_classes=1),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
    (
        "module-fit",
        lambda c: fit_module(LVQMLN(in_features=4, n_classes=3), Batches(XT[:50], YT[:50])),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
    (
        "module-fit-labels-out-of-range",
        lambda c: fit_module(LVQMLN(in_features=4, n_classes=2), Batches(XT, YT)),
        ValueError,
        r"training labels must be class indices in \[0, 2\), got values in \[0, 2\]",
    ),
)
def test_fewer_than_two_classes(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- empty X
@cases(
    (
        "module-fit",
        lambda c: fit_module(LVQMLN(in_features=4, n_classes=3), Batches(XT[:0], YT[:0])),
        ValueError,
        r"the training data are empty \(0 samples\)",
    ),
    (
        "module-predict",
        lambda c: c.fitted_model.predict(X[:0]),
        ValueError,
        r"the inputs are empty \(shape \(0, 4\)\)",
    ),
)
def test_empty_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- prototypes
@pytest.mark.parametrize(("counts", "match"), BAD_COUNTS)
@pytest.mark.parametrize("target", ["module", "module-datamodule"])
def test_bad_n_prototypes_per_class(target, counts, match):
    with pytest.raises(ValueError, match=match):
        if target == "module":
            LVQMLN(in_features=4, n_classes=3, n_prototypes_per_class=counts)
        else:
            fit_module(LVQMLN(n_prototypes_per_class=counts), ArrayDataModule(X, Y))


def test_bad_n_prototypes_per_class_with_original_labels():
    """Dict keys are the original labels; a dict missing one names it."""
    names = np.array(["setosa", "versicolor", "virginica"])[Y]
    model = LVQMLN(n_prototypes_per_class={"setosa": 1, "virginica": 2})
    with pytest.raises(ValueError, match=r"no entry for class 'versicolor'"):
        fit_module(model, ArrayDataModule(X, names))


# --------------------------------------------------------------------------- unknown names
@pytest.mark.parametrize(("name", "value", "match"), UNKNOWN)
@pytest.mark.parametrize("target", ["module", "module-unsized"])
def test_unknown_names_list_the_valid_ones(target, name, value, match):
    with pytest.raises(ValueError, match=match):
        if target == "module":
            LVQMLN(in_features=4, n_classes=3, **{name: value})
        else:  # sizes come later, from the datamodule
            LVQMLN(**{name: value})


@cases(
    (
        "module-backbone",
        lambda c: LVQMLN(backbone="resnet"),
        ValueError,
        r"Unknown backbone 'resnet'. Valid backbones: mlp, cnn",
    ),
)
def test_unknown_backbone_and_dataset(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- not fitted
@cases(
    ("module-predict", lambda c: LVQMLN().predict(X), NotFittedError, NOT_FITTED),
    (
        "module-predict-proba-sized",
        lambda c: LVQMLN(in_features=4, n_classes=3).predict_proba(X),
        NotFittedError,
        NOT_FITTED,
    ),
    (
        "module-transform-sized",
        lambda c: LVQMLN(in_features=4, n_classes=3).transform(X),
        NotFittedError,
        NOT_FITTED,
    ),
    (
        "module-trainer-predict",
        lambda c: short_trainer().predict(LVQMLN(in_features=4, n_classes=3), Batches(XT)),
        NotFittedError,
        NOT_FITTED,
    ),
    (
        "module-trainer-test",
        lambda c: short_trainer().test(
            LVQMLN(), datamodule=ArrayDataModule(X, Y, test_size=0.2), verbose=False
        ),
        NotFittedError,
        NOT_FITTED,
    ),
)
def test_predict_before_fit(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- predict shape
@cases(
    (
        "module-features",
        lambda c: c.fitted_model.predict(X[:, :3]),
        ValueError,
        r"expected inputs of shape \(n, 4\) \(the MLP was fitted on 4 features\), got \(150, 3\)",
    ),
    (
        "module-image-shape",
        lambda c: c.fitted_cnn.predict(IMAGES[:5, :, :7, :]),
        ValueError,
        r"expected images of shape \(n, 1, 8, 8\) .* got \(5, 1, 7, 8\)",
    ),
    (
        "module-flat-into-cnn",
        lambda c: c.fitted_cnn.predict_proba(IMAGES[:5].reshape(5, -1)),
        ValueError,
        r"expected images of shape \(n, 1, 8, 8\)",
    ),
    (
        "module-images-into-mlp",
        lambda c: c.fitted_model.predict_proba(IMAGES[:5]),
        ValueError,
        r"expected inputs of shape \(n, 4\) \(the MLP was fitted on 4 features\), "
        r"got \(5, 1, 8, 8\)",
    ),
)
def test_wrong_feature_count_or_image_shape_at_predict(ctx, action, error, match):
    check(ctx, action, error, match)
