"""The ``lvqmln`` CLI (mostly in-process through ``run_cli(args)``) and ``make demo``."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _paths import CONFIGS
from sklearn.datasets import load_iris

from lvqmln_torch import LVQMLN
from lvqmln_torch.cli import main, run_cli
from lvqmln_torch.demo import main as demo_main

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _assert_primitive(value, where="hyper_parameters"):
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r}"
            _assert_primitive(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _assert_primitive(item, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, bool | int | float | str), (
            f"{where} is a {type(value).__name__}, not a primitive"
        )


def _checkpoint(root: Path) -> Path:
    found = sorted(root.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    assert len(found) == 1, found
    return found[0]


def _read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_builtin_fit_test_predict_round_trip(tmp_path, capsys):
    root = ["--trainer.default_root_dir", str(tmp_path)]
    config = ["--config", str(CONFIGS / "iris_mlp.yaml")]
    cli = run_cli(["fit", *config, *root, *QUIET, "--trainer.max_epochs", "150"])
    assert cli.trainer.current_epoch == 150
    ckpt = _checkpoint(tmp_path)
    assert f"Checkpoint written to {ckpt}" in capsys.readouterr().out

    # The checkpoint holds primitives only: it loads with weights_only=True.
    raw = torch.load(ckpt, weights_only=True)
    _assert_primitive(raw["hyper_parameters"])
    _assert_primitive(raw.get("datamodule_hyper_parameters", {}))
    assert raw["hyper_parameters"]["in_features"] == 4
    assert raw["hyper_parameters"]["classes"] == [0, 1, 2]
    model = LVQMLN.load_from_checkpoint(ckpt, weights_only=True)

    cli = run_cli(["test", *config, *root, *QUIET, "--ckpt_path", str(ckpt)])
    metrics = cli.trainer.callback_metrics
    assert float(metrics["test_acc"]) >= 0.9

    out = tmp_path / "pred" / "iris.csv"
    cli = run_cli(
        ["predict", *config, *root, *QUIET, "--ckpt_path", str(ckpt)]
        + ["--predict_output", str(out), "--predict_latent", "true"]
    )
    assert f"Predictions written to {out}" in capsys.readouterr().out
    rows = _read_predictions(out)
    x_test, y_test = cli.datamodule.test_dataloader().tensors[:2]
    assert len(rows) == len(x_test) == 30
    assert list(rows[0]) == ["prediction", "proba_0", "proba_1", "proba_2", "latent_0", "latent_1"]
    assert [int(r["prediction"]) for r in rows] == model.predict(x_test).tolist()
    proba = np.array([[float(r[f"proba_{c}"]) for c in range(3)] for r in rows])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(proba, model.predict_proba(x_test).numpy(), rtol=1e-6, atol=1e-7)
    latent = np.array([[float(r["latent_0"]), float(r["latent_1"])] for r in rows])
    np.testing.assert_allclose(latent, model.transform(x_test).numpy(), rtol=1e-6, atol=1e-7)
    accuracy = np.mean([int(r["prediction"]) for r in rows] == y_test.numpy())
    assert accuracy == pytest.approx(float(metrics["test_acc"]))


def test_csv_fit_test_predict_round_trip(tmp_path):
    bunch = load_iris()
    train, new = tmp_path / "flowers.csv", tmp_path / "new.csv"
    header = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with train.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*header, "species"])
        for x, t in zip(bunch.data, bunch.target):
            writer.writerow([*x.tolist(), bunch.target_names[t]])
    rows_new = [5, 55, 105, 140]
    with new.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i in rows_new:
            writer.writerow(bunch.data[i].tolist())

    data = ["--data.path", str(train), "--data.target", "species", "--data.val_size", "0.2"]
    root = ["--trainer.default_root_dir", str(tmp_path)]
    model_args = ["--model.lr", "0.05"]
    run_cli(["fit", *data, *model_args, *root, *QUIET, "--trainer.max_epochs", "100"])
    ckpt = _checkpoint(tmp_path)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["classes"] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    cli = run_cli(["test", *data, *root, *QUIET, "--ckpt_path", str(ckpt)])
    assert float(cli.trainer.callback_metrics["test_acc"]) >= 0.85
    cli = run_cli(["validate", *data, *root, *QUIET, "--ckpt_path", str(ckpt)])
    assert float(cli.trainer.callback_metrics["val_acc"]) >= 0.85

    cli = run_cli(
        ["predict", *data, "--data.predict_path", str(new), *root, *QUIET]
        + ["--ckpt_path", str(ckpt)]
    )
    rows = _read_predictions(tmp_path / "predictions.csv")  # default: default_root_dir
    assert list(rows[0]) == ["prediction", "proba_setosa", "proba_versicolor", "proba_virginica"]
    model = LVQMLN.load_from_checkpoint(ckpt, weights_only=True)
    x_new = cli.datamodule.predict_dataloader().tensors[0]
    assert len(rows) == len(rows_new)
    assert [r["prediction"] for r in rows] == model.predict(x_new).tolist()
    assert rows[0]["prediction"] == "setosa"


def test_main_gives_exit_status_zero(tmp_path):
    # The console script runs ``sys.exit(main())``: main must return None (status 0).
    args = ["fit", "--config", str(CONFIGS / "iris_mlp.yaml"), "--trainer.fast_dev_run", "true"]
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main([*args, *QUIET, "--trainer.default_root_dir", str(tmp_path)]))
    assert exit_info.value.code is None


@pytest.mark.slow
def test_console_script_exits_zero(tmp_path):
    script = Path(sys.executable).with_name("lvqmln")
    command = [str(script), "fit", "--config", str(CONFIGS / "iris_mlp.yaml")]
    command += ["--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)]
    env = {**os.environ, "LIGHTNING_DISABLE_TIPS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Trainer.fit" in done.stderr + done.stdout


def test_fit_resumes_from_a_checkpoint(tmp_path):
    args = ["--config", str(CONFIGS / "iris_mlp.yaml"), *QUIET]
    args += ["--trainer.default_root_dir", str(tmp_path)]
    run_cli(["fit", *args, "--trainer.max_epochs", "5"])
    ckpt = _checkpoint(tmp_path)
    cli = run_cli(["fit", *args, "--trainer.max_epochs", "8", "--ckpt_path", str(ckpt)])
    assert cli.trainer.current_epoch == 8
    assert cli.trainer.global_step == 8  # full batch: 5 restored + 3 new optimizer steps


def test_latent_plot_callback_from_the_command_line(tmp_path):
    run_cli(
        ["fit", "--config", str(CONFIGS / "iris_mlp.yaml"), "--trainer.fast_dev_run", "true"]
        + ["--trainer.callbacks+=LatentSpacePlot", f"--trainer.callbacks.dirpath={tmp_path}"]
        + [*QUIET, "--trainer.default_root_dir", str(tmp_path)]
    )
    assert (tmp_path / "latent_space.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_bar_is_on_by_default(tmp_path):
    cli = run_cli(
        ["fit", "--config", str(CONFIGS / "iris_mlp.yaml"), "--trainer.fast_dev_run", "true"]
        + ["--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.progress_bar_callback is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--data", "CsvDataModule", "--data.path", "{tmp}/missing.csv"],
            "FileNotFoundError: CSV file not found: '{tmp}/missing.csv'",
        ),
        (
            ["--data.path", "{tmp}/d.csv", "--data.target", "class"],
            "ValueError: target column 'class' not found in '{tmp}/d.csv'; its columns are "
            "['a', 'b', 'label']",
        ),
        (
            ["--data.name", "iris", "--model.optimizer", "adamm"],
            "ValueError: Unknown optimizer 'adamm'. Valid optimizers: adam",
        ),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, capsys, args, message):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,x\n3,4,y\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *args, "--trainer.default_root_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_predict_only_options_belong_to_predict(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "--data.name", "iris", "--predict_output", str(tmp_path / "p.csv")])
    assert "predict_output" in capsys.readouterr().err


def test_demo_trains_tests_and_leaves_a_checkpoint(tmp_path, capsys):
    result = demo_main(["--epochs", "40", "--output", str(tmp_path), "--no-progress-bar"])
    out = capsys.readouterr().out
    assert "Test accuracy:" in out and "Test loss:" in out
    assert str(result["checkpoint"].resolve()) in out
    assert result["checkpoint"] == tmp_path / "iris.ckpt"
    model = LVQMLN.load_from_checkpoint(result["checkpoint"], weights_only=True)
    assert model.classes_.tolist() == [0, 1, 2]
    assert 0.0 <= result["test_acc"] <= 1.0
    assert result["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


USER_MODULE = """
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Blobs(L.LightningDataModule):
    def __init__(self, batch_size: int = 16, seed: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.n_classes = 2

    def setup(self, stage):
        g = torch.Generator().manual_seed(self.hparams.seed)
        y = torch.arange(120) % 2
        x = torch.randn(120, 3, generator=g) + 3 * y[:, None]
        self.data = TensorDataset(x, y)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.hparams.batch_size, shuffle=True)

    def test_dataloader(self):
        return DataLoader(self.data, batch_size=120)


