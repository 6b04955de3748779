"""The estimator's temperature scaling and conformal scores:
``lvqmln_torch.core.calibration`` on NumPy arrays, with the
user's original labels (``classes_``). No Lightning here."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..core.calibration import DEFAULT_BOUNDS

__all__ = ["CalibrationMixin"]


class CalibrationMixin:
    """Methods of [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier] (which
    provides ``network_``, ``classes_``, ``_labels`` and ``_validate_predict_X``)."""

    @property
    def temperature_(self) -> float:
        """The temperature ``T`` of ``predict_proba`` (``softmax(−d / T)``): 1 after ``fit``,
        fitted by [`calibrate`][lvqmln_torch.sklearn.calibration.CalibrationMixin.calibrate],
        saved and loaded with the estimator."""
        check_is_fitted(self, "network_")
        return self.network_.temperature

    def calibrate(
        self, X: Any, y: Any, bounds: tuple[float, float] = DEFAULT_BOUNDS
    ) -> CalibrationMixin:
        """Temperature scaling: fit ``temperature_`` on held-out data (not the training data)
        by minimising the negative log-likelihood of ``predict_proba``. ``predict`` is
        unchanged; ``predict_proba`` uses the new temperature from then on. Calling it again
        refits from scratch (the old temperature plays no part).

        Args:
            X: ``(n, …)`` held-out inputs, as for ``predict``.
            y: ``(n,)`` their labels (values of ``classes_``).
            bounds: ``(low, high)`` limits of the temperature.

        Returns:
            ``self``.

        Raises:
            ValueError: for labels not in ``classes_``, bad inputs or bounds.
        """
        X = self._validate_predict_X(X)
        self.network_.calibrate(X, self._labels(y, len(X)), bounds)
        return self

    def nonconformity(self, X: Any, y: Any = None) -> np.ndarray:
        """The prototype-native nonconformity score μ of each class (see
        [`nonconformity`][lvqmln_torch.core.calibration.nonconformity]): the score to give a
        conformal library that takes one (crepes' ``ConformalClassifier``; for MAPIE see
        [`PrototypeMuScore`][lvqmln_torch.sklearn.conformal.PrototypeMuScore]).

        Args:
            X: ``(n, …)`` inputs.
            y: optional ``(n,)`` labels (values of ``classes_``).

        Returns:
            ``(n, n_classes)`` scores, columns in ``classes_`` order, or ``(n,)`` scores of
            the labels ``y``; in [−1, 1], lower fits better.
        """
        X = self._validate_predict_X(X)
        labels = None if y is None else self._labels(y, len(X))
        return self.network_.nonconformity(X, labels).cpu().numpy()

    def plot_reliability(
        self, X: Any, y: Any, n_bins: int = 15, path: str | os.PathLike | None = None
    ) -> Any:
        """The reliability diagram of ``predict_proba`` on ``(X, y)`` (see
        [`plot_reliability`][lvqmln_torch.viz.calibration_plots.plot_reliability]).

        Returns:
            The matplotlib ``Figure``.
        """
        from ..viz.calibration_plots import plot_reliability

        labels = self._labels(y, len(np.asarray(X)))
        title = f"{type(self).__name__}, T = {self.temperature_:.3g}"
        return plot_reliability(self.predict_proba(X), labels, n_bins, path=path, title=title)
