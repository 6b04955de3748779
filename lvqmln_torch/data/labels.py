"""Labels of any sortable type as class indices, and per-class loss weights (Lightning-free)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["class_weights", "encode_labels"]


def encode_labels(y: Any, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map labels of any sortable type to class indices.

    Returns:
        ``(indices, classes)`` with ``classes`` sorted and ``classes[indices] == y``.

    Raises:
        ValueError: for labels outside the given ``classes``.
    """
    y = np.asarray(y)
    if classes is None:
        classes = np.unique(y)
    indices = np.searchsorted(classes, y)
    indices = np.clip(indices, 0, len(classes) - 1)
    unknown = classes[indices] != y
    if np.any(unknown):
        raise ValueError(
            f"labels {np.unique(y[unknown]).tolist()[:10]} are not among the training classes "
            f"{classes.tolist()}"
        )
    return indices.astype(np.int64), classes


def class_weights(y_idx: np.ndarray, classes: np.ndarray, class_weight: Any) -> np.ndarray:
    """Per-class weights: ``'balanced'`` gives ``n / (k · n_c)``; a dict maps labels to weights
    (missing classes weigh 1)."""
    k = len(classes)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f"class_weight must be 'balanced', a dict or None, got {class_weight!r}"
            )
        counts = np.bincount(y_idx, minlength=k)
        return len(y_idx) / (k * np.maximum(counts, 1))
    if isinstance(class_weight, Mapping):
        unknown = [c for c in class_weight if c not in set(classes.tolist())]
        if unknown:
            raise ValueError(
                f"class_weight has classes {unknown} that are not in the data {classes.tolist()}"
            )
        weights = np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
        if np.any(weights < 0) or not np.all(np.isfinite(weights)):
            raise ValueError("class_weight values must be finite and non-negative")
        return weights
    raise ValueError(f"class_weight must be 'balanced', a dict or None, got {class_weight!r}")
