"""Crash safety: a training process killed with SIGKILL mid-run resumes from its last
checkpoint and ends on exactly the parameters of an uninterrupted run.

The run (``tests/crash_script.py``) uses shuffled mini-batches, Adam, a warmup-cosine schedule
and EMA, so a resume must restore the optimizer moments, the scheduler step, the EMA weights
(the checkpoint's ``state_dict`` holds the EMA weights, the raw ones ride along) and replay
the remaining epochs with the same shuffles (seeded by the epoch number).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

SCRIPT = Path(__file__).with_name("crash_script.py")
_spec = importlib.util.spec_from_file_location("crash_script", SCRIPT)
crash_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_script)

KILL_AFTER_EPOCH = 2


def uninterrupted() -> dict[str, torch.Tensor]:
    model, datamodule = crash_script.build()
    trainer = Trainer(enable_checkpointing=False, **crash_script.trainer_kwargs())
    trainer.fit(model, datamodule=datamodule)
    return model.state_dict()


def wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended before {path.name} appeared:\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.02)


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    env["LIGHTNING_DISABLE_TIPS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(tmp_path), "--sleep", "0.03"],
        cwd=SCRIPT.parent.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / "checkpoints"
    try:
        wait_for(checkpoints / f"epoch={KILL_AFTER_EPOCH}.ckpt", proc, timeout=300)
        time.sleep(0.1)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "final.pt").exists(), "the run finished before it was killed"

    last = checkpoints / "last.ckpt"
    state = torch.load(last, weights_only=True)  # no pickled objects in our checkpoints
    assert KILL_AFTER_EPOCH <= state["epoch"] < crash_script.EPOCHS - 1
    assert any("ExponentialMovingAverage" in key for key in state["callbacks"])

    model, datamodule = crash_script.build()
    trainer = Trainer(enable_checkpointing=False, **crash_script.trainer_kwargs())
    trainer.fit(model, datamodule=datamodule, ckpt_path=last)
    assert trainer.current_epoch == crash_script.EPOCHS

    expected = uninterrupted()
    resumed = model.state_dict()
    assert resumed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-12, msg=key)
