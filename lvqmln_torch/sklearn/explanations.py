"""The estimator's explanations, reject option and plots:
[`lvqmln_torch.core.explanations`][lvqmln_torch.core.explanations] on NumPy arrays, with the
user's original labels (``classes_``), and the latent-space, exemplar and accuracy-rejection
plots. No Lightning here."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ..core.explain import check_threshold, pick_threshold
from ..data.labels import encode_labels

__all__ = ["ExplanationsMixin"]


class ExplanationsMixin:
    """Methods of [`LVQMLNClassifier`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier] (which provides ``network_``,
    ``classes_`` and ``_validate_predict_X``)."""

    def _labels(self, y: Any, n: int) -> np.ndarray:
        """``y`` (original labels) as class indices."""
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"y must have shape ({n},) (one label per sample), got {y.shape}")
        return encode_labels(y, self.classes_)[0]

    def explain(self, X: Any) -> dict[str, np.ndarray]:
        """Why each sample gets its label (see [`explain`][lvqmln_torch.core.explanations.explain]).

        Args:
            X: inputs as for ``predict``.

        Returns:
            ``(n,)`` arrays: ``label`` and ``rival_label`` (original labels), ``prototype`` and
            ``rival_prototype`` (rows of ``prototypes_``), ``distance`` and ``rival_distance``
            (squared latent distances) and ``confidence`` in [0, 1]; when the backbone can be
            certified (it has a ``lipschitz_bound()``: ``"mlp"``, ``"cnn"``, ``"identity"``),
            also ``radius``, the certified L2 radius of each prediction in input units (as
            [`certify`][lvqmln_torch.sklearn.robustness.RobustnessMixin.certify] without labels).
        """
        X = self._validate_predict_X(X)
        out = {k: v.cpu().numpy() for k, v in self.network_.explain(X).items()}
        out["label"] = self.classes_[out["label"]]
        out["rival_label"] = self.classes_[out["rival_label"]]
        return out

    def confidence(self, X: Any) -> np.ndarray:
        """``(n,)`` relative-similarity certainty of each prediction, in [0, 1]."""
        return self.explain(X)["confidence"]

    def prototype_exemplars(
        self, X: Any, y: Any = None, k: int = 5
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` samples of ``X`` nearest to each prototype in latent space, exact (ties
        by index); with ``y`` (original labels) only samples of the prototype's class (index
        ``-1``, distance ``inf`` where a class has fewer than ``k``).

        Returns:
            ``(indices (P, k), distances (P, k))``, ascending; row ``p`` is ``prototypes_[p]``'s.
        """
        X = self._validate_predict_X(X)
        labels = None if y is None else self._labels(y, len(X))
        indices, distances = self.network_.prototype_exemplars(X, labels, k)
        return indices.cpu().numpy(), distances.cpu().numpy()

    def predict_with_reject(self, X: Any, threshold: float, reject_label: Any = -1) -> np.ndarray:
        """``predict(X)`` with ``reject_label`` where the confidence is below ``threshold``.

        Args:
            X: inputs as for ``predict``.
            threshold: in [0, 1); 0 rejects nothing.
            reject_label: any value that is not one of ``classes_``.

        Raises:
            ValueError: for a threshold outside [0, 1) or a reject label that is a class.
        """
        check_is_fitted(self, "network_")
        threshold = check_threshold(threshold)
        if reject_label in self.classes_.tolist():
            raise ValueError(
                f"reject_label {reject_label!r} is one of the classes {self.classes_.tolist()}; "
                "choose a value that is not a class"
            )
        info = self.explain(X)
        rejected = info["confidence"] < threshold
        labels = info["label"]
        reject = np.asarray(reject_label)
        # Keep the labels' dtype when the reject label fits it; a string label among numbers
        # (or a number among strings) makes an object array rather than a silent conversion.
        textual = labels.dtype.kind in "USO", reject.dtype.kind in "US"
        dtype = np.result_type(labels.dtype, reject.dtype) if textual[0] == textual[1] else object
        out = labels.astype(dtype)
        out[rejected] = reject_label
        return out

    def accuracy_rejection_curve(self, X: Any, y: Any) -> dict[str, np.ndarray]:
        """Accuracy on the accepted samples against the rejection rate, for every threshold
        that changes the accepted set (see [`accuracy_rejection_curve`][lvqmln_torch.core.explain.accuracy_rejection_curve]).

        Returns:
            ``{"threshold", "rejection_rate", "accuracy"}`` as float64 arrays, thresholds
            ascending.
        """
        X = self._validate_predict_X(X)
        curve = self.network_.accuracy_rejection_curve(X, self._labels(y, len(X)))
        return {k: v.numpy() for k, v in curve.items()}

    def rejection_threshold(self, X: Any, y: Any, target_accuracy: float) -> float:
        """The smallest threshold whose accuracy on the accepted samples of validation data
        ``(X, y)`` reaches ``target_accuracy`` in (0, 1]; use it with
        [`predict_with_reject`][lvqmln_torch.sklearn.explanations.ExplanationsMixin.predict_with_reject].

        Raises:
            ValueError: when no threshold reaches the target (the message gives the best).
        """
        return pick_threshold(self.accuracy_rejection_curve(X, y), target_accuracy)

    def plot_exemplars(
        self,
        X: Any,
        y: Any = None,
        k: int = 5,
        path: str | os.PathLike | None = None,
        feature_names: Any = None,
        image_shape: Any = None,
        prototype_samples: Any = None,
    ) -> Any:
        """Draw each prototype's ``k`` exemplars from ``X`` (see
        [`plot_exemplars`][lvqmln_torch.viz.explain_plots.plot_exemplars] for ``feature_names``,
        ``image_shape`` and ``prototype_samples``, e.g. ``X_train[prototype_sources_]``).

        Returns:
            The matplotlib ``Figure``.
        """
        from ..viz.explain_plots import plot_exemplars

        indices, distances = self.prototype_exemplars(X, y, k)
        return plot_exemplars(
            np.asarray(X),
            indices,
            distances,
            self.prototype_labels_,
            feature_names=feature_names,
            image_shape=image_shape,
            prototype_samples=prototype_samples,
            path=path,
        )

    def plot_accuracy_rejection(self, X: Any, y: Any, path: str | os.PathLike | None = None) -> Any:
        """Draw the accuracy-rejection curve of ``(X, y)`` (see
        [`plot_accuracy_rejection`][lvqmln_torch.viz.explain_plots.plot_accuracy_rejection]).

        Returns:
            The matplotlib ``Figure``.
        """
        from ..viz.explain_plots import plot_accuracy_rejection

        return plot_accuracy_rejection(self.accuracy_rejection_curve(X, y), path=path)

    def plot_latent(self, X: Any, y: Any = None, path: str | os.PathLike | None = None) -> Any:
        """Draw the latent space of ``X`` with the prototypes (and the decision regions when
        the latent space is 2-D); see [`lvqmln_torch.viz.plotting.plot_latent_space`][lvqmln_torch.viz.plotting.plot_latent_space].

        Args:
            X: inputs as for [`predict`][lvqmln_torch.sklearn.estimator.LVQMLNClassifier.predict].
            y: optional labels to colour the samples by (default: the predicted labels).
            path: optional PNG file to write.

        Returns:
            The matplotlib ``Figure``.
        """
        from ..viz.plotting import nearest_prototype_fn, plot_latent_space

        latent = self.transform(X)
        labels = self.predict(X) if y is None else np.asarray(y)
        return plot_latent_space(
            latent,
            labels=labels,
            prototypes=self.prototypes_,
            prototype_labels=self.prototype_labels_,
            classes=self.classes_,
            predict_fn=nearest_prototype_fn(
                self.prototypes_, self.network_.prototype_labels, self.classes_
            ),
            path=path,
            title=f"{type(self).__name__} latent space",
        )
