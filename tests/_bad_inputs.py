"""The harness of the bad-input catalogue of SPEC §3: every case asserts the exception type and
that the message names the problem.

The cases live beside the units they exercise, grouped by problem under the same test names in
every module (so ``-k test_nan_or_inf_in_x`` runs one problem across the layers):
``tests/lightning/test_module_bad_inputs.py`` (the LightningModule LVQMLN),
``tests/data/test_data_bad_inputs.py`` (ArrayDataModule, BuiltinDataModule, CsvDataModule and
memory-mapped files), ``tests/sklearn/test_estimator_bad_inputs.py`` (LVQMLNClassifier),
``tests/io/test_checkpoint_bad_inputs.py`` (checkpoints) and ``tests/cli/test_cli_bad_inputs.py``
(``lvqmln``). ``tests/conftest.py`` registers this module as a plugin, so its fixtures (``ctx``
and the fitted objects it hands out) reach all of them.

CLI runs are in-process; a CLI that rejects an argument exits with status 2 and
``error: <Type>: <message>`` (re-raised here as that type), other failures propagate as
exceptions. After every failing CLI run nothing was written but the run's config: no
checkpoint, no predictions file.
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
from _paths import CONFIGS
from _trainers import quiet_trainer
from sklearn.exceptions import NotFittedError

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.cli import main as cli_main
from lvqmln_torch.io.checkpoint import CheckpointError
from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

X, Y = load_builtin("iris")
XT, YT = torch.tensor(X, dtype=torch.float32), torch.tensor(Y)
IMAGES, IMAGE_LABELS = load_builtin("digits", as_images=True)
IMAGES, IMAGE_LABELS = IMAGES[:120], IMAGE_LABELS[:120]
IRIS_CONFIG = str(CONFIGS / "iris_mlp.yaml")
CLI_ERRORS = {
    e.__name__: e
    for e in (ValueError, FileNotFoundError, KeyError, TypeError, CheckpointError, NotFittedError)
}


def short_trainer(**kw: Any) -> L.Trainer:
    """The quiet test Trainer, two epochs unless ``kw`` says otherwise."""
    return quiet_trainer(**{"max_epochs": 2, **kw})


def fit_module(model: LVQMLN, data: Any) -> None:
    """Fit ``model`` for two epochs on a DataModule or on training batches."""
    if isinstance(data, L.LightningDataModule):
        short_trainer().fit(model, datamodule=data)
    else:
        short_trainer().fit(model, train_dataloaders=data)


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
    trainer = short_trainer(max_epochs=1)
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
    """Run one case: ``action(ctx)`` raises ``error`` with a message matching ``match``."""
    with pytest.raises(error, match=match):
        action(ctx)


def cases(*rows: Any) -> Any:
    """Parametrise over ``(id, action, error, match)`` rows (or ready ``pytest.param`` s)."""
    params = [row if hasattr(row, "marks") else pytest.param(*row[1:], id=row[0]) for row in rows]
    return pytest.mark.parametrize(("action", "error", "match"), params)


NOT_FITTED = r"not fitted yet"

# Rows for the n_prototypes_per_class and unknown-name cases of every layer.
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
        r"Unknown cnn_head 'gap'. Valid CNN heads: pooled, flatten, mean",
        id="cnn_head",
    ),
    pytest.param(
        "conv_activation",
        "rlu",
        r"Unknown conv_activation 'rlu'. Valid activations: sigmoid, relu, tanh",
        id="conv_activation",
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


def with_value(value: float) -> np.ndarray:
    """The iris features with ``value`` at row 7, column 2."""
    X_bad = X.copy()
    X_bad[7, 2] = value
    return X_bad


def corrupt_copy(c: Ctx, source: Path) -> Path:
    """The first half of ``source``, as ``corrupt.ckpt`` in the case's folder."""
    raw = source.read_bytes()
    path = c.tmp_path / "corrupt.ckpt"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def random_bytes(c: Ctx) -> Path:
    """4,000 random bytes, as ``random.ckpt`` in the case's folder."""
    path = c.tmp_path / "random.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    return path
