"""MNIST training speed (issue 22): the built-in CNN's steady-state epoch through
``Trainer.fit`` against a plain torch loop with the same network, batches and optimizer.

    python benchmarks/mnist_speed.py --mnist /path/to/mnist.pkl.gz [--epochs 3] [--write]

Ours: ``LVQMLN(backbone="cnn", latent_dim=10)`` with every other default, an
``ArrayDataModule(batch_size=128)`` of the 60,000 training images and ``Trainer.fit`` without
progress bar, logger, checkpoints or validation. The plain loop trains a second module built
with the same arguments and seed (so the same backbone object and initial weights as the
library's default makes them, whatever that default is), initialised by the same code, with
the optimizer the module configures (Adam, the backbone at its own learning rate), on shuffled
batches of 128 gathered with ``index_select`` from the datamodule's training tensors:
forward, GLVQ loss, backward, step, nothing else.

The two alternate in one process: after each of our epochs but the first, a callback runs one
plain epoch, so both see the same machine (a shared machine's load drifts). Our epoch is timed
from Lightning's epoch start to its end (every hook, the data loading and the metric updates
of its steps included); the first epoch (warm-up) counts for neither side. The initialisation
(the module's setup: input statistics and prototype initialisation from the untrained
backbone's latent codes, then the optimizer) is timed on its own line.

Prints the report; ``--write`` also puts it into its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import cpu_trainer, publish  # noqa: E402
from mnist_data import ENV, find_mnist, load_mnist  # noqa: E402

BATCH_SIZE = 128
MODEL = {"backbone": "cnn", "latent_dim": 10}
SEED = 42
TARGET = 1.10  # ours / plain loop, steady-state epoch (issue 22)


def _load() -> float:
    return os.getloadavg()[0]


def plain_epoch(net: Any, optimizer: Any, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
    """One epoch of the plain loop: a seeded permutation cut into batches of ``BATCH_SIZE``."""
    from lvqmln_torch.core import functional as F

    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED + epoch))
    labels = net.prototype_labels
    for start in range(0, len(x), BATCH_SIZE):
        index = order[start : start + BATCH_SIZE]
        optimizer.zero_grad(set_to_none=True)
        xb, yb = x.index_select(0, index), y.index_select(0, index)
        loss = F.glvq_loss(net.distances(net.backbone(xb)), yb, labels)
        loss.backward()
        optimizer.step()


def measure(X: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, Any]:
    """Fit ours for ``epochs`` epochs with a plain epoch after each of epochs 2.. (see the
    module docstring); seconds and the 1-minute load average of every epoch."""
    import lightning.pytorch as pl

    from lvqmln_torch import LVQMLN, ArrayDataModule

    datamodule = ArrayDataModule(X, y, batch_size=BATCH_SIZE, seed=SEED)
    # The plain loop's network: the library's own backbone and prototypes, built and
    # initialised exactly as the module is (same arguments, same seed).
    plain = LVQMLN(**MODEL, seed=SEED)
    datamodule.setup("fit")
    plain.prepare(datamodule)
    plain.train()
    plain_optimizer = plain.configure_optimizers()
    x_all, y_all = datamodule.train_tensors()[:2]  # the inputs ours trains on
    out: dict[str, Any] = {
        name: []
        for name in ("ours_s", "plain_s", "ours_cpu_s", "plain_cpu_s", "ours_load", "plain_load")
    }

    class Alternate(pl.Callback):
        def setup(self, trainer: Any, module: Any, stage: str) -> None:
            self.setup_start = time.perf_counter()  # the module's setup runs next

        def on_fit_start(self, trainer: Any, module: Any) -> None:
            out["init_s"] = time.perf_counter() - self.setup_start

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            if "startup_s" not in out:
                out["startup_s"] = time.perf_counter() - fit_start
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            out["ours_s"].append(time.perf_counter() - self.start)
            out["ours_cpu_s"].append(time.process_time() - self.cpu)
            out["ours_load"].append(_load())
            if trainer.current_epoch == 0:
                return
            with torch.enable_grad():
                start, cpu = time.perf_counter(), time.process_time()
                plain_epoch(plain, plain_optimizer, x_all, y_all, trainer.current_epoch)
                out["plain_s"].append(time.perf_counter() - start)
                out["plain_cpu_s"].append(time.process_time() - cpu)
            out["plain_load"].append(_load())

    model = LVQMLN(**MODEL, seed=SEED)
    trainer = cpu_trainer(epochs, [Alternate()])
    # The plain loop's warm-up (its first steps allocate), as our first epoch is ours.
    with torch.enable_grad():
        plain_epoch(plain, plain_optimizer, x_all[: 8 * BATCH_SIZE], y_all[: 8 * BATCH_SIZE], 0)
    fit_start = time.perf_counter()
    trainer.fit(model, datamodule)
    out["fit_s"] = time.perf_counter() - fit_start
    out["final_train_loss"] = float(trainer.callback_metrics["train_loss"])
    out["ours_median_s"] = float(np.median(out["ours_s"][1:]))
    out["plain_median_s"] = float(np.median(out["plain_s"]))
    out["ratio"] = out["ours_median_s"] / out["plain_median_s"]
    out["ratios"] = [a / b for a, b in zip(out["ours_s"][1:], out["plain_s"])]
    # CPU time of the process (every thread): what a busy machine inflates least
    out["cpu_ratio"] = float(np.median(out["ours_cpu_s"][1:]) / np.median(out["plain_cpu_s"]))
    return out


def render(result: dict[str, Any], meta: dict[str, Any]) -> str:
    ours, plain, ratio = result["ours_median_s"], result["plain_median_s"], result["ratio"]
    n = meta["n_train"]
    status = "**met**" if ratio <= TARGET else "not met"
    pairs = ", ".join(
        f"{a:.1f}/{b:.1f} s (load {la:.1f}/{lb:.1f})"
        for a, b, la, lb in zip(
            result["ours_s"][1:], result["plain_s"], result["ours_load"][1:], result["plain_load"]
        )
    )
    return "\n".join(
        [
            "## MNIST training speed: the CNN through `Trainer.fit` against a plain torch loop "
            "(issue 22)",
            "",
            "Written by `benchmarks/mnist_speed.py --write` (see its docstring for the method).",
            "",
            f"- Command: `{meta['command']}`",
            f"- Date: {meta['date']}; machine: {meta['cpu']}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {meta['threads']} threads; load average (1 min) "
            f"at start {meta['load_start']:.2f}, at end {meta['load_end']:.2f} (a shared "
            "machine inflates every timing; the two sides alternate epoch by epoch)",
            f"- `LVQMLN(backbone='cnn', latent_dim=10)` defaults, batch {BATCH_SIZE}, "
            f"{n:,} training images, {meta['epochs']} epochs of ours, the first a warm-up",
            "",
            "| Measure | lvqmln (Trainer.fit) | plain torch loop | ours / plain | Target | "
            "Status |",
            "|---|---|---|---|---|---|",
            f"| steady-state epoch (s, median) | {ours:.2f} s | {plain:.2f} s | {ratio:.3f}x | "
            f"≤ {TARGET:.2f}x | {status} |",
            f"| initialisation: the module's setup (input statistics, prototype initialisation, "
            f"optimizer) (s) | {result['init_s']:.2f} s | – | – | – | – |",
            "",
            f"- Epoch pairs after the warm-up, ours/plain: {pairs}; ratios "
            + ", ".join(f"{r:.3f}" for r in result["ratios"]),
            "- CPU time of the process (every thread) per epoch, ours/plain: "
            + ", ".join(
                f"{a:.1f}/{b:.1f} s"
                for a, b in zip(result["ours_cpu_s"][1:], result["plain_cpu_s"])
            )
            + f"; ratio of the medians {result['cpu_ratio']:.3f} (a busy machine inflates CPU "
            "time less than wall time)",
            f"- First epoch of ours (warm-up): {result['ours_s'][0]:.2f} s; from `Trainer.fit` "
            f"to the first batch: {result['startup_s']:.2f} s (the initialisation included); "
            f"final train loss {result['final_train_loss']:.4f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mnist",
        help=f"mnist.pkl.gz or a folder of the IDX files (default: ${ENV}, else "
        "benchmarks/data/mnist.pkl.gz); see benchmarks/mnist_data.py",
    )
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs of ours (the first is a warm-up)"
    )
    parser.add_argument("--train-size", type=int, help="only the first N training images")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is a warm-up")
    path = find_mnist(args.mnist)
    if path is None:
        print(
            f"MNIST speed skipped: no file at {args.mnist or '$' + ENV + ' or the default paths'}"
            " (see benchmarks/mnist_data.py for getting it offline)"
        )
        return 0
    X, y, _, _ = load_mnist(path)
    if args.train_size:
        X, y = X[: args.train_size], y[: args.train_size]
    from run import machine_info

    meta = {
        "command": " ".join(["python benchmarks/mnist_speed.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": machine_info()["cpu"],
        "threads": torch.get_num_threads(),
        "load_start": _load(),
        "n_train": len(X),
        "epochs": args.epochs,
    }
    result = measure(X, y, args.epochs)
    meta["load_end"] = _load()
    publish(render(result, meta), "mnist_speed", args.output, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
