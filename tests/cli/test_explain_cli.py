"""``lvqmln explain``: explanations.csv and the pictures from a checkpoint trained with
projection, from .npy and .csv inputs; bad arguments end with a one-line error."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _paths import CONFIGS

from lvqmln_torch import load_builtin
from lvqmln_torch.cli import main, run_cli
from lvqmln_torch.io.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
CONFIG = str(CONFIGS / "iris_mlp.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain_cli")
    run_cli(
        ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(root), *QUIET]
        + ["--trainer.max_epochs", "60", "--trainer.callbacks+=PrototypeProjection"]
    )
    (found,) = root.glob("lightning_logs/version_*/checkpoints/*.ckpt")
    return found


def test_checkpoint_holds_the_projection(checkpoint):
    model = load_checkpoint(checkpoint)
    X, y = load_builtin("iris")
    raw = torch.load(checkpoint, weights_only=True)
    stats = raw["BuiltinDataModule"]
    Xs = (X - stats["mean"].numpy()) / stats["scale"].numpy()
    sources = model.prototype_sources
    assert sources is not None and torch.equal(torch.as_tensor(y)[sources], model.prototype_labels)
    torch.testing.assert_close(model.prototypes.detach(), model.transform(Xs[sources.numpy()]))


def test_explain_npy_with_labels(checkpoint, tmp_path, capsys):
    X, y = load_builtin("iris")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "out"
    main(
        ["explain", str(checkpoint), str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]
        + ["--output", str(out), "--k", "3"]
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_rejection.png",
        "exemplars.png",
        "explanations.csv",
    ]
    assert "Written" in capsys.readouterr().out
    with (out / "explanations.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = load_checkpoint(checkpoint)
    stats = torch.load(checkpoint, weights_only=True)["BuiltinDataModule"]
    info = model.explain((X - stats["mean"].numpy()) / stats["scale"].numpy())
    assert len(rows) == 150
    assert [int(r["label"]) for r in rows] == info["label"].tolist()
    assert [int(r["prototype"]) for r in rows] == info["prototype"].tolist()
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], info["confidence"].numpy())
    assert [r["correct"] == "True" for r in rows] == (info["label"].numpy() == y).tolist()


def test_explain_csv_without_labels(checkpoint, tmp_path):
    X, _ = load_builtin("iris")
    path = tmp_path / "new.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "d"])
        writer.writerows(X[:20].tolist())
    main(["explain", str(checkpoint), str(path), "--output", str(tmp_path / "o")])
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "exemplars.png",
        "explanations.csv",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.npy"], "FileNotFoundError: input file"),
        (["X.txt"], "must be .npy or .csv"),
        (["X.npy", "--k", "0"], "k must be an integer in"),
        (["X3.npy"], r"expected inputs of shape \(n, 4\)"),
        (["X.npy", "--labels", "bad.npy"], r"labels \[7\] are not among the training classes"),
    ],
)
def test_bad_arguments_write_nothing(checkpoint, tmp_path, monkeypatch, capsys, args, message):
    X, y = load_builtin("iris")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X3.npy", X[:, :3])
    np.save(tmp_path / "bad.npy", np.where(y == 0, 7, y))
    (tmp_path / "X.txt").write_text("1 2 3 4\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", str(checkpoint), *args, "--output", "out"])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
