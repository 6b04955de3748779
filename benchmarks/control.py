"""The softmax control of the accuracy benchmark: our backbone with a linear softmax head in
place of the prototypes, trained by a plain torch loop with the same optimizer (Adam, the
backbone at the module's backbone learning rate, the head at ``lr``), batches and epochs.

The backbone is built by the library from the same estimator parameters and seed as ours, so it
starts from the same weights (a CNN also measures the same input statistics), and the head
is ``nn.Linear(latent_dim, n_classes)`` on the latent codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch


def build_backbone(
    params: dict[str, Any], sample_shape: tuple[int, ...], classes: np.ndarray
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The untrained backbone of ``LVQMLNClassifier(**params)`` for this data, and the
    module's hyperparameters."""
    from lvqmln_torch import LVQMLNClassifier
    from lvqmln_torch.core.network import PrototypeNetwork
    from lvqmln_torch.sklearn.params import check_params, module_arguments
    from lvqmln_torch.training.config import module_config

    checked = check_params(LVQMLNClassifier(**params).get_params(deep=False))
    images = len(sample_shape) == 3
    arguments = module_arguments(
        checked,
        in_features=None if images else sample_shape[0],
        input_shape=sample_shape if images else None,
        classes=classes,
    )
    hp = module_config(arguments).hparams
    return PrototypeNetwork.from_config(hp).backbone, hp


def fit_softmax(
    backbone: torch.nn.Module,
    hp: dict[str, Any],
    epoch_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    epochs: int,
    after_epoch: Callable[[Callable[[torch.Tensor], torch.Tensor], float], None] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Train ``backbone`` plus a linear softmax head.

    Args:
        backbone: maps ``(n, ...)`` inputs to ``(n, latent_dim)`` codes.
        hp: the module's hyperparameters (``latent_dim``, ``n_classes``, ``lr``, ``bb_lr``,
            ``backbone``, ``seed``).
        epoch_batches: ``epoch -> iterable of (x, y)`` batches.
        epochs: how many epochs.
        after_epoch: called after each epoch with the predict function and the epoch's
            training seconds.

    Returns:
        ``predict(x) -> (n,)`` class indices.
    """
    from lvqmln_torch.core.construction import backbone_lr

    torch.manual_seed(hp["seed"])
    head = torch.nn.Linear(hp["latent_dim"], hp["n_classes"])
    optimizer = torch.optim.Adam(
        [
            {"params": list(backbone.parameters()), "lr": backbone_lr(hp)},
            {"params": list(head.parameters()), "lr": hp["lr"]},
        ]
    )

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [head(backbone(x[i : i + 2000])).argmax(1) for i in range(0, len(x), 2000)]
        )

    import time

    for epoch in range(epochs):
        start = time.perf_counter()
        for x, y in epoch_batches(epoch):
            loss = torch.nn.functional.cross_entropy(head(backbone(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if after_epoch is not None:
            after_epoch(predict, time.perf_counter() - start)
    return predict


class SoftmaxControl:
    """The control of one ``LVQMLNClassifier(**params)`` column, with ``fit`` / ``predict``
    on the same arrays (labels ``0 … k-1``). Batches: a seeded permutation per epoch cut
    into ``batch_size`` (the whole set when ``None``)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, X: np.ndarray, y: np.ndarray) -> SoftmaxControl:
        self.classes_ = np.unique(y)
        backbone, hp = build_backbone(self.params, X.shape[1:], self.classes_)
        x = torch.as_tensor(X, dtype=torch.float32)
        t = torch.as_tensor(np.searchsorted(self.classes_, y))
        if hasattr(backbone, "set_input_statistics"):
            backbone.set_input_statistics(x[: hp["init_sample_size"]])
        batch = self.params.get("batch_size") or len(x)
        generator = torch.Generator().manual_seed(hp["seed"])

        def epoch_batches(epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
            order = torch.randperm(len(x), generator=generator)
            return (
                (x[order[i : i + batch]], t[order[i : i + batch]]) for i in range(0, len(x), batch)
            )

        self._predict = fit_softmax(backbone, hp, epoch_batches, self.params.get("max_iter", 100))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self._predict(torch.as_tensor(X, dtype=torch.float32)).numpy()]
