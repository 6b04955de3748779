"""Safe checkpoint loading with clear errors.

``torch.load`` reports a truncated, empty or garbled file as an ``OSError``, ``EOFError`` or an
unpickling error that suggests ``weights_only=False``; these helpers always load with
``weights_only=True`` (LVQMLN checkpoints hold only tensors and primitives, also with the EMA,
lookahead, RestoreBest and LossConvergence callbacks) and say what is wrong instead.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..lightning.model import LVQMLN

__all__ = ["CheckpointError", "load_checkpoint", "read_checkpoint"]

_REQUIRED_KEYS = ("state_dict", "hyper_parameters")


class CheckpointError(ValueError):
    """A file that is not a readable LVQMLN checkpoint."""


def _read_bytes(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    return path.read_bytes()


def _parse(raw: bytes, path: str | os.PathLike, map_location: Any) -> dict[str, Any]:
    if not raw:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes)")
    try:
        checkpoint = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as err:  # torch reports damage as many different exception types
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds a pickled Python object ({unsafe.group(1)}); "
                "a safe load (weights_only=True) refuses it, and LVQMLN checkpoints never "
                "need one: it was not written by LVQMLN, or it was tampered with"
            ) from err
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        reason = detail.group(1) if detail else f"{type(err).__name__}: {str(err)[:200]}"
        raise CheckpointError(
            f"checkpoint {str(path)!r} ({len(raw)} bytes) is truncated or corrupt and cannot "
            f"be read ({reason})"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a Lightning "
            "checkpoint dictionary"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in checkpoint]
    if missing or "prototypes" not in checkpoint["state_dict"]:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not an LVQMLN checkpoint: "
            + (f"it lacks {missing}" if missing else "its state_dict has no 'prototypes'")
        )
    return checkpoint


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load an LVQMLN checkpoint file as a dictionary, with ``weights_only=True``.

    Use it to validate a file before ``Trainer.fit(ckpt_path=...)``, whose own errors for a
    damaged file are unclear.

    Args:
        path: the ``.ckpt`` file.
        map_location: where to put the tensors (``torch.load``'s argument).

    Returns:
        The checkpoint dictionary (``state_dict``, ``hyper_parameters``, loop and callback
        states, ...).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is empty, truncated, corrupt, unsafe to unpickle, or not an
            LVQMLN checkpoint.
    """
    return _parse(_read_bytes(path), path, map_location)


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = None, strict: bool = True, **overrides: Any
) -> LVQMLN:
    """An [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN] from a checkpoint, loaded with
    ``weights_only=True``: ``LVQMLN.load_from_checkpoint`` with clear errors.

    Args:
        path: the ``.ckpt`` file.
        map_location: where to put the tensors (default: where they were saved, CPU if that
            device is unavailable).
        strict: require the checkpoint's and the model's parameter names to match.
        **overrides: hyperparameters to override (pass ``backbone=<module>`` again for a
            custom backbone).

    Returns:
        The model, in eval mode, ready for ``predict`` / ``predict_proba`` / ``transform``.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: the file is damaged or not an LVQMLN checkpoint, or it was written
            by a model of another configuration (the message names what differs).
    """
    raw = _read_bytes(path)
    checkpoint = _parse(raw, path, map_location)
    if checkpoint["hyper_parameters"].get("backbone") == "custom" and not isinstance(
        overrides.get("backbone"), torch.nn.Module
    ):
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained with a custom backbone: pass the same "
            "nn.Module again as backbone=..."
        )
    try:
        model = LVQMLN.load_from_checkpoint(
            io.BytesIO(raw),
            map_location=map_location,
            strict=strict,
            weights_only=True,
            **overrides,
        )
    except TypeError as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not hold LVQMLN hyperparameters ({err})"
        ) from err
    except RuntimeError as err:  # load_state_dict: size mismatches, missing / unexpected keys
        saved = checkpoint["hyper_parameters"]
        differing = [
            f"{name}={saved[name]!r} in the checkpoint, {value!r} requested"
            for name, value in overrides.items()
            if name in saved and not isinstance(value, torch.nn.Module) and saved[name] != value
        ]
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written by an LVQMLN of another configuration"
            + (f" ({'; '.join(differing)})" if differing else "")
            + f": {err}"
        ) from err
    model.eval()
    return model
