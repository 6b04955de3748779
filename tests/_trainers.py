"""A quiet CPU Trainer for tests: no logger, checkpoints, progress bar or model summary."""

from typing import Any

import lightning as L


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    """The one Trainer factory of the tests (modules, helpers and subprocess scripts alike).

    Args:
        **kwargs: any ``L.Trainer`` argument; each overrides the quiet default of the same name
            (e.g. ``enable_checkpointing=True`` where a test writes checkpoints, ``logger=...``
            where it reads what was logged, ``devices=2, strategy="ddp"`` in the DDP scripts).

    Returns:
        ``L.Trainer`` on one CPU device with no logger, checkpoints, progress bar or model
        summary, unless ``kwargs`` says otherwise.
    """
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})