class Linear2(torch.nn.Module):
    def __init__(self, in_features: int = 3):
        super().__init__()
        self.layer = torch.nn.Linear(in_features, 2)

    def forward(self, x):
        return self.layer(x)
"""


def test_a_users_datamodule_and_backbone_by_class_path_fit_and_test(tmp_path, monkeypatch):
    (tmp_path / "user_code.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "run.yaml"
    config.write_text(
        "model:\n  backbone:\n    class_path: user_code.Linear2\n  lr: 0.05\n"
        "data:\n  class_path: user_code.Blobs\n  init_args:\n    batch_size: 20\n"
        "trainer:\n  max_epochs: 5\n"
    )
    root = ["--trainer.default_root_dir", str(tmp_path / "out"), *QUIET]
    cli = run_cli(["fit", "--config", str(config), *root])
    assert type(cli.model.backbone).__name__ == "Linear2"
    assert cli.model.hparams.backbone == "custom" and cli.model.hparams.n_classes == 2
    # the checkpoint says backbone='custom'; the config's class_path rebuilds the module
    cli = run_cli(
        ["test", "--config", str(config), "--ckpt_path", str(_checkpoint(tmp_path / "out")), *root]
    )
    assert float(cli.trainer.callback_metrics["test_acc"]) > 0.9


def test_the_console_script_finds_user_modules_in_the_current_folder(tmp_path):
    (tmp_path / "user_code.py").write_text(USER_MODULE)
    command = [
        str(Path(sys.executable).parent / "lvqmln"), "fit",  # the console script
        "--data", "user_code.Blobs", "--model.n_classes", "2", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(tmp_path / "out"), *QUIET,
    ]  # fmt: skip
    env = {**os.environ, "LIGHTNING_DISABLE_TIPS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Checkpoint written to" in done.stdout
