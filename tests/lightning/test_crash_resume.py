"""Crash safety: a training process killed with SIGKILL mid-run resumes from its last
checkpoint and ends on exactly the parameters of an uninterrupted run.

The run (``tests/crash_script.py``) uses shuffled mini-batches, Adam, a warmup-cosine schedule
and EMA, so a resume must restore the optimizer moments, the scheduler step, the EMA weights
(the checkpoint's ``state_dict`` holds the EMA weights, the raw ones ride along) and replay
the remaining epochs with the same shuffles (seeded by the epoch number).

The kill happens at a known point, whatever the machine's load: a handshake, not a timer.
The child pauses after training step ``KILL_AT_BATCH`` of epoch ``KILL_AFTER_EPOCH + 1`` (so
the checkpoint of epoch ``KILL_AFTER_EPOCH`` is complete and the next epoch is partly done),
writes a marker file and blocks; the parent waits for the marker and then kills it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _paths import TESTS
from _trainers import quiet_trainer

SCRIPT = TESTS / "crash_script.py"
_spec = importlib.util.spec_from_file_location("crash_script", SCRIPT)
crash_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(crash_script)

KILL_AFTER_EPOCH = 2
KILL_AT_BATCH = 3  # of the 10 training steps of the next epoch
PAUSE_TIMEOUT_S = 600  # how long the parent waits for the child to reach the pause point


def uninterrupted() -> dict[str, torch.Tensor]:
    model, datamodule = crash_script.build()
    trainer = quiet_trainer(**crash_script.trainer_kwargs())
    trainer.fit(model, datamodule=datamodule)
    return model.state_dict()


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no output)"


def wait_for_marker(marker: Path, proc: subprocess.Popen, log: Path, timeout: float) -> dict:
    """Poll (bounded by ``timeout``) until the child writes ``marker``; return its content.

    Fails, with the child's output, if the child exits first or does not get there in time.
    """
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"the training process exited (status {proc.returncode}) before it wrote "
                f"{marker.name}; its output:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"the training process did not write {marker.name} within {timeout} s; "
                f"its output so far:\n{_tail(log)}"
            )
        time.sleep(0.05)
    return json.loads(marker.read_text())  # moved into place whole: complete once it exists


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    env["LIGHTNING_DISABLE_TIPS"] = "1"
    log = tmp_path / "child.log"
    with log.open("w") as out:  # a file, not a pipe: a chatty child can never block on it
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path)]
            + ["--pause-epoch", str(KILL_AFTER_EPOCH + 1), "--pause-batch", str(KILL_AT_BATCH)]
            + ["--pause-timeout", str(2 * PAUSE_TIMEOUT_S)],
            cwd=SCRIPT.parent.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    checkpoints = tmp_path / "checkpoints"
    try:
        paused = wait_for_marker(tmp_path / crash_script.PAUSED, proc, log, PAUSE_TIMEOUT_S)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, _tail(log)
    assert not (tmp_path / "final.pt").exists(), "the run finished before it was killed"
    assert paused["epoch"] == KILL_AFTER_EPOCH + 1 and paused["batch"] == KILL_AT_BATCH
    assert (checkpoints / f"epoch={KILL_AFTER_EPOCH}.ckpt").is_file()
    assert not (checkpoints / f"epoch={KILL_AFTER_EPOCH + 1}.ckpt").exists()

    last = checkpoints / "last.ckpt"
    assert Path(paused["last"]) == last
    state = torch.load(last, weights_only=True)  # no pickled objects in our checkpoints
    assert KILL_AFTER_EPOCH <= state["epoch"] < crash_script.EPOCHS - 1
    assert state["epoch"] == KILL_AFTER_EPOCH  # the kill point is exact now
    assert any("ExponentialMovingAverage" in key for key in state["callbacks"])

    model, datamodule = crash_script.build()
    trainer = quiet_trainer(**crash_script.trainer_kwargs())
    trainer.fit(model, datamodule=datamodule, ckpt_path=last)
    assert trainer.current_epoch == crash_script.EPOCHS

    expected = uninterrupted()
    resumed = model.state_dict()
    assert resumed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=1e-12, msg=key)
