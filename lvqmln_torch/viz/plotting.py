"""Latent-space plots: samples coloured by class, prototypes marked, decision regions when
the latent space is 2-D (the first two principal components when it has more dimensions).

matplotlib is imported lazily and only its Agg canvas is used (no pyplot, no global state),
so plotting works headless and from any thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["nearest_prototype_fn", "plot_latent_space", "plot_model_latent_space", "save_figure"]

_GRID = 300  # decision-region resolution per axis
_MARGIN = 0.08  # fraction of the data range added around the plot


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _class_colors(k: int) -> list[Any]:
    from matplotlib import colormaps

    if k <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(k)]
    cmap = colormaps["turbo"]
    return [cmap(i / max(k - 1, 1)) for i in range(k)]


def _indices(values: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Positions of ``values`` in ``classes``."""
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    try:
        return np.asarray([lookup[v] for v in values.tolist()], dtype=np.int64)
    except KeyError as err:
        raise ValueError(
            f"{name} contains {err.args[0]!r}, which is not among the classes {classes.tolist()}"
        ) from None


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``figure`` as PNG atomically (temporary file in the same folder, then rename).

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    return atomic_write(
        path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    )


def plot_latent_space(
    latent: Any,
    labels: Any = None,
    prototypes: Any = None,
    prototype_labels: Any = None,
    classes: Sequence[Any] | None = None,
    predict_fn: Callable[[np.ndarray], Any] | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Draw samples and prototypes in the latent space.

    Args:
        latent: ``(n, latent_dim)`` latent codes of the samples.
        labels: ``(n,)`` labels of the samples (colours); ``None`` draws them grey.
        prototypes: ``(P, latent_dim)`` prototypes, drawn as large stars with a black edge.
        prototype_labels: ``(P,)`` labels of the prototypes (same label values as ``labels``).
        classes: all class labels in colour order (default: the sorted labels present).
        predict_fn: maps ``(m, latent_dim)`` latent points to ``(m,)`` labels (e.g. the
            nearest prototype's); with a 1-D or 2-D latent space it shades the decision
            regions.
        path: if given, write the figure there as PNG (atomically).
        title: figure title.

    Returns:
        The matplotlib ``Figure``. When ``latent_dim > 2`` the axes are the first two
        principal components of ``latent``; prototypes are projected with the same PCA
        and no decision regions are drawn (they are not planar there).

    Raises:
        ValueError: for mismatched shapes or labels outside ``classes``.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    z = _as_numpy(latent).astype(np.float64)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"latent must be a non-empty (n, latent_dim) array, got shape {z.shape}")
    dim = z.shape[1]
    y = None if labels is None else _as_numpy(labels).reshape(-1)
    if y is not None and len(y) != len(z):
        raise ValueError(f"labels has {len(y)} entries but latent has {len(z)} rows")
    w = None if prototypes is None else _as_numpy(prototypes).astype(np.float64)
    if w is not None and (w.ndim != 2 or w.shape[1] != dim):
        raise ValueError(f"prototypes must have shape (P, {dim}), got {w.shape}")
    c = None if prototype_labels is None else _as_numpy(prototype_labels).reshape(-1)
    if c is not None and (w is None or len(c) != len(w)):
        raise ValueError("prototype_labels needs prototypes of the same length")

    if classes is not None:
        class_values = np.asarray(classes)
    else:
        present = [a for a in (y, c) if a is not None]
        class_values = np.unique(np.concatenate(present)) if present else np.asarray([])
    colors = _class_colors(max(len(class_values), 1))

    # Coordinates to draw: the latent itself (1-D padded with zeros), or its first two PCs.
    if dim > 2:
        mean = z.mean(axis=0)
        _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
        components = vt[:2]
        explained = (s**2 / max(float((s**2).sum()), 1e-300))[:2]
        points = (z - mean) @ components.T
        proto_points = None if w is None else (w - mean) @ components.T
        axis_labels = [f"PC{i + 1} ({100 * e:.0f}% of variance)" for i, e in enumerate(explained)]
    else:
        pad = (lambda a: np.column_stack([a, np.zeros(len(a))])) if dim == 1 else (lambda a: a)
        points = pad(z)
        proto_points = None if w is None else pad(w)
        axis_labels = ["z₁", "z₂"] if dim == 2 else ["z₁", ""]

    figure = Figure(figsize=(6.4, 5.2))
    ax = figure.add_subplot()
    everything = points if proto_points is None else np.vstack([points, proto_points])
    low, high = everything.min(axis=0), everything.max(axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    low, high = low - _MARGIN * span, high + _MARGIN * span

    if predict_fn is not None and dim <= 2 and len(class_values) > 0:
        gx = np.linspace(low[0], high[0], _GRID)
        gy = np.linspace(low[1], high[1], _GRID) if dim == 2 else np.asarray([low[1], high[1]])
        xx, yy = np.meshgrid(gx, gy)
        grid = np.column_stack([xx.ravel(), yy.ravel()])[:, :dim]
        regions = _indices(_as_numpy(predict_fn(grid)).reshape(-1), class_values, "predict_fn")
        ax.imshow(
            regions.reshape(xx.shape),
            extent=(low[0], high[0], low[1], high[1]),
            origin="lower",
            cmap=ListedColormap(colors),
            vmin=-0.5,
            vmax=len(colors) - 0.5,
            alpha=0.22,
            interpolation="nearest",
            aspect="auto",
            zorder=0,
        )

    handles = []
    if y is None:
        ax.scatter(points[:, 0], points[:, 1], s=18, c="0.45", alpha=0.8, linewidths=0, zorder=2)
    else:
        y_idx = _indices(y, class_values, "labels")
        for i, value in enumerate(class_values.tolist()):
            mask = y_idx == i
            if mask.any():
                ax.scatter(
                    points[mask, 0],
                    points[mask, 1],
                    s=18,
                    color=colors[i],
                    alpha=0.8,
                    linewidths=0,
                    zorder=2,
                )
            handles.append(
                Line2D([], [], marker="o", linestyle="", color=colors[i], label=str(value))
            )
    if proto_points is not None:
        face = (
            ["white"] * len(proto_points)
            if c is None
            else [colors[i] for i in _indices(c, class_values, "prototype_labels")]
        )
        ax.scatter(
            proto_points[:, 0],
            proto_points[:, 1],
            s=320,
            marker="*",
            c=face,
            edgecolors="black",
            linewidths=1.4,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                marker="*",
                linestyle="",
                markersize=15,
                markerfacecolor="white",
                markeredgecolor="black",
                label="prototype",
            )
        )
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    if dim == 1:
        ax.set_yticks([])
    if handles:
        ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.85)
    if title:
        ax.set_title(title)
    if path is not None:
        save_figure(figure, path)
    return figure


