"""The prototype head: latent codes and prototypes in, squared distances, labels, class
probabilities and the winner/rival pieces of an explanation out. One implementation, used by
the network (and so the LightningModule), the export, the plots and the estimator."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from . import functional as F

__all__ = ["PrototypeHead", "WinnerRival"]


class WinnerRival(NamedTuple):
    """Per sample: the nearest prototype and the nearest prototype of any other class.

    Attributes:
        winner: ``(n,)`` index of the nearest prototype (first on ties).
        winner_distance: ``(n,)`` its squared distance.
        rival: ``(n,)`` index of the nearest prototype whose class differs from the winner's.
        rival_distance: ``(n,)`` its squared distance.
    """

    winner: Tensor
    winner_distance: Tensor
    rival: Tensor
    rival_distance: Tensor


class PrototypeHead(nn.Module):
    """Nearest-prototype decisions in latent space (no parameters of its own).

    Its one buffer, ``temperature`` (a 0-dim tensor, 1 until a calibration fits it: see
    [`fit_temperature`][lvqmln_torch.core.calibration.fit_temperature]), divides the distances
    inside the softmax of [`probabilities`][lvqmln_torch.core.head.PrototypeHead.probabilities];
    labels never depend on it. A ``state_dict`` written before it existed loads with 1.

    Args:
        n_classes: the number of classes ``k``.
    """

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.register_buffer("temperature", torch.ones(()))

    def _load_from_state_dict(self, state_dict, prefix, *args: Any, **kwargs: Any) -> None:
        # Weights saved before temperature scaling existed are uncalibrated: T = 1. (The dict
        # is load_state_dict's own copy: the caller's is never changed.)
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "temperature" not in self._buffers:  # pickled before temperature scaling: T = 1
            self.register_buffer("temperature", torch.ones(()))

    @staticmethod
    def distances(z: Tensor, prototypes: Tensor) -> Tensor:
        """``(n, P)`` squared Euclidean distances from latent codes ``(n, d)`` to prototypes
        ``(P, d)``, computed in float32 or wider, also under mixed precision."""
        dtype = torch.promote_types(torch.promote_types(z.dtype, torch.float32), prototypes.dtype)
        with torch.autocast(z.device.type, enabled=False):
            return F.squared_euclidean_distance(z.to(dtype), prototypes.to(dtype))

    @staticmethod
    def labels(distances: Tensor, prototype_labels: Tensor) -> Tensor:
        """``(n,)`` class indices of the nearest prototypes (first prototype on ties)."""
        return F.wtac(distances, prototype_labels)

    def probabilities(self, distances: Tensor, prototype_labels: Tensor) -> Tensor:
        """``(n, k)`` softmax over classes of −(per-class minimum squared distance) / T, with
        ``T`` the ``temperature`` buffer (1 unless calibrated)."""
        pooled = F.stratified_min_pooling(distances, prototype_labels, self.n_classes)
        return torch.softmax(-pooled / self.temperature.to(pooled.dtype), dim=1)

    @staticmethod
    def winner_rival(distances: Tensor, prototype_labels: Tensor) -> WinnerRival:
        """The nearest prototype and the nearest prototype of another class, per sample (a
        rival distance of the dtype's max when every prototype has the winner's class)."""
        winner = distances.argmin(dim=1)  # first index on ties, as wtac
        other = prototype_labels[None, :] != prototype_labels[winner][:, None]
        fill = distances.new_full((), torch.finfo(distances.dtype).max)
        rival = torch.where(other, distances, fill).argmin(dim=1)
        return WinnerRival(
            winner,
            distances.gather(1, winner[:, None])[:, 0],
            rival,
            torch.where(other, distances, fill).gather(1, rival[:, None])[:, 0],
        )

    def forward(
        self, z: Tensor, prototypes: Tensor, prototype_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(labels (n,), probabilities (n, k))`` of latent codes ``z``."""
        distances = self.distances(z, prototypes)
        return self.labels(distances, prototype_labels), self.probabilities(
            distances, prototype_labels
        )

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}"
