"""The torch-only core of LVQMLN: a plain ``nn.Module`` holding the backbone, the prototypes,
their labels and the prototype head, with seeded construction, initialisation from data and
chunked inference. The LightningModule ([`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]) is this network plus
Lightning's training hooks; inference, export and the estimator's numpy engine use the network
directly, so they never import Lightning."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from sklearn.exceptions import NotFittedError
from torch import Tensor, nn

from .backbones import CNNBackbone, MLPBackbone
from .explain import CHUNK, PrototypeExplanations
from .head import PrototypeHead
from .initializers import initialize_prototypes, prototype_labels_for, resolve_prototypes_per_class
from .validation import check_n_classes

__all__ = [
    "BACKBONES",
    "DEFAULT_ACTIVATION",
    "DEFAULT_BB_LR_FACTOR",
    "PrototypeNetwork",
    "backbone_lr",
    "build_parts",
]

BACKBONES = ("mlp", "cnn")
# activation=None means the backbone's default: upstream's for the MLP (the prosemble drop-in);
# tanh for our CNN, whose bounded, zero-centred codes keep the prototypes apart
# (benchmarks/cnn_diagnosis.py: relu and sigmoid stay at chance on digits images).
DEFAULT_ACTIVATION = {"mlp": "sigmoid", "cnn": "tanh"}
# bb_lr=None means lr times this factor. The CNN's backbone learns at 0.1 lr: Adam moves every
# weight by about its learning rate per step whatever the gradient's size, so one step moves a
# latent code by about bb_lr times the sum of the head's |inputs|, which grows with the image
# (512 inputs on 8x8 digits, 6,272 on 28x28 MNIST). At 0.3 lr (and more so at lr) the first
# steps on MNIST saturate the tanh codes and push every code away from every prototype alike
# (mu -> 0, the gradients vanish, accuracy 0.57 after an epoch); at 0.1 lr they do not, on
# 8x8 and 28x28 images alike (benchmarks/cnn_diagnosis.py, docs/images.md).
DEFAULT_BB_LR_FACTOR = {"mlp": 1.0, "cnn": 0.1, "custom": 1.0}


def seeded_generator(seed: int, offset: int) -> torch.Generator:
    """The generator of one seeded stream: ``offset`` 0 the backbone, 1 the prototypes."""
    return torch.Generator().manual_seed(int(seed) + offset)


def backbone_lr(config: Mapping[str, Any]) -> float:
    """The backbone's learning rate: ``bb_lr``, or ``lr`` times the backbone's
    [`DEFAULT_BB_LR_FACTOR`][lvqmln_torch.core.network.DEFAULT_BB_LR_FACTOR] when ``bb_lr`` is ``None``."""
    if config.get("bb_lr") is not None:
        return float(config["bb_lr"])
    return float(config["lr"]) * DEFAULT_BB_LR_FACTOR.get(config["backbone"], 1.0)


def build_parts(
    config: Mapping[str, Any], custom_backbone: nn.Module | None = None
) -> tuple[nn.Module, Tensor, Tensor, int, tuple[int, ...] | None, bool]:
    """The parts of a network described by validated hyperparameters (see
    [`LVQMLN`][lvqmln_torch.lightning.model.LVQMLN]): ``(backbone, prototypes (P, latent_dim), labels (P,),
    n_classes, per-sample input shape or None, prototypes given)``. Without explicit initial
    prototypes the prototypes are zeros, to be initialised from data.

    Raises:
        ValueError: when a size is missing or the class count and labels disagree.
    """
    kind = config["backbone"]
    activation = config.get("activation") or DEFAULT_ACTIVATION.get(kind, "sigmoid")
    generator = seeded_generator(config["seed"], 0)
    if custom_backbone is not None:
        backbone, input_shape = custom_backbone, None
    elif kind == "mlp":
        if config.get("in_features") is None:
            raise ValueError("backbone='mlp' needs in_features (or a datamodule that has it)")
        backbone = MLPBackbone(
            config["in_features"],
            config["hidden_sizes"],
            config["latent_dim"],
            activation,
            config["latent_activation"],
            generator=generator,
        )
        input_shape = (int(config["in_features"]),)
    else:
        if config.get("input_shape") is None:
            raise ValueError("backbone='cnn' needs input_shape (C, H, W)")
        backbone = CNNBackbone(
            config["input_shape"],
            config["channels"],
            config["kernel_sizes"],
            config["latent_dim"],
            activation,
            config["latent_activation"],
            generator=generator,
            head=config.get("cnn_head", "mean"),
            standardize=config.get("standardize_input", False),
        )
        input_shape = tuple(int(s) for s in config["input_shape"])
    n_classes = config.get("n_classes")
    given = config.get("initial_prototypes") is not None
    if given:
        prototypes = torch.tensor(config["initial_prototypes"], dtype=torch.get_default_dtype())
        labels = torch.tensor(config["initial_prototype_labels"], dtype=torch.long)
        n_classes = n_classes if n_classes is not None else int(labels.max()) + 1
        if int(labels.max()) >= n_classes:
            raise ValueError(
                f"initial_prototype_labels must be class indices in [0, {n_classes}), "
                f"got max {int(labels.max())}"
            )
    else:
        counts = resolve_prototypes_per_class(
            config["n_prototypes_per_class"], n_classes, config.get("classes")
        )
        prototypes = torch.zeros(sum(counts), config["latent_dim"])
        labels = prototype_labels_for(counts)
    check_n_classes(n_classes, "n_classes")
    classes = config.get("classes")
    if classes is not None and len(classes) != n_classes:
        raise ValueError(f"classes has {len(classes)} entries but n_classes={n_classes}")
    return backbone, prototypes, labels, int(n_classes), input_shape, given


class PrototypeNetwork(PrototypeExplanations, nn.Module):
    """Backbone, prototypes in its latent space, their labels, and the prototype head.

    ``x (n, …) → backbone → z (n, latent_dim) → squared distances (n, P) to the prototypes →
    labels (n,) / probabilities (n, k)``. Built empty (``PrototypeNetwork()``) and filled by
    [`install`][lvqmln_torch.core.network.PrototypeNetwork.install], or from its parts. The explanations, exemplars, projection and reject
    option are [`PrototypeExplanations`][lvqmln_torch.core.explain.PrototypeExplanations]' methods.

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
        if backbone is not None:
            self.install(backbone, prototypes, prototype_labels, n_classes, input_shape)
            self._prototypes_ready = prototypes_ready

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], custom_backbone: nn.Module | None = None
    ) -> PrototypeNetwork:
        """A network built from validated hyperparameters (see [`build_parts`][lvqmln_torch.core.network.build_parts])."""
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
        if "prototypes" in parts:
            self.prototypes.requires_grad_(False)

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
        """Latent codes of ``x`` computed ``CHUNK`` samples at a time, each chunk moved to the
        network's device on its own (the whole ``x`` never is)."""
        return torch.cat(
            [self.backbone(self.as_input(x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)]
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
        z = self.latent_in_chunks(x)
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
        """``(n, n_classes)`` softmax over classes of −(per-class minimum squared distance)."""
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
