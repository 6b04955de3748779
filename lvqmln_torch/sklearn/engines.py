"""Which engine trains an estimator's fit: the numpy engine (small MLP problems on the CPU,
without Lightning) or a Lightning ``Trainer``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .numpy_core import ACTIVATIONS, TRANSFERS

__all__ = ["ENGINES", "numpy_engine_unsupported", "select_engine"]

ENGINES = ("auto", "numpy", "lightning")
# Precisions the numpy engine trains in (float32 and float64, as Lightning spells them).
_NUMPY_PRECISIONS = ("None", "32", "32-true", "64", "64-true")
# engine="auto" picks the numpy engine up to this many multiply-adds per forward pass of a
# step (rows x parameters). Measured on 2 cores: the numpy engine's epochs took 0.3x
# Lightning's at 4M, 0.7x at 67M and 1.0x at 100M (more cores move the break-even down).
_NUMPY_MAX_WORK = 1 << 25


def numpy_engine_unsupported(hparams: Mapping[str, Any]) -> str | None:
    """Why a module with these hyperparameters cannot train on this engine (``None`` when it
    can): the engine covers the built-in MLP backbone with free weights, a built-in
    activation and transfer, and the GLVQ loss alone."""
    if hparams["backbone"] != "mlp":
        return f"backbone={hparams['backbone']!r} (the numpy engine trains the MLP backbone only)"
    transfer = hparams["transfer"]
    if not isinstance(transfer, str) or transfer not in TRANSFERS:
        return "a callable transfer_fn (the numpy engine knows the built-in transfers only)"
    if hparams.get("activation") is not None and hparams["activation"] not in ACTIVATIONS:
        return (
            f"activation={hparams['activation']!r} (the numpy engine has {', '.join(ACTIVATIONS)})"
        )
    if hparams.get("lipschitz") is not None:
        return f"lipschitz={hparams['lipschitz']!r} (the numpy engine trains free weights only)"
    if hparams.get("robust_eps"):
        return "robust_eps > 0 (the numpy engine trains the GLVQ loss only)"
    return None


def select_engine(
    params: Mapping[str, Any],
    hparams: Mapping[str, Any],
    accelerator: str,
    precision: Any,
    rows: int,
    n_parameters: int,
) -> str:
    """``"numpy"`` or ``"lightning"`` for a fit (see the estimator's ``engine`` parameter).

    Args:
        params: the estimator's checked parameters.
        hparams: the module's hyperparameters.
        accelerator: the Lightning accelerator.
        precision: the Lightning precision.
        rows: samples per step.
        n_parameters: the network's parameter count.

    Raises:
        ValueError: for ``engine="numpy"`` on a configuration it cannot train, naming why.
    """
    if params["engine"] == "lightning":
        return "lightning"
    reason = numpy_engine_unsupported(hparams)
    if reason is None and accelerator != "cpu":
        reason = f"accelerator={accelerator!r} (it runs on the CPU only)"
    if reason is None and str(precision) not in _NUMPY_PRECISIONS:
        reason = f"precision={precision!r} (it trains in float32 or float64 only)"
    if reason is None and (params["gradient_accumulation_steps"] or 1) > 1:
        reason = "gradient_accumulation_steps (it steps after every batch)"
    if params["engine"] == "numpy":
        if reason is not None:
            raise ValueError(
                f"engine='numpy' cannot train this configuration: {reason}; use "
                "engine='auto' (which then picks Lightning) or engine='lightning'"
            )
        return "numpy"
    # Multiply-adds of a forward pass per step: rows x (weights + prototype entries).
    return "numpy" if reason is None and rows * n_parameters <= _NUMPY_MAX_WORK else "lightning"
