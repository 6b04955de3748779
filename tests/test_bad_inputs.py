"""The bad-input catalogue of SPEC §3, one parametrised test per case, across the
LightningModule (LVQMLN), the DataModules (ArrayDataModule, BuiltinDataModule, CsvDataModule),
the estimator (LVQMLNClassifier) and the CLI (``lvqmln``).

Every case asserts the exception type and that the message names the problem. CLI runs are
in-process; a CLI that rejects an argument exits with status 2 and ``error: <Type>: <message>``
(re-raised here as that type), other failures propagate as exceptions. After every failing
CLI run nothing was written but the run's config: no checkpoint, no predictions file.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.exceptions import NotFittedError

from lvqmln_torch import LVQMLN, ArrayDataModule, BuiltinDataModule, load_builtin
from lvqmln_torch.cli import main as cli_main
from lvqmln_torch.data.csv_datamodule import CsvDataModule
from lvqmln_torch.io.checkpoint import CheckpointError, load_checkpoint
from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

X, Y = load_builtin("iris")
XT, YT = torch.tensor(X, dtype=torch.float32), torch.tensor(Y)
IMAGES, IMAGE_LABELS = load_builtin("digits", as_images=True)
IMAGES, IMAGE_LABELS = IMAGES[:120], IMAGE_LABELS[:120]
IRIS_CONFIG = str(Path(__file__).parent.parent / "configs" / "iris_mlp.yaml")
CLI_ERRORS = {
    e.__name__: e
    for e in (ValueError, FileNotFoundError, KeyError, TypeError, CheckpointError, NotFittedError)
}


class Batches:
    """One full batch ``(x, y[, w])`` per epoch: feeds a LightningModule directly, without the
    validation of a datamodule."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __iter__(self):
        yield self.tensors

    def __len__(self) -> int:
        return 1


def _trainer(**kw: Any) -> L.Trainer:
    return quiet_trainer(**{"max_epochs": 2, **kw})


def fit_module(model: LVQMLN, data: Any) -> None:
    if isinstance(data, L.LightningDataModule):
        _trainer().fit(model, datamodule=data)
    else:
        _trainer().fit(model, train_dataloaders=data)


