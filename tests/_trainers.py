"""A quiet CPU Trainer for tests: no logger, checkpoints, progress bar or model summary."""

from typing import Any

import lightning as L


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """``L.Trainer`` on one CPU device with the noisy parts off; ``kwargs`` override."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})
