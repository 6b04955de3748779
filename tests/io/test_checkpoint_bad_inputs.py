"""The bad-input catalogue of SPEC §3 for checkpoints: truncated, random and mismatched files,
loaded or resumed from; a failed load leaves the file as it was. The harness, its fixtures and the
shared data are in ``tests/_bad_inputs.py``."""

from __future__ import annotations

import os

import pytest
from _bad_inputs import X, Y, cases, check, corrupt_copy, random_bytes, short_trainer

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.io.checkpoint import CheckpointError, load_checkpoint


# --------------------------------------------------------------------------- checkpoints
@cases(
    (
        "module-truncated",
        lambda c: load_checkpoint(corrupt_copy(c, c.model_checkpoint)),
        CheckpointError,
        r"is truncated or corrupt and cannot be read",
    ),
    (
        "module-random-bytes",
        lambda c: load_checkpoint(random_bytes(c)),
        CheckpointError,
        r"is truncated or corrupt and cannot be read",
    ),
    (
        "module-other-configuration",
        lambda c: load_checkpoint(c.model_checkpoint, hidden_sizes=[7]),
        CheckpointError,
        r"(?s)another configuration \(hidden_sizes=\[10\] in the checkpoint, \[7\] requested\)"
        r".*size mismatch for backbone\.layers\.0\.weight",
    ),
    (
        "module-resume-other-configuration",
        lambda c: short_trainer(max_epochs=3).fit(
            LVQMLN(hidden_sizes=[7]), ArrayDataModule(X, Y), ckpt_path=c.model_checkpoint
        ),
        RuntimeError,
        r"size mismatch for backbone.layers.0.weight",
    ),
)
def test_corrupt_or_mismatched_checkpoint(ctx, action, error, match):
    check(ctx, action, error, match)


# --------------------------------------------------------------------------- nothing half-written
def test_loading_a_damaged_checkpoint_does_not_touch_it(ctx):
    path = corrupt_copy(ctx, ctx.model_checkpoint)
    before = path.read_bytes()
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(ctx.tmp_path)) == ["corrupt.ckpt"]