class Ctx:
    """What a case needs: a temporary folder, fixtures on demand, CSV files and CLI runs."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.request = request
        self.tmp_path = tmp_path

    def __getattr__(self, name: str) -> Any:  # fixtures on demand: ctx.fitted_model, ...
        return self.request.getfixturevalue(name)

    def csv(self, text: str, name: str = "data.csv") -> str:
        path = self.tmp_path / name
        path.write_text(text)
        return str(path)

    def npy(self, array: Any, name: str = "X.npy", truncate: int = 0) -> Path:
        """``array`` saved as ``name`` (``truncate`` bytes cut off its end)."""
        path = self.tmp_path / name
        np.save(path, array)
        if truncate:
            os.truncate(path, path.stat().st_size - truncate)
        return path

    def cli(self, *args: str) -> None:
        """Run ``lvqmln`` in-process; it must fail. Status-2 exits are re-raised as the error
        type they print; the run must not have written a checkpoint or predictions."""
        root = self.tmp_path / "cli_run"
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                cli_main(
                    [*args, "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1"]
                )
        except SystemExit as exit_:
            assert exit_.code == 2, stderr.getvalue()
            found = re.search(r"error: (\w+): (.*)", stderr.getvalue(), re.S)
            assert found, stderr.getvalue()
            raise CLI_ERRORS[found.group(1)](found.group(2).strip()) from None
        finally:
            written = [p for p in root.rglob("*") if p.suffix == ".ckpt" or p.suffix == ".csv"]
            assert not written, f"a failed CLI run left files behind: {written}"
        pytest.fail("the CLI run succeeded")


@pytest.fixture
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Ctx:
    return Ctx(request, tmp_path)


@pytest.fixture(scope="module")
def fitted_model() -> LVQMLN:
    model = LVQMLN(seed=0)
    fit_module(model, ArrayDataModule(X, Y, standardize=True))
    return model


@pytest.fixture(scope="module")
def fitted_cnn() -> LVQMLN:
    model = LVQMLN(backbone="cnn", channels=[2], kernel_sizes=[3], seed=0)
    fit_module(model, ArrayDataModule(IMAGES, IMAGE_LABELS))
    return model


@pytest.fixture(scope="module")
def fitted_estimator() -> LVQMLNClassifier:
    return LVQMLNClassifier(max_iter=3).fit(X, Y)


@pytest.fixture(scope="module")
def fitted_cnn_estimator() -> LVQMLNClassifier:
    return LVQMLNClassifier(max_iter=1, backbone="cnn", channels=[2], kernel_sizes=[3]).fit(
        IMAGES, IMAGE_LABELS
    )


@pytest.fixture(scope="module")
def model_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a fitted iris model (hidden_sizes [10])."""
    model = LVQMLN(seed=0)
    trainer = _trainer(max_epochs=1)
    trainer.fit(model, datamodule=ArrayDataModule(X, Y))
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint written by ``lvqmln fit`` on a CSV file with two features."""
    root = tmp_path_factory.mktemp("cli_fit")
    data = root / "two.csv"
    data.write_text("a,b,label\n" + "".join(f"{i % 7},{i % 5},{'xy'[i % 2]}\n" for i in range(40)))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        cli_main(
            ["fit", "--config", IRIS_CONFIG, "--data", "CsvDataModule", "--data.path", str(data)]
            + ["--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1"]
        )
    (checkpoint,) = root.rglob("*.ckpt")
    return checkpoint


Case = Callable[[Ctx], Any]


def check(ctx: Ctx, action: Case, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        action(ctx)


def cases(*rows: Any) -> Any:
    """Parametrise over ``(id, action, error, match)`` rows (or ready ``pytest.param`` s)."""
    params = [row if hasattr(row, "marks") else pytest.param(*row[1:], id=row[0]) for row in rows]
    return pytest.mark.parametrize(("action", "error", "match"), params)


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
    (
        "estimator",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X, Y[:-1]),
        ValueError,
        r"inconsistent numbers of samples: \[150, 149\]",
    ),
    (
        "cli-csv-short-row",
        lambda c: c.cli(
            "fit",
            "--config",
            IRIS_CONFIG,
            "--data",
            "CsvDataModule",
            "--data.path",
            c.csv("a,b,label\n1,2,x\n3,y\n4,5,y\n"),
        ),  # fmt: skip
        ValueError,
        r"line 3: 2 fields but the header has 3 columns",
    ),
)
def test_x_y_lengths_differ(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- NaN / Inf
def _with(value: float) -> np.ndarray:
    X_bad = X.copy()
    X_bad[7, 2] = value
    return X_bad


@cases(
    (
        "module-fit-nan",
        lambda c: fit_module(
            LVQMLN(in_features=4, n_classes=3),
            Batches(torch.tensor(_with(np.nan), dtype=torch.float32), YT),
        ),
        FloatingPointError,
        r"training loss became non-finite \(NaN or Inf\) at optimizer step 0",
    ),
    (
        "module-predict-nan",
        lambda c: c.fitted_model.predict(_with(np.nan)),
        ValueError,
        r"the inputs contain NaN or Inf values",
    ),
    (
        "module-predict-proba-inf",
        lambda c: c.fitted_model.predict_proba(_with(np.inf)),
        ValueError,
        r"the inputs contain NaN or Inf values",
    ),
    (
        "array-datamodule-nan",
        lambda c: ArrayDataModule(_with(np.nan), Y),
        ValueError,
        r"X contains NaN or Inf values",
    ),
    (
        "array-datamodule-inf",
        lambda c: ArrayDataModule(_with(-np.inf), Y),
        ValueError,
        r"X contains NaN or Inf values",
    ),
    (
        "array-datamodule-predict-nan",
        lambda c: ArrayDataModule(X, Y, X_predict=_with(np.nan)),
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
    (
        "estimator-nan",
        lambda c: LVQMLNClassifier(max_iter=1).fit(_with(np.nan), Y),
        ValueError,
        r"Input X contains NaN",
    ),
    (
        "estimator-inf",
        lambda c: LVQMLNClassifier(max_iter=1).fit(_with(np.inf), Y),
        ValueError,
        r"Input X contains infinity",
    ),
    (
        "estimator-predict-nan",
        lambda c: c.fitted_estimator.predict(_with(np.nan)),
        ValueError,
        r"Input X contains NaN",
    ),
    (
        "cli-csv-nan",
        lambda c: c.cli(
            "fit",
            "--config",
            IRIS_CONFIG,
            "--data",
            "CsvDataModule",
            "--data.path",
            c.csv("a,b,label\n1,2,x\n,3,y\n4,5,x\n"),
        ),  # fmt: skip
        ValueError,
        r"has a missing or non-finite value",
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
    (
        "estimator",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X[:50], Y[:50]),
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
    ),
    (
        "cli-csv",
        lambda c: c.cli(
            "fit",
            "--config",
            IRIS_CONFIG,
            "--data",
            "CsvDataModule",
            "--data.path",
            c.csv("a,b,label\n1,2,x\n2,3,x\n4,5,x\n"),
        ),  # fmt: skip
        ValueError,
        r"LVQMLN needs at least 2 classes, got 1 class",
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
    (
        "estimator",
        lambda c: LVQMLNClassifier(max_iter=1).fit(X[:0], Y[:0]),
        ValueError,
        r"Found array with 0 sample\(s\)",
    ),
    (
        "cli-csv",
        lambda c: c.cli(
            "fit", "--config", IRIS_CONFIG, "--data", "CsvDataModule", "--data.path", c.csv("")
        ),
        ValueError,
        r"CSV file .* is empty",
    ),
)
def test_empty_x(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- prototypes
BAD_COUNTS = [
    pytest.param(0, r"n_prototypes_per_class must be an integer >= 1, got 0", id="zero"),
    pytest.param(-2, r"n_prototypes_per_class must be an integer >= 1, got -2", id="negative"),
    pytest.param(
        [1, 2], r"n_prototypes_per_class has 2 entries but there are 3 classes", id="list-length"
    ),
    pytest.param(
        {0: 1, 1: 2}, r"n_prototypes_per_class has no entry for class 2", id="dict-missing-class"
    ),
]


@pytest.mark.parametrize(("counts", "match"), BAD_COUNTS)
@pytest.mark.parametrize("target", ["module", "module-datamodule", "estimator", "cli"])
def test_bad_n_prototypes_per_class(ctx, target, counts, match):
    with pytest.raises(ValueError, match=match):
        if target == "module":
            LVQMLN(in_features=4, n_classes=3, n_prototypes_per_class=counts)
        elif target == "module-datamodule":
            fit_module(LVQMLN(n_prototypes_per_class=counts), ArrayDataModule(X, Y))
        elif target == "estimator":
            LVQMLNClassifier(max_iter=1, n_prototypes_per_class=counts).fit(X, Y)
        else:
            ctx.cli("fit", "--config", IRIS_CONFIG, "--model.n_prototypes_per_class", str(counts))


def test_bad_n_prototypes_per_class_with_original_labels():
    """Dict keys are the original labels; a dict missing one names it."""
    names = np.array(["setosa", "versicolor", "virginica"])[Y]
    model = LVQMLN(n_prototypes_per_class={"setosa": 1, "virginica": 2})
    with pytest.raises(ValueError, match=r"no entry for class 'versicolor'"):
        fit_module(model, ArrayDataModule(X, names))


# --------------------------------------------------------------------------- unknown names
UNKNOWN = [
    pytest.param(
        "activation",
        "gelu",
        r"Unknown activation 'gelu'. Valid activations: sigmoid, relu, tanh, leaky_relu, selu",
        id="activation",
    ),
    pytest.param(
        "cnn_head",
        "gap",
        r"Unknown cnn_head 'gap'. Valid CNN heads: flatten, mean",
        id="cnn_head",
    ),
    pytest.param(
        "optimizer",
        "lbfgsx",
        r"Unknown optimizer 'lbfgsx'. Valid optimizers: adam, adamw, sgd, rmsprop",
        id="optimizer",
    ),
    pytest.param(
        "lr_scheduler",
        "step",
        r"Unknown lr_scheduler 'step'. Valid schedulers: exponential_decay, cosine_decay, "
        r"warmup_cosine_decay",
        id="scheduler",
    ),
    pytest.param(
        "prototypes_initializer",
        "kmeans",
        r"Unknown prototypes_initializer 'kmeans'. Valid initializers: stratified_random, "
        r"class_mean",
        id="initializer",
    ),
    pytest.param(
        "transfer",
        "relu",
        r"Unknown transfer(_fn)? 'relu'. Valid transfer.*identity.*sigmoid_beta.*swish_beta",
        id="transfer",
    ),
]


@pytest.mark.parametrize(("name", "value", "match"), UNKNOWN)
@pytest.mark.parametrize("target", ["module", "module-unsized", "estimator", "cli"])
def test_unknown_names_list_the_valid_ones(ctx, target, name, value, match):
    with pytest.raises(ValueError, match=match):
        if target == "module":
            LVQMLN(in_features=4, n_classes=3, **{name: value})
        elif target == "module-unsized":  # sizes come later, from the datamodule
            LVQMLN(**{name: value})
        elif target == "estimator":
            estimator_name = "transfer_fn" if name == "transfer" else name
            LVQMLNClassifier(max_iter=1, **{estimator_name: value}).fit(X, Y)
        else:
            ctx.cli("fit", "--config", IRIS_CONFIG, f"--model.{name}", value)


@cases(
    (
        "module-backbone",
        lambda c: LVQMLN(backbone="resnet"),
        ValueError,
        r"Unknown backbone 'resnet'. Valid backbones: mlp, cnn",
    ),
    (
        "builtin-datamodule",
        lambda c: BuiltinDataModule("mnist"),
        ValueError,
        r"Unknown dataset 'mnist'. Valid datasets: iris, wine, breast_cancer, digits",
    ),
    (
        "estimator-backbone",
        lambda c: LVQMLNClassifier(backbone="resnet").fit(X, Y),
        ValueError,
        r"Unknown backbone 'resnet'. Valid backbones: mlp, cnn",
    ),
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
NOT_FITTED = r"not fitted yet"


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
        lambda c: _trainer().predict(LVQMLN(in_features=4, n_classes=3), Batches(XT)),
        NotFittedError,
        NOT_FITTED,
    ),
    (
        "module-trainer-test",
        lambda c: _trainer().test(
            LVQMLN(), datamodule=ArrayDataModule(X, Y, test_size=0.2), verbose=False
        ),
        NotFittedError,
        NOT_FITTED,
    ),
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
    (
        "cli-predict-without-checkpoint",
        lambda c: c.cli("predict", "--config", IRIS_CONFIG),
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
def _corrupt(c: Ctx, source: Path) -> Path:
    raw = source.read_bytes()
    path = c.tmp_path / "corrupt.ckpt"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _random(c: Ctx) -> Path:
    path = c.tmp_path / "random.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    return path


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
        "module-truncated",
        lambda c: load_checkpoint(_corrupt(c, c.model_checkpoint)),
        CheckpointError,
        r"is truncated or corrupt and cannot be read",
    ),
    (
        "module-random-bytes",
        lambda c: load_checkpoint(_random(c)),
        CheckpointError,
        r"is truncated or corrupt and cannot be read",
    ),
    (
        "module-other-configuration",
        lambda c: load_checkpoint(c.model_checkpoint, hidden_sizes=[7]),
        CheckpointError,
        r"(?s)another configuration \(hidden_sizes=\[10\] in the checkpoint, \[7\] requested\)"
        r".*size mismatch for backbone\.layers\.0\.weight",
    ),
    (
        "module-resume-other-configuration",
        lambda c: _trainer(max_epochs=3).fit(
            LVQMLN(hidden_sizes=[7]), ArrayDataModule(X, Y), ckpt_path=c.model_checkpoint
        ),
        RuntimeError,
        r"size mismatch for backbone.layers.0.weight",
    ),
    (
        "estimator-truncated",
        lambda c: LVQMLNClassifier.load(_corrupt(c, c.model_checkpoint)),
        ValueError,
        r"is not a readable LVQMLNClassifier file \(corrupt, truncated",
    ),
    (
        "estimator-random-bytes",
        lambda c: LVQMLNClassifier.load(_random(c)),
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
    pytest.param(
        lambda c: c.cli("test", "--config", IRIS_CONFIG, "--ckpt_path", str(_random(c))),
        ValueError,
        r"truncated or corrupt",
        id="cli-random-bytes",
    ),
)
def test_corrupt_or_mismatched_checkpoint(ctx, action, error, match):
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


def test_loading_a_damaged_checkpoint_does_not_touch_it(ctx):
    path = _corrupt(ctx, ctx.model_checkpoint)
    before = path.read_bytes()
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(ctx.tmp_path)) == ["corrupt.ckpt"]
