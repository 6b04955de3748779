"""Every shipped config runs (fast_dev_run), the trainer presets compose with them, and (slow)
every config reaches a good held-out accuracy."""

import os
import subprocess
import sys

import pytest
import torch
from _paths import ROOT

from lvqmln_torch.cli import LVQMLNCLI, run_cli

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

CONFIGS = ROOT / "configs"
MODEL_CONFIGS = sorted(p.name for p in CONFIGS.glob("*.yaml"))
PRESETS = sorted(p.name for p in (CONFIGS / "trainer").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]

# Test accuracy each config must reach after its full fit (slow test).
MIN_TEST_ACC = {
    "iris_mlp.yaml": 0.93,
    "wine_mlp.yaml": 0.9,
    "breast_cancer_mlp.yaml": 0.93,
    "digits_mlp.yaml": 0.95,
    "digits_cnn.yaml": 0.95,
    "custom_datamodule.yaml": 0.93,
}


class _ParseOnly(LVQMLNCLI):
    """Parses and composes configs without building anything (for presets that need
    hardware this machine may not have)."""

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def test_the_expected_configs_exist():
    assert sorted(MIN_TEST_ACC) == MODEL_CONFIGS
    assert PRESETS == ["bf16.yaml", "cpu.yaml", "ddp.yaml", "gpu.yaml"]


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_config_runs_fast_dev_run(tmp_path, name):
    cli = run_cli(
        ["fit", "--config", str(CONFIGS / name), "--trainer.fast_dev_run", "true", *QUIET]
        + ["--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.state.finished
    assert cli.model.is_built and cli.model.hparams.n_classes == cli.datamodule.n_classes
    assert torch.isfinite(cli.trainer.callback_metrics["train_loss"])


@pytest.mark.parametrize("preset", ["cpu.yaml", "bf16.yaml"])
def test_presets_compose_and_run(tmp_path, preset):
    cli = run_cli(
        ["fit", "--config", str(CONFIGS / "iris_mlp.yaml")]
        + ["--config", str(CONFIGS / "trainer" / preset), "--trainer.fast_dev_run", "true"]
        + [*QUIET, "--trainer.default_root_dir", str(tmp_path)]
    )
    expected = {"cpu.yaml": "32-true", "bf16.yaml": "bf16-mixed"}[preset]
    assert cli.trainer.precision == expected
    assert cli.trainer.state.finished
    assert cli.model.hparams.latent_dim == 2  # the model config survived the composition


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("gpu.yaml", {"accelerator": "gpu", "devices": 1, "precision": "32-true"}),
        ("ddp.yaml", {"strategy": "ddp", "devices": "auto", "num_nodes": 1}),
        ("bf16.yaml", {"precision": "bf16-mixed"}),
        ("cpu.yaml", {"accelerator": "cpu", "devices": 1}),
    ],
)
def test_presets_only_set_trainer_fields(preset, expected):
    cli = _ParseOnly(
        args=["fit", "--config", str(CONFIGS / "digits_cnn.yaml")]
        + ["--config", str(CONFIGS / "trainer" / preset)]
    )
    trainer = cli.config.fit.trainer
    for key, value in expected.items():
        assert trainer[key] == value, key
    assert trainer.max_epochs == 30  # from the model config, untouched by the preset
    assert cli.config.fit.model.backbone == "cnn"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_preset_runs(tmp_path):
    cli = run_cli(
        ["fit", "--config", str(CONFIGS / "digits_cnn.yaml")]
        + ["--config", str(CONFIGS / "trainer" / "gpu.yaml"), "--trainer.fast_dev_run", "true"]
        + [*QUIET, "--trainer.default_root_dir", str(tmp_path)]
    )
    assert cli.trainer.state.finished and cli.model.device.type == "cuda"


@pytest.mark.slow
def test_ddp_preset_runs_two_cpu_processes(tmp_path):
    """The ddp preset with two CPU processes, through the console entry point (a subprocess:
    DDP re-launches the command for rank 1)."""
    command = [
        sys.executable, "-m", "lvqmln_torch.cli", "fit",
        "--config", str(CONFIGS / "iris_mlp.yaml"),
        "--config", str(CONFIGS / "trainer" / "ddp.yaml"),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.max_epochs", "3", *QUIET,
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "LIGHTNING_DISABLE_TIPS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Checkpoint written to" in done.stdout
    assert len(list(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_config_reaches_its_accuracy(tmp_path, name):
    config = ["--config", str(CONFIGS / name), *QUIET, "--trainer.default_root_dir", str(tmp_path)]
    run_cli(["fit", *config])
    ckpt = next(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    cli = run_cli(["test", *config, "--ckpt_path", str(ckpt)])
    assert float(cli.trainer.callback_metrics["test_acc"]) >= MIN_TEST_ACC[name]
