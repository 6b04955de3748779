"""How a [`PrototypeNetwork`][lvqmln_torch.core.network.PrototypeNetwork] is built from validated
hyperparameters: the backbones and their defaults (activation, backbone learning-rate
factor), the seeded random streams, and the parts (backbone, placeholder or given prototypes,
labels, sizes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .backbones import IdentityBackbone, MLPBackbone
from .cnn import CNNBackbone
from .initializers import prototype_labels_for, resolve_prototypes_per_class
from .validation import check_n_classes

__all__ = [
    "BACKBONES",
    "DEFAULT_ACTIVATION",
    "DEFAULT_BB_LR_FACTOR",
    "FLAT_BACKBONES",
    "UPSTREAM_CNN",
    "backbone_lr",
    "build_parts",
    "seeded_generator",
]

BACKBONES = ("mlp", "cnn", "identity")
# The backbones of flat (n, d) inputs; "identity" keeps the prototypes in input space.
FLAT_BACKBONES = ("mlp", "identity")
# activation=None means the backbone's default: upstream's for the MLP (the prosemble drop-in);
# for our CNN, tanh on the latent codes, whose bounded, zero-centred codes keep the prototypes
# apart (benchmarks/cnn_diagnosis.py: relu and sigmoid latent codes stay at chance on digits
# images), while its convolutions and dense layer use conv_activation (relu by default).
DEFAULT_ACTIVATION = {"mlp": "sigmoid", "cnn": "tanh"}
# bb_lr=None means lr times this factor. The CNN's backbone learns at 0.05 lr (5e-4 at the
# default lr) while the prototypes move at lr: Adam moves every weight by about its learning
# rate per step whatever the gradient's size, so one step moves a layer's outputs by about
# the rate times the sum of its |inputs| (3,136 pooled features into the dense layer on 28x28
# MNIST). Faster, the first steps saturate the tanh codes and push every code away from every
# prototype alike (mu -> 0, the gradients vanish): on 1,000 digits upsampled to 28x28, 6
# epochs reach 0.94-0.98 at 0.05 lr against 0.48-0.77 at 0.1 lr (softmax control 0.94-0.95),
# and MNIST meets its targets at both (benchmarks/cnn_small_data.py, docs/images.md).
DEFAULT_BB_LR_FACTOR = {"mlp": 1.0, "cnn": 0.05, "custom": 1.0, "identity": 1.0}
"""Backbone kind → the backbone's learning rate as a factor of ``lr`` when ``bb_lr`` is
None."""
UPSTREAM_CNN = {
    "cnn_head": "mean",
    "standardize_input": False,
    "conv_activation": None,
    "cnn_hidden": [],
}
"""The CNN hyperparameters of upstream's (prosemble) architecture: global average pooling on
raw inputs, the activation after every layer, no dense layers. With ``activation="relu"``
and ``bb_lr=lr`` it is upstream's CNN (the parity tests', ``from_prosemble``'s)."""


def seeded_generator(seed: int, offset: int) -> torch.Generator:
    """The generator of one seeded stream: ``offset`` 0 the backbone, 1 the prototypes."""
    return torch.Generator().manual_seed(int(seed) + offset)


def backbone_lr(config: Mapping[str, Any]) -> float:
    """The backbone's learning rate: ``bb_lr``, or ``lr`` times the backbone's
    [`DEFAULT_BB_LR_FACTOR`][lvqmln_torch.core.construction.DEFAULT_BB_LR_FACTOR] when ``bb_lr`` is ``None``."""
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
            lipschitz=config.get("lipschitz"),
        )
        input_shape = (int(config["in_features"]),)
    elif kind == "identity":
        if config.get("in_features") is None:
            raise ValueError("backbone='identity' needs in_features (or a datamodule that has it)")
        backbone = IdentityBackbone(config["in_features"])
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
            lipschitz=config.get("lipschitz"),
            head=config.get("cnn_head", "mean"),
            standardize=config.get("standardize_input", False),
            conv_activation=config.get("conv_activation"),
            hidden_sizes=config.get("cnn_hidden") or (),
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
        latent_dim = backbone.latent_dim if kind == "identity" else config["latent_dim"]
        prototypes = torch.zeros(sum(counts), latent_dim)
        labels = prototype_labels_for(counts)
    check_n_classes(n_classes, "n_classes")
    classes = config.get("classes")
    if classes is not None and len(classes) != n_classes:
        raise ValueError(f"classes has {len(classes)} entries but n_classes={n_classes}")
    return backbone, prototypes, labels, int(n_classes), input_shape, given
