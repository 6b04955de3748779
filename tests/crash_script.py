"""A slow training run that ``tests/test_crash_resume.py`` kills with SIGKILL mid-run.

Usage::

    python tests/crash_script.py OUT_DIR [--sleep SECONDS]

Mini-batch shuffled Adam with a learning-rate schedule and EMA, float64, on iris. A
``ModelCheckpoint`` writes ``OUT_DIR/checkpoints/epoch=<k>.ckpt`` and ``last.ckpt`` at the
end of every epoch; each training step sleeps ``--sleep`` seconds so the run lasts long enough
to be killed. If it is not killed it writes ``OUT_DIR/final.pt`` (the final state dict).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin

EPOCHS = 10
MODEL_KWARGS: dict[str, Any] = {
    "hidden_sizes": [10],
    "latent_dim": 2,
    "n_prototypes_per_class": 2,
    "lr": 0.02,
    "lr_scheduler": "warmup_cosine_decay",
    "lr_scheduler_kwargs": {"warmup_steps": 20},
    "ema_decay": 0.9,
    "seed": 11,
}


class SlowSteps(Callback):
    """Sleeps after every training step (makes the run long enough to be killed)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


def build() -> tuple[LVQMLN, ArrayDataModule]:
    """The model and the datamodule (iris, standardised, batches of 16, shuffled, float64)."""
    X, y = load_builtin("iris")
    datamodule = ArrayDataModule(
        X, y, batch_size=16, shuffle=True, seed=4, standardize=True, dtype=torch.float64
    )
    return LVQMLN(**MODEL_KWARGS), datamodule


def trainer_kwargs() -> dict[str, Any]:
    """Trainer settings shared by the killed, the resumed and the uninterrupted runs."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "precision": "64-true",
        "max_epochs": EPOCHS,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sleep", type=float, default=0.03)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = ModelCheckpoint(
        dirpath=args.out_dir / "checkpoints",
        filename="{epoch}",
        save_top_k=-1,
        save_last=True,
        every_n_epochs=1,
    )
    model, datamodule = build()
    trainer = Trainer(callbacks=[checkpoint, SlowSteps(args.sleep)], **trainer_kwargs())
    trainer.fit(model, datamodule=datamodule)
    torch.save(model.state_dict(), args.out_dir / "final.pt")


if __name__ == "__main__":
    main()