def nearest_prototype_fn(
    prototypes: Any, prototype_labels: Any, classes: Sequence[Any] | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """The decision function in latent space: ``(m, latent_dim)`` points → the label of their
    nearest prototype (squared Euclidean distance, first prototype on ties), for
    ``plot_latent_space(predict_fn=...)``.

    Args:
        prototypes: ``(P, latent_dim)`` prototypes.
        prototype_labels: ``(P,)`` class indices of the prototypes.
        classes: original labels by class index (default: return the indices).
    """
    import torch

    from ..core.head import PrototypeHead

    w = torch.as_tensor(_as_numpy(prototypes), dtype=torch.float64)
    c = torch.as_tensor(_as_numpy(prototype_labels), dtype=torch.long)
    lookup = None if classes is None else np.asarray(classes)

    def predict(points: np.ndarray) -> np.ndarray:
        d = PrototypeHead.distances(torch.as_tensor(points, dtype=torch.float64), w)
        indices = PrototypeHead.labels(d, c).numpy()
        return indices if lookup is None else lookup[indices]

    return predict


def plot_model_latent_space(
    model: Any,
    x: Any,
    labels: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """[`plot_latent_space`][lvqmln_torch.viz.plotting.plot_latent_space] for a fitted [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]: the latent codes
    of ``x``, the model's prototypes and its decision regions.

    Args:
        model: a fitted LVQMLN.
        x: ``(n, d)`` or ``(n, C, H, W)`` inputs, preprocessed as for training.
        labels: ``(n,)`` original labels of ``x`` (values of ``model.classes_``), or ``None``.
        path: if given, write the figure there as PNG (atomically).
        title: figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    classes = np.asarray(model.classes_)
    prototype_labels = _as_numpy(model.prototype_labels)
    return plot_latent_space(
        model.transform(x),
        labels,
        model.prototypes.detach(),
        classes[prototype_labels],
        classes=classes,
        predict_fn=nearest_prototype_fn(model.prototypes, prototype_labels, classes),
        path=path,
        title=title,
    )
