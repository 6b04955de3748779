"""``make demo``: train LVQMLN on a built-in data set, report the held-out test accuracy and
leave a checkpoint (and a latent-space plot) behind.

Run it with ``python -m lvqmln_torch.demo [--dataset iris] [--epochs 300] [--output demo_output]``.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "run_demo"]


def run_demo(
    dataset: str = "iris",
    epochs: int = 300,
    output: str | os.PathLike = "demo_output",
    progress_bar: bool = True,
    plot: bool = True,
) -> dict[str, Any]:
    """Fit LVQMLN (MLP backbone, 2-D latent space) on a standardised built-in data set with
    a stratified 20 % test split, then test it and save a checkpoint.

    Args:
        dataset: ``iris``, ``wine``, ``breast_cancer`` or ``digits``.
        epochs: full-batch training epochs.
        output: folder for ``<dataset>.ckpt`` and ``latent_space.png``.
        progress_bar: show Lightning's progress bar.
        plot: also draw the latent space (needs matplotlib).

    Returns:
        ``{"test_acc", "test_loss", "checkpoint", "plot"}`` (``plot`` is ``None`` when not drawn).
    """
    import torch
    from lightning.pytorch import Trainer

    from .data.builtin import BuiltinDataModule
    from .lightning.model import LVQMLN

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    datamodule = BuiltinDataModule(dataset, test_size=0.2, standardize=True, seed=0)
    model = LVQMLN(backbone="mlp", hidden_sizes=[10], latent_dim=2, lr=0.01, seed=42)
    callbacks = []
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib is not installed: skipping the latent-space plot")
            plot = False
        else:
            from .lightning.callbacks import LatentSpacePlot

            callbacks.append(LatentSpacePlot(dirpath=output, log_to_logger=False))
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        log_every_n_steps=1,
        default_root_dir=output,
        callbacks=callbacks,
    )
    print(
        f"Training LVQMLN on {dataset} ({len(datamodule.train_tensors()[0])} training samples, "
        f"{datamodule.n_classes} classes) for {epochs} epochs…"
    )
    trainer.fit(model, datamodule)
    checkpoint = output / f"{dataset}.ckpt"
    trainer.save_checkpoint(checkpoint, weights_only=False)
    results = trainer.test(model, datamodule, verbose=False)[0]

    # The checkpoint reloads without the data (weights_only=True) and predicts identically.
    reloaded = LVQMLN.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    x_test = datamodule.test_dataloader().tensors[0]
    if not torch.equal(reloaded.predict_indices(x_test), model.predict_indices(x_test)):
        raise RuntimeError(f"the checkpoint {checkpoint} does not reproduce the predictions")

    plot_path = output / "latent_space.png" if plot else None
    print()
    print(f"Test accuracy: {results['test_acc']:.4f}")
    print(f"Test loss:     {results['test_loss']:.4f}")
    print(f"Checkpoint:    {checkpoint.resolve()}")
    print(f"  reload with: LVQMLN.load_from_checkpoint({str(checkpoint)!r}, weights_only=True)")
    if plot_path is not None:
        print(f"Latent space:  {plot_path.resolve()}")
    return {
        "test_acc": float(results["test_acc"]),
        "test_loss": float(results["test_loss"]),
        "checkpoint": checkpoint,
        "plot": plot_path,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry of the demo."""
    parser = argparse.ArgumentParser(prog="python -m lvqmln_torch.demo", description=__doc__)
    parser.add_argument(
        "--dataset", default="iris", choices=["iris", "wine", "breast_cancer", "digits"]
    )
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--no-progress-bar", action="store_true")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    os.environ.setdefault("LIGHTNING_DISABLE_TIPS", "1")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Total length of .* across ranks is zero.*")
    return run_demo(
        args.dataset,
        args.epochs,
        args.output,
        progress_bar=not args.no_progress_bar,
        plot=not args.no_plot,
    )


if __name__ == "__main__":
    main()
