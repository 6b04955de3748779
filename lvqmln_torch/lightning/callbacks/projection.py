"""Prototype projection (the "push" of ProtoPNet): every prototype becomes the latent code of
a real training sample of its class."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate
from typing_extensions import override

from ...core.explain import CHUNK, checked_labels, merge_nearest, nearest_samples
from ...core.validation import Boolean, Integer
from ._shadow import ShadowWeights
from ._state_key import KeyedState
from .restore_best import RestoreBest

__all__ = ["PrototypeProjection", "TrainingSamples"]


class TrainingSamples:
    """The training samples by a fixed, sampler-independent index, as every rank sees them.

    From the datamodule's ``train_tensors()`` (``(X, y, …)``, as
    [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] has), else from the training dataloader's map-style
    ``Dataset`` (``__len__`` and ``__getitem__`` returning ``(x, y, …)`` or
    ``{"x": …, "y": …}``). With a datamodule's ``train_index_`` (the rows of the arrays it
    was given that form the training split) the recorded indices are those rows.

    Raises:
        ValueError: when the trainer has neither.
    """

    def __init__(self, trainer: pl.Trainer) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        self.tensors: tuple[Tensor, Tensor] | None = None
        self.dataset: Dataset | None = None
        self.index_map: Tensor | None = None
        if hasattr(datamodule, "train_tensors"):
            x, y = datamodule.train_tensors()[:2]
            self.tensors = (x, y)
            self.n = len(x)
            if getattr(datamodule, "train_index_", None) is not None:
                self.index_map = torch.as_tensor(datamodule.train_index_, dtype=torch.long)
            return
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, Dataset) and hasattr(dataset, "__len__"):
            self.dataset = dataset
            self.n = len(dataset)
            return
        raise ValueError(
            "PrototypeProjection needs the training samples by a fixed index: a datamodule "
            "with train_tensors() returning (X, y, ...) (as ArrayDataModule), or a training "
            "DataLoader over a map-style Dataset (with __len__ and __getitem__ returning "
            f"(x, y, ...)); got datamodule {type(datamodule).__name__} and training data "
            f"{type(dataset if dataset is not None else loader).__name__}"
        )

    def rows(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of samples ``start … stop-1``."""
        if self.tensors is not None:
            return self.tensors[0][start:stop], self.tensors[1][start:stop]
        return self.take(torch.arange(start, stop))

    def take(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the samples at ``index``."""
        if self.tensors is not None:
            at = index.to(self.tensors[0].device)
            return self.tensors[0][at], self.tensors[1][at]
        batch = default_collate([self.dataset[i] for i in index.tolist()])
        if isinstance(batch, dict):
            return batch["x"], batch["y"]
        return batch[0], batch[1]

    def blocks(self, start: int, stop: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """``(offset, x, y)`` blocks covering samples ``start … stop-1``."""
        for begin in range(start, stop, CHUNK):
            yield (begin, *self.rows(begin, min(begin + CHUNK, stop)))

    def recorded(self, index: Tensor) -> Tensor:
        """The indices to record for samples ``index`` (rows of the original arrays)."""
        return index if self.index_map is None else self.index_map[index]


class PrototypeProjection(KeyedState):
    """Replace each prototype by the latent code of its nearest training sample of the same
    class (the "push" step of ProtoPNet, Chen et al., NeurIPS 2019), so every prototype is a
    real, showable example. The chosen samples' indices are kept in the module's
    ``prototype_sources`` (saved in its checkpoints).

    The search is exact (ties by index) and runs on the module's device in chunks. Under DDP
    every rank searches its share of the samples, the candidates are gathered and the
    nearest kept, so every rank ends on the same prototypes and sources as one process.

    The training samples are read by a fixed index (see [`TrainingSamples`][lvqmln_torch.lightning.callbacks.projection.TrainingSamples]): a
    datamodule with ``train_tensors()`` (such as [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule],
    whose indices are rows of the arrays it was given), or a training DataLoader over a
    map-style Dataset (indices of that Dataset). Other training data raise a ``ValueError``.

    Projecting at the end of training projects the weights the model ends on: the EMA or
    lookahead weights, or those of [`RestoreBest`][lvqmln_torch.lightning.callbacks.RestoreBest]'s best epoch;
    and rewrites the checkpoint of the final state (``ModelCheckpoint``'s ``last.ckpt``, or
    its latest checkpoint when it monitors nothing) so that it holds the projection.

    Args:
        every_n_epochs: also project after every this many training epochs (``None``: never).
        at_end: project when training ends.
    """

    state_settings = ("every_n_epochs", "at_end")

    def __init__(self, every_n_epochs: int | None = None, at_end: bool = True) -> None:
        self.every_n_epochs = Integer(1, none=True)("every_n_epochs", every_n_epochs)
        self.at_end = Boolean()("at_end", at_end)
        if self.every_n_epochs is None and not self.at_end:
            raise ValueError("PrototypeProjection never projects: set every_n_epochs or at_end")
        self.projections = 0

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        frozen = getattr(pl_module, "hparams", {}).get("freeze") or ()
        if stage == "fit" and "prototypes" in frozen:
            raise ValueError(
                "PrototypeProjection replaces the prototypes, but they are frozen "
                "(freeze=['prototypes']); unfreeze them or drop the callback"
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        TrainingSamples(trainer)  # unusable training data fail now, not after training

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = self.every_n_epochs
        if n is not None and (trainer.current_epoch + 1) % n == 0:
            self.project(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.at_end:
            return
        # The weights the fit ends on: RestoreBest's (loaded in on_fit_end) or the evaluating
        # shadow's (copied in on_train_end, maybe after this hook). Install them now, project,
        # and write the projected prototypes back into those copies, so whichever callback
        # runs later ends on the projection.
        restore = [c for c in trainer.callbacks if isinstance(c, RestoreBest) and c.best_state]
        shadows = [c for c in trainer.callbacks if isinstance(c, ShadowWeights) and c.shadow]
        with torch.no_grad():
            if restore:
                pl_module.load_state_dict(restore[-1].best_state)
            else:
                for callback in shadows:
                    if callback.evaluates(trainer):
                        params = dict(pl_module.named_parameters())
                        for name, value in callback.shadow.items():
                            params[name].copy_(value)
            self.project(trainer, pl_module)
            for callback in restore:
                callback.best_state["prototypes"] = pl_module.prototypes.detach().clone()
            for callback in shadows:
                if "prototypes" in callback.shadow:
                    callback.shadow["prototypes"].copy_(pl_module.prototypes)
        # The checkpoint of the fit's final state now holds the projection too.
        for callback in trainer.checkpoint_callbacks:
            latest = callback.best_model_path if callback.monitor is None else ""
            for path in dict.fromkeys(p for p in (callback.last_model_path, latest) if p):
                trainer.save_checkpoint(path)

    def project(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor:
        """Project the prototypes now (every rank must call this).

        Returns:
            ``(P,)`` the recorded sample indices.
        """
        samples = TrainingSamples(trainer)
        rank, world = trainer.global_rank, trainer.world_size
        start, stop = samples.n * rank // world, samples.n * (rank + 1) // world
        labels = pl_module.prototype_labels
        distances = torch.full((len(labels), 1), float("inf"), device=labels.device)
        distances = distances.to(torch.promote_types(pl_module.prototypes.dtype, torch.float32))
        indices = torch.full((len(labels), 1), -1, dtype=torch.long, device=labels.device)
        for offset, x, y in samples.blocks(start, stop):
            x = x.to(pl_module.prototypes)
            y = checked_labels(pl_module, y, len(x))
            d, i = nearest_samples(pl_module, x, 1, y, offset=offset)
            distances, indices = merge_nearest(
                torch.cat([distances, d], 1), torch.cat([indices, i], 1), 1
            )
        if world > 1:  # every rank's candidate, then the nearest (ties by index) everywhere
            gathered_d = trainer.strategy.all_gather(distances)  # (world, P, 1)
            gathered_i = trainer.strategy.all_gather(indices)
            distances, indices = merge_nearest(
                torch.cat(list(gathered_d), 1), torch.cat(list(gathered_i), 1), 1
            )
        sources = torch.where(torch.isinf(distances), -1, indices)[:, 0].cpu()
        x, _ = samples.take(sources.clamp(min=0))
        pl_module.set_projection(x, sources)
        if world > 1:  # identical on every rank, bit for bit
            prototypes = trainer.strategy.broadcast(pl_module.prototypes.detach().clone(), src=0)
            with torch.no_grad():
                pl_module.prototypes.copy_(prototypes)
        pl_module.prototype_sources = samples.recorded(sources)
        self.projections += 1
        return pl_module.prototype_sources

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"projections": self.projections}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.projections = state_dict["projections"]
