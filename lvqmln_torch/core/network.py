"""The torch-only core of LVQMLN: a plain ``nn.Module`` holding the backbone, the prototypes,
their labels and the prototype head, with seeded construction, initialisation from data and
chunked inference. The LightningModule ([`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]) is this network plus
Lightning's training hooks; inference, export and the estimator's numpy engine use the network
directly, so they never import Lightning."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from sklearn.exceptions import NotFittedError
from torch import Tensor, nn

from . import calibration, certify, explanations
from .backbones import CNNBackbone
from .construction import build_parts, seeded_generator
from .explain import CHUNK
from .head import PrototypeHead
from .initializers import initialize_prototypes
from .validation import check_n_classes

# The prototype initialisation passes its sample through the backbone about this many bytes of
# float32 inputs at a time: a CNN's activations then stay tens of MB, which the allocator
# reuses, where the 20,000-image sample in one pass made GBs of them (MNIST CNN, 1 thread: the
# module's setup on 12,800 images took 5.8 s of CPU time instead of 7.6 s).
LATENT_CHUNK_BYTES = 1 << 20

__all__ = ["PrototypeNetwork"]


class PrototypeNetwork(nn.Module):
    """Backbone, prototypes in its latent space, their labels, and the prototype head.

    ``x (n, …) → backbone → z (n, latent_dim) → squared distances (n, P) to the prototypes →
    labels (n,) / probabilities (n, k)``. Built empty (``PrototypeNetwork()``) and filled by
    [`install`][lvqmln_torch.core.network.PrototypeNetwork.install], or from its parts. The explanations, exemplars, projection and
    reject option are the functions of [`lvqmln_torch.core.explanations`][lvqmln_torch.core.explanations],
    also offered as methods; so are the temperature fit and the conformal scores of
    [`lvqmln_torch.core.calibration`][lvqmln_torch.core.calibration] and the certified radii of
    [`lvqmln_torch.core.certify`][lvqmln_torch.core.certify].

    Args:
        backbone: maps inputs to ``(n, latent_dim)``.
        prototypes: ``(P, latent_dim)`` prototypes (a parameter).
        prototype_labels: ``(P,)`` class indices (a buffer).
        n_classes: the number of classes ``k``.
        input_shape: the per-sample input shape inputs are checked against (``(d,)`` for an
            MLP, ``(C, H, W)`` for a CNN); ``None`` checks nothing (a custom backbone).
        prototypes_ready: whether the prototypes are trained or given, not placeholders
            still to be initialised from data.
    """

    #: ``(P,)`` indices of the training samples the prototypes were last projected onto (see
    #: [`project_prototypes`][lvqmln_torch.core.network.PrototypeNetwork.project_prototypes]),
    #: ``None`` if they never were.
    prototype_sources: Tensor | None = None

    def __init__(
        self,
        backbone: nn.Module | None = None,
        prototypes: Tensor | None = None,
        prototype_labels: Tensor | None = None,
        n_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        prototypes_ready: bool = True,
    ) -> None:
        super().__init__()
        self.backbone: nn.Module | None = None
        self.prototypes: nn.Parameter | None = None
        self.register_buffer("prototype_labels", None)
        self.head: PrototypeHead | None = None
        self.input_shape: tuple[int, ...] | None = None
        self._prototypes_ready = False
        self._backbone_frozen = False
        if backbone is not None:
            self.install(backbone, prototypes, prototype_labels, n_classes, input_shape)
            self._prototypes_ready = prototypes_ready

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], custom_backbone: nn.Module | None = None
    ) -> PrototypeNetwork:
        """A network built from validated hyperparameters (see [`build_parts`][lvqmln_torch.core.construction.build_parts])."""
        backbone, prototypes, labels, n_classes, input_shape, given = build_parts(
            config, custom_backbone
        )
        network = cls(backbone, prototypes, labels, n_classes, input_shape, prototypes_ready=given)
        network.freeze_parts(config.get("freeze") or ())
        return network

    def freeze_parts(self, parts: Sequence[str]) -> None:
        """Take ``"backbone"`` and/or ``"prototypes"`` out of training: frozen tensors never
        enter the optimizer and never get a gradient, so they stay bit-identical."""
        if "backbone" in parts:
            self.backbone.requires_grad_(False)
            self._backbone_frozen = True  # train() keeps it in eval mode
        if "prototypes" in parts:
            self.prototypes.requires_grad_(False)

    def train(self, mode: bool = True) -> PrototypeNetwork:
        """Training mode (``mode=True``) or eval mode, as ``nn.Module.train``, except that a
        frozen backbone (``freeze_parts(["backbone"])``) always stays in eval mode: its
        BatchNorm statistics and dropout are fixed, so its parameters and buffers stay
        bit-identical (as Lightning's ``BaseFinetuning.freeze(train_bn=False)``)."""
        super().train(mode)
        if mode and getattr(self, "_backbone_frozen", False) and self.backbone is not None:
            self.backbone.eval()
        return self

    def install(
        self,
        backbone: nn.Module,
        prototypes: Tensor,
        prototype_labels: Tensor,
        n_classes: int,
        input_shape: tuple[int, ...] | None,
    ) -> None:
        """Set the network's parts (the prototypes become a parameter, the labels a buffer)."""
        self.backbone = backbone
        self.prototypes = nn.Parameter(prototypes)
        self.register_buffer("prototype_labels", prototype_labels.long())
        self.head = PrototypeHead(n_classes)
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)

    # ------------------------------------------------------------------ state
    @property
    def is_built(self) -> bool:
        return self.backbone is not None

    @property
    def prototypes_ready(self) -> bool:
        """Whether the prototypes are initialised (from data, given, trained or loaded)."""
        return self._prototypes_ready

    def check_fitted(self) -> None:
        """Raises:
        NotFittedError: before the prototypes are initialised."""
        if not self.is_built or not self._prototypes_ready:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: train it (Trainer.fit) first"
            )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        # Weights loaded by hand (not through a checkpoint hook) include trained prototypes.
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if "prototypes" in state_dict:
            self._prototypes_ready = True
        return result

    # ------------------------------------------------------------------ math
    def forward(self, x: Tensor) -> Tensor:
        """Latent codes: ``(n, …) → (n, latent_dim)``."""
        return self.backbone(x)

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances ``(n, P)`` from latent codes ``(n, latent_dim)`` to the prototypes,
        always in float32 or wider (also under mixed precision)."""
        return self.head.distances(z, self.prototypes)

    def as_input(self, x: Any) -> Tensor:
        """Inputs as a tensor on the network's device, in its floating dtype."""
        if self.prototypes is None:
            return torch.as_tensor(x).to(dtype=torch.float32)
        return torch.as_tensor(x).to(device=self.prototypes.device, dtype=self.prototypes.dtype)

    def latent_in_chunks(self, x: Tensor) -> Tensor:
        """Latent codes of ``x`` computed about ``LATENT_CHUNK_BYTES`` of float32 inputs (at
        most ``CHUNK`` samples) at a time, each chunk moved to the network's device on its own
        (the whole ``x`` never is)."""
        size = max(1, min(CHUNK, LATENT_CHUNK_BYTES // (4 * max(1, math.prod(x.shape[1:])))))
        return torch.cat(
            [self.backbone(self.as_input(x[i : i + size])) for i in range(0, len(x), size)]
        )

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def initialize_from(
        self,
        x: Tensor,
        y: Tensor,
        initializer: str | Callable = "stratified_random",
        initializer_kwargs: Mapping[str, Any] | None = None,
        seed: int = 42,
    ) -> tuple[Tensor, Tensor]:
        """Prototypes and labels initialised from the untrained backbone's latent codes of
        ``x`` (labels ``y``, class indices), on the CPU, seeded by ``seed``;
        [`set_prototypes`][lvqmln_torch.core.network.PrototypeNetwork.set_prototypes] installs them. A backbone that standardises its inputs (the
        CNN's ``standardize``) measures their statistics on ``x`` first (in place).

        Raises:
            ValueError: for empty data, labels outside the classes, fewer than 2 classes
                present, or an initializer that returns the wrong shape.
        """
        n_classes = self.head.n_classes
        y = torch.as_tensor(y, dtype=torch.long)
        if y.numel() == 0:
            raise ValueError("the training data are empty (0 samples)")
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise ValueError(
                f"training labels must be class indices in [0, {n_classes}), got values in "
                f"[{int(y.min())}, {int(y.max())}]; map labels with ArrayDataModule (any "
                "sortable labels) or set n_classes"
            )
        check_n_classes(int(torch.unique(y).numel()), "the training data")
        if isinstance(self.backbone, CNNBackbone):
            self.backbone.set_input_statistics(x, CHUNK)
        was_training = self.backbone.training
        self.backbone.eval()  # no side effects: BatchNorm statistics and dropout untouched
        try:
            z = self.latent_in_chunks(x)
        finally:
            self.backbone.train(was_training)
        counts = torch.bincount(self.prototype_labels.cpu(), minlength=n_classes).tolist()
        prototypes, labels = initialize_prototypes(
            z.cpu(),
            y.cpu(),
            counts,
            initializer,
            generator=seeded_generator(seed, 1),
            **(initializer_kwargs or {}),
        )
        if prototypes.shape != self.prototypes.shape:
            raise ValueError(
                f"the initializer returned {tuple(prototypes.shape)} prototypes; the model "
                f"expects {tuple(self.prototypes.shape)}"
            )
        return prototypes, labels

    def input_statistics(self) -> list[Tensor]:
        """The input statistics that [`initialize_from`][lvqmln_torch.core.network.PrototypeNetwork.initialize_from] measures (the CNN's
        ``input_mean`` and ``input_std`` with ``standardize``; else none)."""
        backbone = self.backbone
        if isinstance(backbone, CNNBackbone) and backbone.standardize:
            return [backbone.input_mean, backbone.input_std]
        return []

    @torch.no_grad()
    def set_prototypes(self, prototypes: Tensor, labels: Tensor) -> None:
        """Copy initial prototypes and labels in (device and dtype kept)."""
        self.prototypes.copy_(prototypes.to(self.prototypes))
        self.prototype_labels.copy_(labels.to(self.prototype_labels))
        self._prototypes_ready = True

    # ------------------------------------------------------------------ inference
    def check_inputs(self, x: Tensor) -> None:
        """Inputs must match the built backbone: ``(n, d)`` or ``(n, C, H, W)``, not empty,
        finite.

        Raises:
            ValueError: naming the expected shape, or the empty or non-finite input.
        """
        shape = self.input_shape
        if shape is not None and (x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape):
            if len(shape) == 1:
                raise ValueError(
                    f"expected inputs of shape (n, {shape[0]}) (the MLP was fitted on "
                    f"{shape[0]} features), got {tuple(x.shape)}"
                )
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, shape))}) (the CNN was fitted "
                f"on that shape), got {tuple(x.shape)}"
            )
        if len(x) == 0:
            raise ValueError(f"the inputs are empty (shape {tuple(x.shape)})")
        # Chunk by chunk: no (n, …) mask of a large input at once.
        if not all(bool(torch.isfinite(x[i : i + CHUNK]).all()) for i in range(0, len(x), CHUNK)):
            raise ValueError("the inputs contain NaN or Inf values; clean or impute them first")

    def inference(self, x: Any, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """``fn`` applied to the checked inputs in chunks, in eval and inference mode."""
        self.check_fitted()
        x = self.as_input(x)
        self.check_inputs(x)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return torch.cat([fn(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])
        finally:
            self.train(was_training)

    def transform(self, x: Any) -> Tensor:
        """Latent codes ``(n, latent_dim)`` of ``x`` (array or tensor)."""
        return self.inference(x, self.backbone)

    def predict_proba(self, x: Any) -> Tensor:
        """``(n, n_classes)`` softmax over classes of −(per-class minimum squared distance) / T
        (``T`` = [`temperature`][lvqmln_torch.core.network.PrototypeNetwork.temperature])."""
        return self.inference(
            x,
            lambda b: self.head.probabilities(
                self.distances(self.backbone(b)), self.prototype_labels
            ),
        )

    def predict_indices(self, x: Any) -> Tensor:
        """``(n,)`` class indices of the nearest prototypes (first index on ties)."""
        return self.inference(
            x, lambda b: self.head.labels(self.distances(self.backbone(b)), self.prototype_labels)
        )

    # ------------------------------------------------------------------ explanations
    # Each is the function of the same name in lvqmln_torch.core.explanations (documented there).
    def explain(self, x: Any) -> dict[str, Tensor]:
        """Why each sample gets its label: ``(n,)`` tensors ``label``, ``prototype``,
        ``distance``, ``rival_prototype``, ``rival_label``, ``rival_distance`` and
        ``confidence``, and ``radius`` (the certified L2 radius) when the backbone has a
        ``lipschitz_bound()`` (see [`explain`][lvqmln_torch.core.explanations.explain])."""
        return explanations.explain(self, x)

    def confidence(self, x: Any) -> Tensor:
        """``(n,)`` relative-similarity certainty of each prediction, in [0, 1] (the
        ``confidence`` of [`explain`][lvqmln_torch.core.network.PrototypeNetwork.explain])."""
        return explanations.explain(self, x)["confidence"]

    def prototype_exemplars(self, x: Any, y: Any = None, k: int = 5) -> tuple[Tensor, Tensor]:
        """``(indices (P, k), distances (P, k))`` of the ``k`` samples of ``x`` nearest to each
        prototype (see [`prototype_exemplars`][lvqmln_torch.core.explanations.prototype_exemplars])."""
        return explanations.prototype_exemplars(self, x, y, k)

    def project_prototypes(self, x: Any, y: Any) -> Tensor:
        """Move each prototype onto its nearest sample of its class; ``(P,)`` sample indices
        (see [`project_prototypes`][lvqmln_torch.core.explanations.project_prototypes])."""
        return explanations.project_prototypes(self, x, y)

    def set_projection(self, samples: Tensor, sources: Tensor) -> None:
        """Set the prototypes to the latent codes of ``samples`` (see
        [`set_projection`][lvqmln_torch.core.explanations.set_projection])."""
        explanations.set_projection(self, samples, sources)

    def predict_with_reject(self, x: Any, threshold: float, reject_label: int = -1) -> Tensor:
        """``(n,)`` class indices, ``reject_label`` below the ``threshold`` confidence (see
        [`predict_with_reject`][lvqmln_torch.core.explanations.predict_with_reject])."""
        return explanations.predict_with_reject(self, x, threshold, reject_label)

    def accuracy_rejection_curve(self, x: Any, y: Any) -> dict[str, Tensor]:
        """Accuracy on the accepted samples against the rejection rate; ``y``: class indices
        (see [`rejection_curve`][lvqmln_torch.core.explanations.rejection_curve])."""
        return explanations.rejection_curve(self, x, y)

    def rejection_threshold(self, x: Any, y: Any, target_accuracy: float) -> float:
        """The smallest threshold reaching ``target_accuracy`` on ``(x, y)`` (see
        [`rejection_threshold`][lvqmln_torch.core.explanations.rejection_threshold])."""
        return explanations.rejection_threshold(self, x, y, target_accuracy)

    # ------------------------------------------------------------------ calibration
    # Each is the function of the same name in lvqmln_torch.core.calibration (documented there).
    @property
    def temperature(self) -> float:
        """The temperature ``T`` of the probabilities (1 until calibrated)."""
        return float(self.head.temperature)

    def set_temperature(self, temperature: float) -> None:
        """Set ``T`` (see [`set_temperature`][lvqmln_torch.core.calibration.set_temperature])."""
        calibration.set_temperature(self, temperature)

    def class_distances(self, x: Any) -> Tensor:
        """``(n, k)`` squared distance from each sample to the nearest prototype of each class
        (see [`class_distances`][lvqmln_torch.core.calibration.class_distances])."""
        return calibration.class_distances(self, x)

    def nonconformity(self, x: Any, y: Any = None) -> Tensor:
        """``(n, k)`` nonconformity scores μ of every class, or ``(n,)`` of the classes ``y``
        (see [`nonconformity_of`][lvqmln_torch.core.calibration.nonconformity_of])."""
        return calibration.nonconformity_of(self, x, y)

    def calibrate(
        self, x: Any, y: Any, bounds: tuple[float, float] = calibration.DEFAULT_BOUNDS
    ) -> float:
        """Fit ``T`` on held-out ``(n, …)`` inputs ``x`` with ``(n,)`` class indices ``y``;
        returns it (see [`calibrate`][lvqmln_torch.core.calibration.calibrate])."""
        return calibration.calibrate(self, x, y, bounds)

    # ------------------------------------------------------------------ certified robustness
    def lipschitz_bound(self) -> float:
        """Upper bound on the backbone's L2 Lipschitz constant (see
        [`lipschitz_bound`][lvqmln_torch.core.certify.lipschitz_bound])."""
        return certify.lipschitz_bound(self)

    def certify_latent(self, z: Any, y: Any = None) -> Tensor:
        """``(n,)`` certified L2 radii around ``(n, latent_dim)`` latent codes (0 where wrong
        against ``y``; see [`certify_latent`][lvqmln_torch.core.certify.certify_latent])."""
        return certify.certify_latent(self, z, y)

    def certify(self, x: Any, y: Any = None) -> Tensor:
        """``(n,)`` certified L2 radii in input space (0 where wrong against ``y``; see
        [`certify`][lvqmln_torch.core.certify.certify])."""
        return certify.certify(self, x, y)

    def certified_accuracy(self, x: Any, y: Any, eps: float | Sequence[float]) -> Tensor:
        """``(len(eps),)`` shares of samples predicted correctly with a certified radius
        ``≥ ε`` (see [`certified_accuracy`][lvqmln_torch.core.certify.certified_accuracy])."""
        return certify.certified_accuracy(self, x, y, eps)
