"""Quiet training output for the estimator (no Lightning import: its loggers are looked up by
name)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet"]

_QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


@contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Without ``verbose``: silence Lightning's info logs (device banners, tips, stop messages)
    and every warning not raised by lvqmln itself, for the duration of the block only."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"lvqmln_torch(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
