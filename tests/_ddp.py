"""What the two-process DDP tests share: the float64 CPU Trainer their scripts fit with, and
running such a script (Lightning relaunches it for rank 1; DDP cannot run under pytest)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from _trainers import quiet_trainer
from lightning.pytorch import Trainer


def ddp_trainer(devices: int, epochs: int, callbacks: list[Any]) -> Trainer:
    """A quiet float64 CPU Trainer on ``devices`` processes (``ddp`` when more than one)."""
    return quiet_trainer(
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        precision="64-true",
        max_epochs=epochs,
        callbacks=callbacks,
    )


def load_script(script: Path) -> ModuleType:
    """Import a DDP script as a module (for its cases and single-process runs)."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_ddp_script(script: Path, out: Path, timeout: float) -> None:
    """Run ``script OUT --devices 2`` in a fresh environment (no rank variables inherited)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env["LIGHTNING_DISABLE_TIPS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), "--devices", "2"],
        cwd=script.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"DDP script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
