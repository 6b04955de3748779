"""The inputs of the checkpoint command lines (``lvqmln explain``, ``lvqmln certify``): a
``.npy`` array or a ``.csv`` file with a header, and the standardisation that the checkpoint's
datamodule applied to its training inputs; and the arguments and error handling they share."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "checkpoint_parser",
    "datamodule_setting",
    "input_radius_scale",
    "read_inputs",
    "report_written",
    "standardization",
]


def standardization(checkpoint: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """The training statistics an ArrayDataModule stored in the checkpoint, if any."""
    for value in checkpoint.values():
        if isinstance(value, dict) and set(value) == {"mean", "scale"}:
            return np.asarray(value["mean"]), np.asarray(value["scale"])
    return None


def datamodule_setting(checkpoint: dict[str, Any], name: str) -> Any:
    return (checkpoint.get("datamodule_hyper_parameters") or {}).get(name)


def read_inputs(
    path: Path, labels: Path | None, target: str | None, checkpoint: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """``(X, y or None, feature names or None)`` from a ``.npy`` or ``.csv`` file."""
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    names = None
    if path.suffix == ".npy":
        X = np.load(path, allow_pickle=False)
        y = None
        if labels is not None:
            if not labels.is_file():
                raise FileNotFoundError(f"labels file {str(labels)!r} does not exist")
            y = np.load(labels, allow_pickle=False)
    elif path.suffix == ".csv":
        from ..data.csv_read import read_csv_table

        if labels is not None:
            raise ValueError("--labels is for .npy inputs; a CSV file holds its label column")
        target = target or datamodule_setting(checkpoint, "target") or "label"
        features = datamodule_setting(checkpoint, "features")
        X, y, names = read_csv_table(path, target, features, require_target=False)
    else:
        raise ValueError(f"input file {str(path)!r} must be .npy or .csv, not {path.suffix!r}")
    if not np.issubdtype(np.asarray(X).dtype, np.number):
        raise ValueError(f"{str(path)!r} does not hold numbers (dtype {np.asarray(X).dtype})")
    return np.asarray(X, dtype=np.float64), y, names


def input_radius_scale(stats: tuple[np.ndarray, np.ndarray] | None) -> float:
    """The factor from a certified radius of the model's (standardised) inputs to one of the
    raw inputs: ``x ↦ (x − m) / s`` is ``1 / min(s)``-Lipschitz, so a radius ``r`` of the
    standardised inputs is at least ``r · min(s)`` in raw units (1 without standardisation)."""
    if stats is None:
        return 1.0
    return float(np.min(np.abs(stats[1])))


def checkpoint_parser(prog: str, description: str, output: str) -> argparse.ArgumentParser:
    """The parser of a checkpoint command line, with the arguments they all take: the
    checkpoint, the inputs, ``--output`` (default ``output``), ``--labels``, ``--target`` and
    ``--device``; the command adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("checkpoint", help="the LVQMLN .ckpt file")
    parser.add_argument("inputs", help="a .npy array or a .csv file with a header")
    parser.add_argument("--output", default=output, help="output folder")
    parser.add_argument("--labels", default=None, help="a .npy file of labels (.npy inputs)")
    parser.add_argument("--target", default=None, help="the label column of a CSV file")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    return parser


def report_written(parser: argparse.ArgumentParser, run: Callable[[], Sequence[Path]]) -> None:
    """Run a command and print the files it wrote; a bad argument, input or checkpoint ends
    the program with exit status 2 and a one-line error (``parser.error``)."""
    from sklearn.exceptions import NotFittedError

    from .checkpoint import CheckpointError

    try:
        written = run()
    except (ValueError, TypeError, FileNotFoundError, CheckpointError, NotFittedError) as err:
        parser.error(f"{type(err).__name__}: {err}")
    for path in written:
        print(f"Written {path}", flush=True)
