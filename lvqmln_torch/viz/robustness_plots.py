"""The picture of certified robustness: certified accuracy (or the share of certified
predictions) against the L2 radius ε. matplotlib's Agg canvas only (no pyplot), as
[`save_figure`][lvqmln_torch.viz.plotting.save_figure]."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .plotting import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["certified_curve", "plot_certified_accuracy"]


def certified_curve(radius: Any, correct: Any = None, eps: Sequence[float] | None = None):
    """``(eps (m,), share (m,))``: the share of samples with a certified radius ``≥ ε`` (and,
    with ``correct``, predicted correctly: the certified accuracy) on a grid of radii
    (default: 101 points from 0 to the largest finite radius)."""
    radius = np.asarray(radius, dtype=np.float64)
    ok = np.ones(radius.shape, bool) if correct is None else np.asarray(correct, bool)
    if eps is None:
        finite = radius[np.isfinite(radius)]
        top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        eps = np.linspace(0.0, top, 101)
    eps = np.asarray(eps, dtype=np.float64)
    share = (ok[None, :] & (radius[None, :] >= eps[:, None])).mean(axis=1)
    return eps, share


def plot_certified_accuracy(
    curves: Mapping[str, tuple[Any, Any]],
    marks: Sequence[float] = (),
    ylabel: str = "certified accuracy",
    title: str = "Certified accuracy against ε",
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw one or more curves ``name → (eps, share)`` (see
    [`certified_curve`][lvqmln_torch.viz.robustness_plots.certified_curve]).

    Args:
        curves: the curves by legend name.
        marks: radii to mark with dotted vertical lines.
        ylabel: the y axis' label.
        title: the figure's title.
        path: optional PNG file to write (atomically).

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    for name, (eps, share) in curves.items():
        ax.plot(eps, share, label=name)
    for eps in marks:
        ax.axvline(eps, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("ε (L2 norm of the perturbation)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1 or any(curves):
        ax.legend(fontsize=8)
    if path is not None:
        save_figure(figure, path)
    return figure
