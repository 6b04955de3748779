"""``lvqmln explain``: explanations of a checkpoint's predictions as a CSV file, and pictures
of the prototypes' exemplars and of the accuracy-rejection curve.

Example::

    lvqmln explain lightning_logs/version_0/checkpoints/last.ckpt data.csv --output explained

Inputs are a ``.npy`` array (``(n, d)`` or ``(n, C, H, W)``; labels from ``--labels y.npy``)
or a ``.csv`` file with a header (the feature columns, and the label column if present). When
the checkpoint's datamodule standardised its inputs, its statistics are applied first.
Everything is computed before anything is written; each file is written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.files import atomic_write_text
from .data.labels import encode_labels
from .io.inputs import (
    checkpoint_parser,
    input_radius_scale,
    read_inputs,
    report_written,
    standardization,
)

__all__ = ["main", "run_explain"]


def _explanations_csv(
    info: dict[str, np.ndarray], classes: np.ndarray, y: Any, radius: np.ndarray | None
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["sample", "label", "confidence", "prototype", "distance"]
    header += ["rival_label", "rival_prototype", "rival_distance"]
    header += [] if radius is None else ["radius"]
    header += [] if y is None else ["true_label", "correct"]
    writer.writerow(header)
    label, rival = classes[info["label"]], classes[info["rival_label"]]
    for i in range(len(label)):
        row = [i, label[i], repr(float(info["confidence"][i])), int(info["prototype"][i])]
        row += [repr(float(info["distance"][i])), rival[i], int(info["rival_prototype"][i])]
        row += [repr(float(info["rival_distance"][i]))]
        if radius is not None:
            row.append(repr(float(radius[i])))
        if y is not None:
            row += [y[i], bool(label[i] == y[i])]
        writer.writerow(row)
    return buffer.getvalue()


def run_explain(
    checkpoint: str | Path,
    inputs: str | Path,
    output: str | Path = "explanations",
    labels: str | Path | None = None,
    target: str | None = None,
    k: int = 5,
    image_shape: Sequence[int] | None = None,
    device: str = "cpu",
) -> list[Path]:
    """Explain a checkpoint's predictions on ``inputs`` and write ``explanations.csv`` (with a
    ``radius`` column, the certified L2 radius in the inputs' units, when the backbone has a
    ``lipschitz_bound()``),
    ``exemplars.png`` and, with labels, ``accuracy_rejection.png`` into ``output``.

    Args:
        checkpoint: an LVQMLN ``.ckpt`` file.
        inputs: a ``.npy`` array or a ``.csv`` file with a header.
        output: the folder to write into (created).
        labels: a ``.npy`` file of labels for ``.npy`` inputs.
        target: the label column of a CSV file (default: the checkpoint's datamodule's
            ``target``, else ``label``); used when present.
        k: exemplars per prototype.
        image_shape: ``(H, W)`` or ``(C, H, W)`` to draw flat rows as images.
        device: where to compute (``"cpu"``, ``"cuda"``, …).

    Returns:
        The files written.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for unreadable or mismatched inputs, or a bad ``k``.
    """
    from .io.checkpoint import load_checkpoint, read_checkpoint
    from .viz.explain_plots import plot_accuracy_rejection, plot_exemplars

    raw = read_checkpoint(checkpoint)
    model = load_checkpoint(checkpoint, map_location="cpu").to(torch.device(device))
    X_raw, y, names = read_inputs(
        Path(inputs), None if labels is None else Path(labels), target, raw
    )
    model.check_inputs(torch.as_tensor(X_raw))  # the shape, before standardising
    stats = standardization(raw)
    X = X_raw if stats is None else (X_raw - stats[0]) / stats[1]
    classes = np.asarray(model.classes_)
    y_idx = None
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise ValueError(f"the labels must have shape ({len(X)},), got {y.shape}")
        y_idx = encode_labels(y, classes)[0]
    info = {key: value.cpu().numpy() for key, value in model.explain(X).items()}
    # The certified L2 radius in raw input units, when the backbone has a bound.
    radius = info.get("radius")
    radius = None if radius is None else radius * input_radius_scale(stats)
    text = _explanations_csv(info, classes, y, radius)
    indices, distances = model.prototype_exemplars(X, y_idx, k)
    prototype_labels = classes[model.prototype_labels.cpu().numpy()]
    exemplars = plot_exemplars(
        X_raw,
        indices.cpu(),
        distances.cpu(),
        prototype_labels,
        feature_names=names,
        image_shape=image_shape,
        title="Exemplars of each prototype" + (" (own class)" if y is not None else ""),
    )
    curve = None if y_idx is None else model.accuracy_rejection_curve(X, y_idx)
    curve_figure = None if curve is None else plot_accuracy_rejection(curve)

    from .viz.plotting import save_figure

    out = Path(output)
    written = [atomic_write_text(out / "explanations.csv", text)]
    written.append(save_figure(exemplars, out / "exemplars.png"))
    if curve_figure is not None:
        written.append(save_figure(curve_figure, out / "accuracy_rejection.png"))
    return written


def main(args: Sequence[str] | None = None) -> None:
    """``lvqmln explain`` (exit status 2 with a one-line error for a bad argument)."""
    parser = checkpoint_parser(
        "lvqmln explain",
        "Explain a checkpoint's predictions: explanations.csv, exemplars.png and "
        "(with labels) accuracy_rejection.png.",
        output="explanations",
    )
    parser.add_argument("--k", type=int, default=5, help="exemplars per prototype")
    parser.add_argument("--image-shape", type=int, nargs="+", default=None, metavar="N")
    ns = parser.parse_args(None if args is None else list(args))
    report_written(
        parser,
        lambda: run_explain(
            ns.checkpoint,
            ns.inputs,
            ns.output,
            ns.labels,
            ns.target,
            ns.k,
            ns.image_shape,
            ns.device,
        ),
    )
