"""Plot the latent space during and after a fit: PNG files and, where the logger supports
images, the logger."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from ._shadow import evaluation_state

__all__ = ["LatentSpacePlot"]


class LatentSpacePlot(Callback):
    """Draw the training data and the prototypes in the latent space with
    [`plot_latent_space`][lvqmln_torch.viz.plotting.plot_latent_space] (decision regions for a 2-D latent space,
    the first two principal components for more dimensions).

    A plot is written when the fit ends (``latent_space.png``, the weights the fit ended with)
    and, with ``every_n_epochs``, after every n-th training epoch
    (``latent_space_epoch=0009.png``, the weights validation would use: EMA / lookahead
    slow weights when those callbacks are active). Each figure also goes to every logger that
    takes figures (TensorBoard's ``add_figure``, or a ``log_image`` method as in W&B); other
    loggers are skipped. Runs on the global-zero rank only.

    Args:
        every_n_epochs: also plot after every n-th epoch (``None``: only at the end).
        dirpath: folder of the PNG files (default: ``<trainer.log_dir>/latent_space``, or
            ``<default_root_dir>/latent_space`` without a logger).
        max_samples: plot at most this many training samples (a seeded random subset).
        log_to_logger: send the figures to the loggers as well.
    """

    def __init__(
        self,
        every_n_epochs: int | None = None,
        dirpath: str | os.PathLike | None = None,
        max_samples: int = 2000,
        log_to_logger: bool = True,
    ) -> None:
        if every_n_epochs is not None and (
            isinstance(every_n_epochs, bool)
            or not isinstance(every_n_epochs, int)
            or every_n_epochs < 1
        ):
            raise ValueError(
                f"every_n_epochs must be a positive integer or None, got {every_n_epochs!r}"
            )
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
        self.every_n_epochs = every_n_epochs
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.max_samples = max_samples
        self.log_to_logger = log_to_logger
        self.paths: list[Path] = []

    # ------------------------------------------------------------------ hooks
    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if trainer.is_global_zero and not trainer.sanity_checking:
            name = f"latent_space_epoch={trainer.current_epoch:04d}.png"
            title = f"Latent space after {trainer.current_epoch + 1} epochs"
            self._plot(trainer, pl_module, name, title, evaluation_weights=True)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            title = f"Latent space after {trainer.current_epoch} epochs"
            self._plot(trainer, pl_module, "latent_space.png", title, evaluation_weights=False)

    # ------------------------------------------------------------------ helpers
    def _folder(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return self.dirpath
        base = trainer.log_dir if trainer.loggers else None
        return Path(base or trainer.default_root_dir) / "latent_space"

    def _training_data(self, trainer: pl.Trainer) -> tuple[Tensor, Tensor]:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "init_sample"):
            # A seeded subset that reads only its own rows (of a memory-mapped file, too).
            x, y = datamodule.init_sample(self.max_samples, 0)
        elif datamodule is not None and hasattr(datamodule, "train_tensors"):
            x, y = datamodule.train_tensors()[:2]
        else:
            xs, ys = [], []
            for batch in trainer.train_dataloader:
                x, y = (batch["x"], batch["y"]) if isinstance(batch, dict) else batch[:2]
                xs.append(x)
                ys.append(y)
                if sum(len(b) for b in xs) >= self.max_samples:
                    break
            x, y = torch.cat(xs), torch.cat(ys)
        if len(x) > self.max_samples:
            keep = np.sort(np.random.default_rng(0).choice(len(x), self.max_samples, replace=False))
            index = torch.as_tensor(keep, device=x.device)
            x, y = x[index], y[index]
        return x, y

    @torch.no_grad()
    def _snapshot(
        self, trainer: pl.Trainer, pl_module: Any, evaluation_weights: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(latent, labels, prototypes, prototype_labels)``, labels as class indices."""
        x, y = self._training_data(trainer)
        was_training = pl_module.training
        pl_module.eval()
        try:
            if evaluation_weights:
                state = evaluation_state(trainer, pl_module)
                z = torch.func.functional_call(pl_module, state, (x.to(pl_module.device),))
                prototypes = state["prototypes"]
            else:
                z = pl_module(x.to(pl_module.device))
                prototypes = pl_module.prototypes
        finally:
            pl_module.train(was_training)
        return (
            z.detach().float().cpu().numpy(),
            y.detach().cpu().numpy(),
            prototypes.detach().float().cpu().numpy(),
            pl_module.prototype_labels.detach().cpu().numpy(),
        )

    def _plot(
        self,
        trainer: pl.Trainer,
        pl_module: Any,
        filename: str,
        title: str,
        evaluation_weights: bool,
    ) -> None:
        from ...viz.plotting import nearest_prototype_fn, plot_latent_space

        if getattr(pl_module, "prototypes", None) is None:
            return  # never built (e.g. the fit failed before setup)
        z, y, prototypes, prototype_labels = self._snapshot(trainer, pl_module, evaluation_weights)
        classes = np.asarray(pl_module.classes_)
        path = self._folder(trainer) / filename
        figure = plot_latent_space(
            z,
            classes[y],
            prototypes,
            classes[prototype_labels],
            classes=classes,
            predict_fn=nearest_prototype_fn(prototypes, prototype_labels, classes),
            path=path,
            title=title,
        )
        self.paths.append(path)
        if self.log_to_logger:
            self._log(trainer, figure, path)

    @staticmethod
    def _log(trainer: pl.Trainer, figure: Any, path: Path) -> None:
        for logger in trainer.loggers:
            try:
                experiment = getattr(logger, "experiment", None)
                if callable(getattr(experiment, "add_figure", None)):
                    experiment.add_figure("latent_space", figure, trainer.global_step, close=False)
                elif callable(getattr(logger, "log_image", None)):
                    logger.log_image(
                        key="latent_space", images=[str(path)], step=trainer.global_step
                    )
            except Exception as err:  # a logger failing to take a figure must not end the fit
                rank_zero_warn(
                    f"LatentSpacePlot could not log the figure to {type(logger).__name__}: {err}"
                )
