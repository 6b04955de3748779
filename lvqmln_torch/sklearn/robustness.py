"""The estimator's certified robustness: [`lvqmln_torch.core.certify`][lvqmln_torch.core.certify]
on NumPy arrays, with the user's original labels (``classes_``). No Lightning here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..data.labels import encode_labels

__all__ = ["RobustnessMixin"]


class RobustnessMixin:
    """Methods of [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier] (which
    provides ``network_``, ``classes_`` and ``_validate_predict_X``)."""

    def _label_indices(self, y: Any, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"y must have shape ({n},) (one label per sample), got {y.shape}")
        return encode_labels(y, self.classes_)[0]

    def lipschitz_bound(self) -> float:
        """An upper bound on the backbone's L2 Lipschitz constant (1 for
        ``backbone="identity"``)."""
        check_is_fitted(self, "network_")
        return self.network_.lipschitz_bound()

    def certify(self, X: Any, y: Any = None) -> np.ndarray:
        """Certified L2 radii in input space (see
        [`certify`][lvqmln_torch.core.certify.certify]).

        Args:
            X: inputs as for ``predict``.
            y: optional ``(n,)`` original labels: the radius is 0 where the prediction is wrong.

        Returns:
            ``(n,)`` float64 radii: no perturbation of ``X[i]`` with a smaller L2 norm changes
            its prediction.
        """
        X = self._validate_predict_X(X)
        labels = None if y is None else self._label_indices(y, len(X))
        return self.network_.certify(X, labels).cpu().numpy()

    def certified_accuracy(
        self, X: Any, y: Any, eps: float | Sequence[float]
    ) -> float | np.ndarray:
        """The share of samples predicted correctly with a certified L2 radius ``≥ eps``
        (``eps = 0``: the accuracy).

        Args:
            X: inputs as for ``predict``.
            y: ``(n,)`` original labels.
            eps: a radius, or a sequence of radii.

        Returns:
            A float for one radius, else a ``(len(eps),)`` array.
        """
        X = self._validate_predict_X(X)
        labels = self._label_indices(y, len(X))
        accuracy = self.network_.certified_accuracy(X, labels, eps).numpy()
        return float(accuracy[0]) if np.ndim(eps) == 0 else accuracy
