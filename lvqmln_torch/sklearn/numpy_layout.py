"""The numpy engine's memory: the network's parameters as one flat NumPy buffer (each optimizer
group one contiguous slice that torch optimizes in place), and the loader's batches converted
to what [`lvqmln_torch.sklearn.numpy_core`][lvqmln_torch.sklearn.numpy_core] takes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.network import PrototypeNetwork
from .numpy_core import GLVQTargets, Layer, glvq_targets

__all__ = ["CoreBatch", "CoreBatches", "FlatParameters", "parameter_tensors"]


def parameter_tensors(model: PrototypeNetwork) -> list[Tensor]:
    """The prototypes, then every backbone layer's weight and bias."""
    layers = model.backbone.layers
    return [model.prototypes] + [t for layer in layers for t in (layer.weight, layer.bias)]


class FlatParameters:
    """The module's parameters in one flat NumPy buffer, prototypes first, then every backbone
    layer's weight and bias, so each optimizer group (``prototypes``, ``backbone``) is one
    contiguous slice that torch optimizes in place through a shared-memory tensor."""

    def __init__(self, model: PrototypeNetwork, dtype: np.dtype) -> None:
        tensors = parameter_tensors(model)
        self.shapes = [tuple(t.shape) for t in tensors]
        self.offsets = np.cumsum([0] + [math.prod(s) for s in self.shapes]).tolist()
        self.slices = {
            "prototypes": slice(0, self.offsets[1]),
            "backbone": slice(self.offsets[1], self.offsets[-1]),
            "all": slice(0, self.offsets[-1]),
        }
        self.values = np.empty(self.offsets[-1], dtype=dtype)
        for tensor, part in zip(tensors, self.views(self.values)):
            part[...] = tensor.detach().cpu().numpy()

    def views(self, buffer: np.ndarray) -> list[np.ndarray]:
        """The parameters as views of ``buffer`` (any array of this layout)."""
        return [
            buffer[start:end].reshape(shape)
            for start, end, shape in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        ]

    def unflatten(self, buffer: np.ndarray) -> tuple[np.ndarray, list[Layer]]:
        """``(prototypes, [(W, b), …])`` as views of ``buffer``."""
        views = self.views(buffer)
        return views[0], list(zip(views[1::2], views[2::2]))

    def write_to(self, model: PrototypeNetwork, buffer: np.ndarray) -> None:
        """Copy the weights in ``buffer`` into the module's parameters."""
        with torch.no_grad():
            for tensor, part in zip(parameter_tensors(model), self.views(buffer)):
                tensor.copy_(torch.from_numpy(part))


@dataclass(frozen=True)
class CoreBatch:
    """A batch as the NumPy core takes it."""

    x_t: np.ndarray  # (in_features, n) C-contiguous, in the working dtype
    targets: GLVQTargets
    weight_sum: Any  # Σw, or n without sample weights: the batch's weight in the epoch loss


class CoreBatches:
    """The loader's batches for the NumPy core; a batch that repeats (the same tensors every
    epoch, as the full batch is) is converted once."""

    def __init__(self, loader: Any, labels: np.ndarray, dtype: np.dtype) -> None:
        self.loader, self.labels, self.dtype = loader, labels, dtype
        self._last: tuple[Tensor, CoreBatch] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[CoreBatch]:
        for batch in self.loader:
            if self._last is not None and self._last[0] is batch[0]:
                yield self._last[1]
                continue
            x, y = batch[0].numpy(), batch[1].numpy()
            w = batch[2].numpy() if len(batch) == 3 else None
            converted = CoreBatch(
                np.ascontiguousarray(x.T, dtype=self.dtype),
                glvq_targets(y, self.labels, w, self.dtype),
                w.sum() if w is not None else len(y),
            )
            self._last = (batch[0], converted)
            yield converted
