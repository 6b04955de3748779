"""The prototype-native nonconformity score for MAPIE's conformal classifiers.

MAPIE's default score (LAC) is ``1 − p_y`` on ``predict_proba``. This one is GLVQ's relative
distance ``μ_y = (d_y − d_¬y) / (d_y + d_¬y)`` of the candidate class (see
[`nonconformity`][lvqmln_torch.core.calibration.nonconformity]), read from the latent
distances, so it does not depend on the temperature. A class enters the prediction set when
its μ is at most the conformal quantile of the calibration samples' μ::

    from mapie.classification import SplitConformalClassifier
    from lvqmln_torch.sklearn.conformal import PrototypeMuScore

    mapie = SplitConformalClassifier(
        clf, confidence_level=0.9, conformity_score=PrototypeMuScore(), prefit=True
    )
    mapie.conformalize(X_cal, y_cal)
    labels, sets = mapie.predict_set(X_test)  # sets: (n, n_classes, 1) booleans

Needs ``pip install "lvqmln[conformal]"`` (MAPIE >= 1.0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from mapie.conformity_scores import LACConformityScore
except ImportError as err:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        'lvqmln_torch.sklearn.conformal needs MAPIE: pip install "lvqmln[conformal]"'
    ) from err

__all__ = ["PrototypeMuScore"]


class PrototypeMuScore(LACConformityScore):
    """MAPIE conformity score μ of an [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier]
    (or any classifier with its ``nonconformity(X)``), for ``SplitConformalClassifier`` and
    ``CrossConformalClassifier``.

    LAC's thresholding on ``1 − p`` becomes thresholding on μ: this score hands LAC ``1 − μ``
    in place of the probabilities, so its sets are ``{c : μ_c ≤ q̂}``, with ``q̂`` LAC's
    finite-sample conformal quantile of the calibration samples' μ.
    """

    def _estimator(self) -> Any:
        predictor = getattr(self, "predictor", None)
        estimator = getattr(predictor, "single_estimator_", predictor)
        if not hasattr(estimator, "nonconformity"):
            raise TypeError(
                "PrototypeMuScore needs a classifier with nonconformity(X) (LVQMLNClassifier), "
                f"got {type(estimator).__name__}"
            )
        return estimator

    def get_conformity_scores(
        self, y: Any, y_pred: Any, y_enc: Any = None, X: Any = None, **kwargs: Any
    ) -> np.ndarray:
        """``(n, 1)`` μ of the true classes ``y_enc`` (class positions) of the samples ``X``."""
        if X is None or y_enc is None:
            raise ValueError("PrototypeMuScore needs the calibration inputs X and labels")
        scores = self._estimator().nonconformity(X)
        return np.take_along_axis(scores, np.asarray(y_enc).reshape(-1, 1), axis=1)

    def get_predictions(
        self, X: Any, alpha_np: Any, y_pred_proba: Any, cv: Any, agg_scores: Any = "mean", **kwargs
    ) -> np.ndarray:
        """``(n, k, n_alpha)``: ``1 − μ`` of every class, for LAC's rule ``1 − value ≤ q̂``."""
        if agg_scores == "crossval":
            raise ValueError(
                "PrototypeMuScore supports agg_scores='mean' only (one fitted estimator)"
            )
        conformity = 1.0 - self._estimator().nonconformity(X)
        return np.repeat(conformity[:, :, None], len(alpha_np), axis=2)
