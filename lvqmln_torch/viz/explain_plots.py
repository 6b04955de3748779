"""Pictures of the explanations: each prototype's exemplars (a grid of images, one row per
prototype, or the exemplars' feature profiles for tabular data) and the accuracy-rejection
curve. matplotlib's Agg canvas only (no pyplot), as [`lvqmln_torch.viz.plotting`][lvqmln_torch.viz.plotting]."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .plotting import _as_numpy, _class_colors, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_accuracy_rejection", "plot_exemplars"]

_CELL = 1.3  # inches per image cell


def _image(sample: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A ``(C, H, W)`` sample as something ``imshow`` draws: grey for one channel, RGB for
    three (scaled to [0, 1]), the channel mean otherwise."""
    if sample.shape[0] == 3:
        rgb = np.moveaxis(sample, 0, -1).astype(np.float64)
        low, high = rgb.min(), rgb.max()
        return (rgb - low) / (high - low if high > low else 1.0), None
    return sample.mean(axis=0), "gray_r"


def plot_exemplars(
    x: Any,
    indices: Any,
    distances: Any = None,
    prototype_labels: Any = None,
    feature_names: Sequence[str] | None = None,
    image_shape: Sequence[int] | None = None,
    prototype_samples: Any = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Draw the exemplars of every prototype (see ``prototype_exemplars``).

    Images (``x`` of shape ``(n, C, H, W)``, or flat rows with ``image_shape``) form a grid
    with one row per prototype and its ``k`` exemplars left to right, nearest first. Tabular
    inputs get one panel per prototype with each exemplar's feature profile (value per
    feature) and their mean in black.

    Args:
        x: ``(n, d)`` or ``(n, C, H, W)`` inputs the indices refer to (as given to
            ``prototype_exemplars``, or the raw data of the same rows).
        indices: ``(P, k)`` sample indices (``-1``: none, drawn empty).
        distances: ``(P, k)`` squared latent distances, written under the images.
        prototype_labels: ``(P,)`` labels of the prototypes, in the row titles.
        feature_names: ``d`` names for the tabular x-axis.
        image_shape: ``(H, W)`` or ``(C, H, W)`` to draw flat ``(n, d)`` rows as images.
        prototype_samples: ``(P, …)`` inputs shown as the prototypes themselves, first in
            each row (images) or dashed (profiles): after projection
            ``X_train[prototype_sources_]``.
        path: if given, write the figure there as PNG (atomically).
        title: figure title.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ValueError: for mismatched shapes or indices outside ``x``.
    """
    from matplotlib.figure import Figure

    x = _as_numpy(x)
    idx = _as_numpy(indices).astype(np.int64)
    if idx.ndim != 2 or idx.size == 0:
        raise ValueError(f"indices must be a non-empty (P, k) array, got shape {idx.shape}")
    if idx.max() >= len(x) or idx.min() < -1:
        raise ValueError(f"indices must be rows of x (0 … {len(x) - 1}) or -1")
    n_prototypes, k = idx.shape
    d = None if distances is None else _as_numpy(distances)
    if d is not None and d.shape != idx.shape:
        raise ValueError(f"distances must have the shape of indices {idx.shape}, got {d.shape}")
    names = None if prototype_labels is None else _as_numpy(prototype_labels).tolist()
    if names is not None and len(names) != n_prototypes:
        raise ValueError(f"prototype_labels needs {n_prototypes} entries, got {len(names)}")
    if image_shape is not None:
        shape = tuple(int(s) for s in image_shape)
        shape = (1, *shape) if len(shape) == 2 else shape
        if x.ndim != 2 or int(np.prod(shape)) != x.shape[1]:
            raise ValueError(f"image_shape {tuple(image_shape)} does not fit inputs {x.shape}")
        x = x.reshape(len(x), *shape)
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be (n, d) or (n, C, H, W), got shape {x.shape}")
    own = (
        None
        if prototype_samples is None
        else _as_numpy(prototype_samples).reshape(-1, *x.shape[1:])
    )
    if own is not None and len(own) != n_prototypes:
        raise ValueError(f"prototype_samples needs {n_prototypes} samples, got {len(own)}")

    def row_title(p: int) -> str:
        return f"prototype {p}" + ("" if names is None else f" ({names[p]})")

    if x.ndim == 4:
        first = 0 if own is None else 1
        figure = Figure(figsize=(_CELL * (k + first) + 1.2, _CELL * n_prototypes + 0.4))
        axes = figure.subplots(n_prototypes, k + first, squeeze=False)
        for p in range(n_prototypes):
            for j in range(k + first):
                ax = axes[p, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < first:
                    image, cmap = _image(own[p])
                    ax.imshow(image, cmap=cmap, interpolation="nearest")
                    ax.set_xlabel("prototype", fontsize=7, fontweight="bold")
                    for spine in ax.spines.values():
                        spine.set_linewidth(2.5)
                elif idx[p, j - first] >= 0:
                    i = idx[p, j - first]
                    image, cmap = _image(x[i])
                    ax.imshow(image, cmap=cmap, interpolation="nearest")
                    if d is not None:
                        ax.set_xlabel(f"#{i}  d={d[p, j - first]:.3g}", fontsize=7)
            axes[p, 0].set_ylabel(row_title(p), fontsize=8)
    else:
        dims = np.arange(x.shape[1])
        columns = min(n_prototypes, 3)
        rows = -(-n_prototypes // columns)
        figure = Figure(figsize=(4.2 * columns, 2.8 * rows))
        axes = figure.subplots(rows, columns, squeeze=False)
        colors = _class_colors(n_prototypes)
        for p in range(n_prototypes):
            ax = axes[p // columns, p % columns]
            valid = idx[p][idx[p] >= 0]
            for i in valid:
                ax.plot(dims, x[i], color=colors[p], alpha=0.45, linewidth=1)
            if len(valid):
                ax.plot(dims, x[valid].mean(axis=0), color="black", linewidth=1.6)
            if own is not None:
                ax.plot(dims, own[p], color="black", linestyle="--", linewidth=1.2)
            ax.set_title(f"{row_title(p)}: {len(valid)} exemplars", fontsize=9)
            if feature_names is not None:
                ax.set_xticks(dims, list(feature_names), rotation=60, fontsize=7, ha="right")
        for p in range(n_prototypes, rows * columns):
            axes[p // columns, p % columns].set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure


def plot_accuracy_rejection(
    curve: Mapping[str, Any], path: str | os.PathLike | None = None, title: str | None = None
) -> Figure:
    """Draw an accuracy-rejection curve (``accuracy_rejection_curve``'s dict): accuracy on
    the accepted samples against the rejected fraction, with the threshold on a second axis.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ValueError: when the dict lacks a key or the arrays differ in length.
    """
    from matplotlib.figure import Figure

    try:
        rate, accuracy, threshold = (
            _as_numpy(curve[key]).astype(np.float64)
            for key in ("rejection_rate", "accuracy", "threshold")
        )
    except KeyError as err:
        raise ValueError(f"curve lacks {err.args[0]!r} (see accuracy_rejection_curve)") from None
    if not len(rate) == len(accuracy) == len(threshold) or len(rate) == 0:
        raise ValueError("curve's arrays must be non-empty and of equal length")
    figure = Figure(figsize=(6.0, 4.2))
    ax = figure.add_subplot()
    ax.step(100 * rate, 100 * accuracy, where="post", color="tab:blue", label="accuracy")
    ax.set_xlabel("rejected samples (%)")
    ax.set_ylabel("accuracy on accepted samples (%)", color="tab:blue")
    twin = ax.twinx()
    twin.plot(100 * rate, threshold, color="tab:orange", linewidth=1, label="threshold")
    twin.set_ylabel("confidence threshold", color="tab:orange")
    twin.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Accuracy-rejection curve")
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path)
    return figure
