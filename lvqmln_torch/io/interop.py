"""Conversion between the torch backbones and the seed's JAX parameter layout.

The JAX side is plain numpy, so this module needs no JAX import:

- MLP: a list of ``(W[in, out], b[out])``.
- CNN: ``{"conv_layers": [(kernel[H, W, I, O], bias[O])], "linear": (W[in, out], b[out])}``
  for NHWC images (torch uses NCHW images and OIHW kernels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.backbones import MLPBackbone
from ..core.cnn import CNNBackbone

__all__ = [
    "backbone_from_jax",
    "backbone_to_jax",
    "images_nhwc_to_nchw",
]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _linear_to_jax(layer: torch.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return _np(layer.weight.T), _np(layer.bias)


def _convert(param: Tensor, value: Any, name: str, perm: tuple[int, ...] | None = None) -> Tensor:
    """``value`` (seed layout; ``perm`` maps it to torch's) as a tensor like ``param``; shapes
    are checked, and reported, in the seed's layout."""
    # np.array copies: arrays from JAX are read-only, which torch.as_tensor warns about.
    array = np.array(value)
    expected = tuple(param.shape)
    if perm is not None:
        expected = tuple(expected[i] for i in np.argsort(perm))
    if array.shape != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {array.shape}")
    if perm is not None:
        array = array.transpose(perm)
    return torch.as_tensor(array, dtype=param.dtype, device=param.device)


def _check_upstream_cnn(backbone: CNNBackbone) -> None:
    """The seed's layout covers upstream's CNN only.

    Raises:
        ValueError: for our head, input standardisation, dense layers or a convolutions'
            activation of its own, naming the settings to use.
    """
    own_conv_activation = type(backbone.conv_activation) is not type(backbone.activation)
    if (
        backbone.head_kind != "mean"
        or backbone.standardize
        or backbone.dense
        or own_conv_activation
    ):
        raise ValueError(
            "only upstream's CNN architecture has the seed's JAX layout: build it with "
            "cnn_head='mean', standardize_input=False, cnn_hidden=[] and conv_activation=None "
            "(CNNBackbone(head='mean', standardize=False)); this one has "
            f"head={backbone.head_kind!r}, standardize={backbone.standardize}, "
            f"{len(backbone.dense)} dense layers, convolutions' activation "
            f"{type(backbone.conv_activation).__name__} and latent activation "
            f"{type(backbone.activation).__name__}"
        )


def backbone_to_jax(backbone: MLPBackbone | CNNBackbone) -> Any:
    """Export backbone parameters in the seed's layout (numpy arrays, same dtype).

    Raises:
        ValueError: for a CNN other than upstream's architecture.
    """
    if isinstance(backbone, MLPBackbone):
        return [_linear_to_jax(layer) for layer in backbone.layers]
    if isinstance(backbone, CNNBackbone):
        _check_upstream_cnn(backbone)
        convs = [(_np(c.weight.permute(2, 3, 1, 0)), _np(c.bias)) for c in backbone.convs]
        return {"conv_layers": convs, "linear": _linear_to_jax(backbone.head)}
    raise TypeError(
        f"backbone_to_jax supports MLPBackbone and CNNBackbone, got {type(backbone).__name__}"
    )


def backbone_from_jax(backbone: MLPBackbone | CNNBackbone, params: Any) -> None:
    """Load parameters in the seed's layout into ``backbone`` (in place).

    Raises:
        ValueError: when the number of layers or a shape does not match the backbone, or for
            a CNN other than upstream's architecture; the backbone is then left unchanged
            (everything is checked before anything is copied).
    """
    updates: list[tuple[Tensor, Tensor]] = []
    if isinstance(backbone, MLPBackbone):
        params = list(params)
        if len(params) != len(backbone.layers):
            raise ValueError(
                f"MLP has {len(backbone.layers)} layers but the parameters have {len(params)}"
            )
        for i, (layer, (w, b)) in enumerate(zip(backbone.layers, params)):
            updates.append((layer.weight, _convert(layer.weight, w, f"layer {i} weight", (1, 0))))
            updates.append((layer.bias, _convert(layer.bias, b, f"layer {i} bias")))
    elif isinstance(backbone, CNNBackbone):
        _check_upstream_cnn(backbone)
        convs = list(params["conv_layers"])
        if len(convs) != len(backbone.convs):
            raise ValueError(
                f"CNN has {len(backbone.convs)} conv layers but the parameters have {len(convs)}"
            )
        for i, (conv, (kernel, bias)) in enumerate(zip(backbone.convs, convs)):
            updates.append(
                (conv.weight, _convert(conv.weight, kernel, f"conv {i} kernel", (3, 2, 0, 1)))
            )
            updates.append((conv.bias, _convert(conv.bias, bias, f"conv {i} bias")))
        w, b = params["linear"]
        head = backbone.head
        updates.append((head.weight, _convert(head.weight, w, "linear weight", (1, 0))))
        updates.append((head.bias, _convert(head.bias, b, "linear bias")))
    else:
        raise TypeError(
            f"backbone_from_jax supports MLPBackbone and CNNBackbone, got {type(backbone).__name__}"
        )
    with torch.no_grad():
        for param, value in updates:
            param.copy_(value)


def images_nhwc_to_nchw(images: np.ndarray | Tensor) -> np.ndarray:
    """``(n, H, W, C)`` → ``(n, C, H, W)`` as numpy."""
    array = _np(images) if isinstance(images, Tensor) else np.asarray(images)
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
