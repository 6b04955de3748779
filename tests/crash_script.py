"""A training run that ``tests/lightning/test_crash_resume.py`` kills with SIGKILL mid-run.

Usage::

    python tests/crash_script.py OUT_DIR [--pause-epoch K --pause-batch B] [--pause-timeout S]

Mini-batch shuffled Adam with a learning-rate schedule and EMA, float64, on iris. A
``ModelCheckpoint`` writes ``OUT_DIR/checkpoints/epoch=<k>.ckpt`` and ``last.ckpt`` at the
end of every epoch. If it is not killed it writes ``OUT_DIR/final.pt`` (the final state dict).

With ``--pause-epoch K``, the run stops at a known point for its parent to kill it: after
training step ``B`` (0-based, ``--pause-batch``) of epoch ``K``, which comes after the
checkpoint of epoch ``K - 1`` is completely written, it writes ``OUT_DIR/paused`` (the
handshake: "kill me now") and blocks. The block is bounded: if nobody kills it within
``--pause-timeout`` seconds, the process exits with status 3 (and never writes ``final.pt``),
so an orphaned child cannot linger.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _trainers import quiet_trainer
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin

EPOCHS = 10
PAUSED = "paused"  # the marker file, in OUT_DIR
PAUSE_TIMEOUT_STATUS = 3
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


class PauseForKill(Callback):
    """After training step ``batch`` of epoch ``epoch``: write the marker file, then block.

    By then ``ModelCheckpoint`` has written the checkpoint of the previous epoch (it saves at
    the end of each training epoch, and this hook runs in a later epoch); the marker records
    which checkpoint that is. The marker is written to a temporary name and moved into place,
    so its existence means its content is complete.
    """

    def __init__(
        self, marker: Path, checkpoint: ModelCheckpoint, epoch: int, batch: int, timeout: float
    ) -> None:
        self.marker = marker
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.batch = batch
        self.timeout = timeout

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch != self.epoch or batch_idx != self.batch:
            return
        last = Path(self.checkpoint.last_model_path)
        if not last.is_file():
            sys.exit(f"no checkpoint written before the pause point: {last!s}")
        info = {"epoch": trainer.current_epoch, "batch": batch_idx, "last": str(last)}
        partial = self.marker.with_name(self.marker.name + ".tmp")
        partial.write_text(json.dumps(info))
        os.replace(partial, self.marker)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"not killed within {self.timeout} s of pausing; giving up", file=sys.stderr)
        sys.stderr.flush()
        os._exit(PAUSE_TIMEOUT_STATUS)  # do not finish the run: no final.pt


def build() -> tuple[LVQMLN, ArrayDataModule]:
    """The model and the datamodule (iris, standardised, batches of 16, shuffled, float64)."""
    X, y = load_builtin("iris")
    datamodule = ArrayDataModule(
        X, y, batch_size=16, shuffle=True, seed=4, standardize=True, dtype=torch.float64
    )
    return LVQMLN(**MODEL_KWARGS), datamodule


def trainer_kwargs() -> dict[str, Any]:
    """Settings of the quiet test Trainer shared by the killed, the resumed and the
    uninterrupted runs."""
    return {"precision": "64-true", "max_epochs": EPOCHS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--pause-epoch", type=int, default=None)
    parser.add_argument("--pause-batch", type=int, default=0)
    parser.add_argument("--pause-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = ModelCheckpoint(
        dirpath=args.out_dir / "checkpoints",
        filename="{epoch}",
        save_top_k=-1,
        save_last=True,
        every_n_epochs=1,
    )
    callbacks: list[Callback] = [checkpoint]
    if args.pause_epoch is not None:
        callbacks.append(
            PauseForKill(
                args.out_dir / PAUSED,
                checkpoint,
                epoch=args.pause_epoch,
                batch=args.pause_batch,
                timeout=args.pause_timeout,
            )
        )
    model, datamodule = build()
    trainer = quiet_trainer(callbacks=callbacks, enable_checkpointing=True, **trainer_kwargs())
    trainer.fit(model, datamodule=datamodule)
    torch.save(model.state_dict(), args.out_dir / "final.pt")


if __name__ == "__main__":
    main()
