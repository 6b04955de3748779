"""``benchmarks/gpu_check.py`` (``make gpu-check``) without CUDA: it says so, checks
nothing and exits 2 (the checks themselves need a GPU; see docs/multi-gpu.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from _paths import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_says_so_and_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU of the test machine
    run = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "no CUDA device is visible" in run.stdout and "nothing was checked" in run.stdout
    assert "| check" not in run.stdout  # no table of checks that did not run
