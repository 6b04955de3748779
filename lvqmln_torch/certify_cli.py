"""``lvqmln certify``: certified L2 radii of a checkpoint's predictions as a CSV file, and the
curve of certified accuracy against the radius as a picture.

Example::

    lvqmln certify lightning_logs/version_0/checkpoints/last.ckpt data.csv --output certified

Inputs as for ``lvqmln explain`` (a ``.npy`` array with ``--labels y.npy``, or a ``.csv`` file
with a header). Radii are in the units of the inputs as given: when the checkpoint's
datamodule standardised its inputs by ``s``, a radius of the standardised inputs is multiplied
by ``min(s)`` (a sound bound in raw units). Everything is computed before anything is written;
each file is written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.certify import check_eps
from .core.files import atomic_write_text
from .data.labels import encode_labels
from .io.inputs import (
    checkpoint_parser,
    input_radius_scale,
    read_inputs,
    report_written,
    standardization,
)

__all__ = ["main", "run_certify"]

DEFAULT_EPS = (0.5, 1.0, 1.58)


def _csv(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def run_certify(
    checkpoint: str | Path,
    inputs: str | Path,
    output: str | Path = "certified",
    labels: str | Path | None = None,
    target: str | None = None,
    eps: Sequence[float] = DEFAULT_EPS,
    device: str = "cpu",
) -> list[Path]:
    """Certify a checkpoint's predictions on ``inputs``: write ``radii.csv`` (per sample the
    predicted label and its certified L2 radius, with labels also the true label and whether
    it is correct), ``certified.csv`` (per ``eps``: the share of certified predictions and,
    with labels, the certified accuracy) and ``certified_accuracy.png`` (the curve against
    the radius) into ``output``.

    Args:
        checkpoint: an LVQMLN ``.ckpt`` file.
        inputs: a ``.npy`` array or a ``.csv`` file with a header.
        output: the folder to write into (created).
        labels: a ``.npy`` file of labels for ``.npy`` inputs.
        target: the label column of a CSV file (default: the checkpoint's datamodule's
            ``target``, else ``label``); used when present.
        eps: the radii of ``certified.csv`` (L2, in the inputs' units).
        device: where to compute (``"cpu"``, ``"cuda"``, …).

    Returns:
        The files written.

    Raises:
        FileNotFoundError: for a missing file.
        TypeError: for a checkpoint whose custom backbone has no ``lipschitz_bound()``.
        ValueError: for unreadable or mismatched inputs, or a bad ``eps``.
    """
    from .io.checkpoint import load_checkpoint, read_checkpoint
    from .viz.robustness_plots import certified_curve, plot_certified_accuracy

    eps_grid = check_eps(list(eps)).numpy()
    raw = read_checkpoint(checkpoint)
    model = load_checkpoint(checkpoint, map_location="cpu").to(torch.device(device))
    X_raw, y, _ = read_inputs(Path(inputs), None if labels is None else Path(labels), target, raw)
    model.check_inputs(torch.as_tensor(X_raw))  # the shape, before standardising
    stats = standardization(raw)
    X = X_raw if stats is None else (X_raw - stats[0]) / stats[1]
    classes = np.asarray(model.classes_)
    radius = model.certify(X).cpu().numpy() * input_radius_scale(stats)
    predicted = classes[model.predict_indices(X).cpu().numpy()]
    header = ["sample", "label", "radius"]
    correct = None
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"the labels must have shape ({len(X)},), got {y.shape}")
        encode_labels(y, classes)  # unknown labels are an error, not silently wrong
        correct = predicted == y
        header += ["true_label", "correct"]
    rows: list[list[Any]] = [header]
    for i in range(len(X)):
        row = [i, predicted[i], repr(float(radius[i]))]
        rows.append(row if correct is None else [*row, y[i], bool(correct[i])])
    summary: list[list[Any]] = [
        ["eps", "certified_share"] + ([] if y is None else ["certified_accuracy"])
    ]
    _, share = certified_curve(radius, None, eps_grid)
    accuracy = None if correct is None else certified_curve(radius, correct, eps_grid)[1]
    for k, e in enumerate(eps_grid):
        summary.append(
            [repr(float(e)), repr(float(share[k]))]
            + ([] if accuracy is None else [repr(float(accuracy[k]))])
        )
    name = "certified accuracy" if correct is not None else "predictions certified"
    figure = plot_certified_accuracy(
        {name: certified_curve(radius, correct)},
        marks=eps_grid,
        ylabel="certified accuracy" if correct is not None else "share of certified predictions",
        title=f"Certified L2 robustness ({len(X)} samples)",
    )
    from .viz.plotting import save_figure

    out = Path(output)
    written = [atomic_write_text(out / "radii.csv", _csv(rows))]
    written.append(atomic_write_text(out / "certified.csv", _csv(summary)))
    written.append(save_figure(figure, out / "certified_accuracy.png"))
    return written


def main(args: Sequence[str] | None = None) -> None:
    """``lvqmln certify`` (exit status 2 with a one-line error for a bad argument)."""
    parser = checkpoint_parser(
        "lvqmln certify",
        "Certified L2 radii of a checkpoint's predictions: radii.csv, certified.csv "
        "and certified_accuracy.png.",
        output="certified",
    )
    parser.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=list(DEFAULT_EPS),
        metavar="R",
        help="radii for certified.csv (default: 0.5 1.0 1.58)",
    )
    ns = parser.parse_args(None if args is None else list(args))
    report_written(
        parser,
        lambda: run_certify(
            ns.checkpoint, ns.inputs, ns.output, ns.labels, ns.target, ns.eps, ns.device
        ),
    )
