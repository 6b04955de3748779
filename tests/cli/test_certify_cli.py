"""``lvqmln certify`` (and the radius column of ``lvqmln explain``): radii.csv,
certified.csv and the curve from a checkpoint; bad arguments end with a one-line error and
write nothing."""

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
    root = tmp_path_factory.mktemp("certify_cli")
    run_cli(
        ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(root), *QUIET]
        + ["--trainer.max_epochs", "30", "--model.robust_eps", "0.2"]
    )
    (found,) = root.glob("lightning_logs/version_*/checkpoints/*.ckpt")
    return found


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _expected_radii(checkpoint: Path, X: np.ndarray) -> np.ndarray:
    model = load_checkpoint(checkpoint)
    stats = torch.load(checkpoint, weights_only=True)["BuiltinDataModule"]
    mean, scale = stats["mean"].numpy(), stats["scale"].numpy()
    # A radius of the standardised inputs is at least min(scale) times as large in raw units.
    return model.certify((X - mean) / scale).numpy() * float(np.min(np.abs(scale)))


def test_certify_npy_with_labels(checkpoint, tmp_path, capsys):
    X, y = load_builtin("iris")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "out"
    main(
        ["certify", str(checkpoint), str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy")]
        + ["--output", str(out), "--eps", "0.05", "0.2"]
    )
    assert "Written" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["certified.csv", "certified_accuracy.png", "radii.csv"]
    rows = _rows(out / "radii.csv")
    radius = np.array([float(r["radius"]) for r in rows])
    np.testing.assert_allclose(radius, _expected_radii(checkpoint, X), rtol=1e-6)
    correct = np.array([r["correct"] == "True" for r in rows])
    summary = _rows(out / "certified.csv")
    assert [float(r["eps"]) for r in summary] == [0.05, 0.2]
    for r in summary:
        eps = float(r["eps"])
        assert float(r["certified_accuracy"]) == pytest.approx(np.mean(correct & (radius >= eps)))
        assert float(r["certified_share"]) == pytest.approx(np.mean(radius >= eps))
    # explain carries the same radius.
    main(["explain", str(checkpoint), str(tmp_path / "X.npy"), "--output", str(tmp_path / "e")])
    explained = _rows(tmp_path / "e" / "explanations.csv")
    np.testing.assert_allclose([float(r["radius"]) for r in explained], radius, rtol=1e-9)


def test_certify_csv_without_labels(checkpoint, tmp_path):
    X, _ = load_builtin("iris")
    path = tmp_path / "new.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["a", "b", "c", "d"])
        writer.writerows(X[:20].tolist())
    main(["certify", str(checkpoint), str(path), "--output", str(tmp_path / "o")])
    rows = _rows(tmp_path / "o" / "radii.csv")
    assert list(rows[0]) == ["sample", "label", "radius"] and len(rows) == 20
    assert list(_rows(tmp_path / "o" / "certified.csv")[0]) == ["eps", "certified_share"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.npy"], "FileNotFoundError: input file"),
        (["X.npy", "--eps", "-1"], "eps must be"),
        (["X3.npy"], r"expected inputs of shape \(n, 4\)"),
        (["X.npy", "--labels", "bad.npy"], r"labels \[7\] are not among the training classes"),
    ],
)
def test_bad_arguments_write_nothing(checkpoint, tmp_path, monkeypatch, capsys, args, message):
    X, y = load_builtin("iris")
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "X3.npy", X[:, :3])
    np.save(tmp_path / "bad.npy", np.where(y == 0, 7, y))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", str(checkpoint), *args, "--output", "out"])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
