"""The reliability diagram: per confidence bin, the accuracy of the top-label prediction
against its mean probability, with the share of samples per bin and the expected calibration
error (the bins of torchmetrics' ``MulticlassCalibrationError``). matplotlib's Agg canvas
only (no pyplot), as ``lvqmln_torch.viz.plotting``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.calibration import reliability_bins
from .plotting import _as_numpy, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_reliability"]


def _check(probabilities: np.ndarray, y: np.ndarray, name: str) -> None:
    if probabilities.ndim != 2 or probabilities.shape[1] < 2 or len(probabilities) == 0:
        raise ValueError(
            f"{name} must be a non-empty (n, k) array with k >= 2, got shape {probabilities.shape}"
        )
    if y.shape != (len(probabilities),):
        raise ValueError(f"y must have shape ({len(probabilities)},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probabilities.shape[1]:
        raise ValueError(
            f"y must hold class indices in [0, {probabilities.shape[1]}) (the columns of {name})"
        )


def plot_reliability(
    probabilities: Any,
    y: Any,
    n_bins: int = 15,
    compare: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a reliability diagram: bars of accuracy per confidence bin, the diagonal of
    perfect calibration, the gap to it, and beneath, the share of samples per bin. The legend
    gives each curve's ECE.

    Args:
        probabilities: ``(n, k)`` class probabilities (``predict_proba``).
        y: ``(n,)`` true class indices (columns of ``probabilities``).
        n_bins: equal-width confidence bins in [0, 1].
        compare: optional ``{name: (n, k) probabilities}`` of the same samples drawn as
            lines on top (e.g. ``{"before calibration": p_uncalibrated}``).
        path: if given, write the figure there as PNG (atomically).
        title: figure title.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ValueError: for mismatched shapes or labels outside the columns.
    """
    from matplotlib.figure import Figure

    p = _as_numpy(probabilities)
    labels = _as_numpy(y)
    _check(p, labels, "probabilities")
    curves = {"model": p}
    for name, other in (compare or {}).items():
        other = _as_numpy(other)
        if other.shape != p.shape:
            raise ValueError(f"compare[{name!r}] has shape {other.shape}, probabilities {p.shape}")
        curves[name] = other
    stats = {
        name: reliability_bins(torch.from_numpy(np.asarray(c)), torch.from_numpy(labels), n_bins)
        for name, c in curves.items()
    }
    main = stats["model"]
    edges = main["edges"].numpy()
    width = np.diff(edges)
    figure = Figure(figsize=(5.0, 6.0))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    accuracy = np.nan_to_num(main["accuracy"].numpy())
    confidence = main["confidence"].numpy()
    top.bar(
        edges[:-1],
        accuracy,
        width,
        align="edge",
        color="tab:blue",
        edgecolor="white",
        label=f"accuracy (ECE {float(main['ece']):.3f})",
    )
    filled = ~np.isnan(confidence)
    gap_low = np.minimum(accuracy, np.nan_to_num(confidence))
    top.bar(
        edges[:-1][filled],
        np.abs(np.nan_to_num(confidence) - accuracy)[filled],
        width[filled],
        bottom=gap_low[filled],
        align="edge",
        color="tab:red",
        alpha=0.3,
        label="gap to the diagonal",
    )
    for name, s in stats.items():
        if name != "model":
            mask = ~np.isnan(s["confidence"].numpy())
            top.plot(
                s["confidence"].numpy()[mask],
                s["accuracy"].numpy()[mask],
                "o--",
                label=f"{name} (ECE {float(s['ece']):.3f})",
            )
    top.plot([0, 1], [0, 1], color="black", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize="small")
    if title:
        top.set_title(title)
    bottom.bar(
        edges[:-1],
        main["count"].numpy() / len(labels),
        width,
        align="edge",
        color="tab:gray",
        edgecolor="white",
    )
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("share of samples")
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure
