"""Benchmark worker for lvqmln (runs in the project's .venv, one task per process).

Usage: ``python benchmarks/worker_ours.py TASK '{"json": "arguments"}'``; prints one
``RESULT {...}`` line (see ``_common.emit``). ``benchmarks/run.py`` starts it; the cold-start task
imports nothing but what a user's script would.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
from _common import cpu_trainer, emit, load_split, timed
from worker_throughput import matmul_peak, throughput

SEED_MAX_ITER = 300  # the figure's "seed defaults": 300 full-batch epochs


def cold_fit(data: str) -> dict[str, Any]:
    """A fresh process: import, fit with the seed's defaults, score on the test split."""
    start = time.perf_counter()
    from lvqmln_torch import LVQMLNClassifier

    import_s = time.perf_counter() - start
    X_train, y_train, X_test, y_test = load_split(data)
    clf = LVQMLNClassifier(max_iter=SEED_MAX_ITER)
    fit_s, _ = timed(clf.fit, X_train, y_train)
    return {
        "import_s": import_s,
        "fit_s": fit_s,
        "accuracy": float(clf.score(X_test, y_test)),
        "n_iter": int(clf.n_iter_),
        "engine": clf.engine_,
    }


def warm_fit(data: str, n_fits: int = 5, engine: str = "auto") -> dict[str, Any]:
    """``n_fits`` new estimators fitted one after another in one process (the
    cross-validation pattern)."""
    from lvqmln_torch import LVQMLNClassifier

    X_train, y_train, X_test, y_test = load_split(data)
    times, accuracies = [], []
    for _ in range(n_fits):
        clf = LVQMLNClassifier(max_iter=SEED_MAX_ITER, engine=engine)
        seconds, _ = timed(clf.fit, X_train, y_train)
        times.append(seconds)
        accuracies.append(float(clf.score(X_test, y_test)))
    return {"fit_s": times, "accuracy": accuracies, "engine": clf.engine_, "n_iter": clf.n_iter_}


def _epoch_timer(clock: Any = time.perf_counter) -> Any:
    import lightning.pytorch as pl

    class EpochTimer(pl.Callback):
        """``clock`` stamps (wall-clock by default) at the start and end of every training
        epoch."""

        def __init__(self) -> None:
            self.starts: list[float] = []
            self.ends: list[float] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.starts.append(clock())

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.ends.append(clock())

    return EpochTimer()


def _bare_module() -> Any:
    """LVQMLN with nothing but the loss in its training step (no metrics, no logging, no
    checks) and one plain Adam over all parameters: what Lightning's loop costs around the
    step by itself."""
    from lvqmln_torch import LVQMLN, functional

    class Bare(LVQMLN):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch[0], batch[1]
            return functional.glvq_loss(self.distances(self.backbone(x)), y, self.prototype_labels)

        def on_train_epoch_end(self) -> None:
            pass

        def configure_optimizers(self) -> Any:
            # What a user writes: one Adam over every parameter (not the module's groups).
            import torch

            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    return Bare


def epoch_time(data: str, epochs: int = 1000, skip: int = 20) -> dict[str, Any]:
    """Steady-state wall time per epoch of a tiny full-batch problem on a plain Lightning
    Trainer with its default progress bar and logger, then with both off, then with a bare
    module (Lightning's floor); the same optimizer steps in a plain PyTorch loop (the compute
    the loop has to do anyway); and the estimator's numpy engine."""
    import tempfile

    import torch

    from lvqmln_torch import LVQMLN, ArrayDataModule, LVQMLNClassifier, functional

    X_train, y_train, _, _ = load_split(data)
    out: dict[str, Any] = {"epochs": epochs, "skip": skip}
    variants = (
        ("bar_logger_on", True, LVQMLN),
        ("bar_logger_off", False, LVQMLN),
        ("bare_module_bar_logger_on", True, _bare_module()),
    )
    with tempfile.TemporaryDirectory() as root:
        for name, on, module in variants:
            timer = _epoch_timer()
            trainer = cpu_trainer(epochs, [timer], quiet=not on, default_root_dir=root)
            model = module()
            trainer.fit(model, ArrayDataModule(X_train, y_train))
            # One epoch = end of epoch i to end of epoch i+1: every hook, the progress bar
            # refresh and the logger's work included.
            per_epoch = np.diff(np.asarray(timer.ends))[skip:]
            out[name] = {
                "epoch_ms_median": float(np.median(per_epoch) * 1e3),
                "epoch_ms_p10": float(np.percentile(per_epoch, 10) * 1e3),
                "logger": type(trainer.logger).__name__ if trainer.logger else None,
                "progress_bar": type(trainer.progress_bar_callback).__name__
                if trainer.progress_bar_callback
                else None,
            }

        # The same steps without Lightning: forward, loss, backward, Adam step.
        x, y = (t.clone() for t in ArrayDataModule(X_train, y_train).train_tensors()[:2])
        optimizer = torch.optim.Adam(model.parameters(), lr=model.hparams.lr)
        stamps = []
        for _ in range(epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = functional.glvq_loss(model.distances(model(x)), y, model.prototype_labels)
            loss.backward()
            optimizer.step()
            stamps.append(time.perf_counter())
        per_step = np.diff(np.asarray(stamps))[skip:]
        out["raw_step_ms_median"] = float(np.median(per_step) * 1e3)

    # The estimator's numpy engine: (fit of `epochs` epochs - fit of `skip`) per epoch, best of 3.
    def fit_s(n_epochs: int) -> float:
        clf = LVQMLNClassifier(max_iter=n_epochs, epsilon=None, engine="numpy")
        return min(timed(clf.fit, X_train, y_train)[0] for _ in range(3))

    out["numpy_engine_epoch_ms"] = (fit_s(epochs) - fit_s(skip)) / (epochs - skip) * 1e3
    return out


def step_cost(
    n_samples: int = 6400, batch_size: int = 64, rounds: int = 10, epochs: int = 3
) -> dict[str, Any]:
    """The training step's own cost: LVQMLN against the bare module (the same backbone, loss,
    optimizer and batches, nothing else in the step), no progress bar, no logger.

    ``rounds`` alternating fits of ``epochs`` epochs each; every batch (forward, backward,
    optimizer step and the hooks around them) is timed from Lightning's batch-start to its
    batch-end hook in this thread's CPU time (one torch thread: all the work runs here), so
    other processes on a shared machine count less; the first epoch of each fit is left out.
    Per fit the median batch plus the epoch-level work (metric compute and logging) spread
    over the epoch's batches; the ratio is the median over rounds of the two fits' ratio."""
    import tempfile

    import lightning.pytorch as pl
    import torch

    from lvqmln_torch import LVQMLN, ArrayDataModule

    class BatchTimer(pl.Callback):
        def __init__(self) -> None:
            self.batches: list[float] = []
            self.epochs: list[float] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._epoch = time.thread_time()

        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            self._start = time.thread_time()

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.current_epoch > 0:
                self.batches.append(time.thread_time() - self._start)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch > 0:
                self.epochs.append(time.thread_time() - self._epoch)

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_samples, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=n_samples)
    steps = -(-n_samples // batch_size)
    per_round: dict[str, list[float]] = {"lvqmln": [], "bare_module": []}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(rounds):
            for name, module in (("lvqmln", LVQMLN), ("bare_module", _bare_module())):
                timer = BatchTimer()
                trainer = cpu_trainer(epochs, [timer], default_root_dir=root)
                dm = ArrayDataModule(X, y, batch_size=batch_size, seed=0)
                trainer.fit(module(hidden_sizes=[64], latent_dim=10), dm)
                median_batch = float(np.median(timer.batches))
                # the epoch's own work beyond its batches (epoch hooks, metric compute, logging)
                outside = max(float(np.median(timer.epochs)) - steps * median_batch, 0.0)
                per_round[name].append((median_batch + outside / steps) * 1e3)
    ratios = np.asarray(per_round["lvqmln"]) / np.asarray(per_round["bare_module"])
    return {
        "batch_size": batch_size,
        "steps_per_epoch": steps,
        "rounds": rounds,
        "lvqmln_step_ms": float(np.median(per_round["lvqmln"])),
        "bare_module_step_ms": float(np.median(per_round["bare_module"])),
        # each round's two fits ran back to back: their ratio cancels the machine's drift
        "ratio": float(np.median(ratios)),
        "ratio_range": [float(ratios.min()), float(ratios.max())],
    }


def predict(data: str, n_rows: int = 1_000_000, repeats: int = 5) -> dict[str, Any]:
    """Prediction throughput of the iris model (seed defaults, fitted here) on CPU."""
    import torch

    from lvqmln_torch import LVQMLNClassifier

    X_train, y_train, _, _ = load_split(data)
    clf = LVQMLNClassifier(max_iter=SEED_MAX_ITER).fit(X_train, y_train)
    rows = np.random.default_rng(1).standard_normal((n_rows, X_train.shape[1]), dtype=np.float32)
    clf.predict(rows[:1000])  # warm-up
    estimator_s = sorted(timed(clf.predict, rows)[0] for _ in range(repeats))
    tensor = torch.from_numpy(rows)
    module_s = sorted(timed(clf.model_.predict_indices, tensor)[0] for _ in range(repeats))
    return {
        "n_rows": n_rows,
        "estimator_samples_per_s": n_rows / estimator_s[len(estimator_s) // 2],
        "module_samples_per_s": n_rows / module_s[len(module_s) // 2],
        "threads": torch.get_num_threads(),
    }


def versions() -> dict[str, Any]:
    import lightning
    import torch

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


TASKS = {
    "cold_fit": cold_fit,
    "warm_fit": warm_fit,
    "epoch_time": epoch_time,
    "step_cost": step_cost,
    "throughput": throughput,
    "matmul_peak": matmul_peak,
    "predict": predict,
    "versions": versions,
}

if __name__ == "__main__":
    task, arguments = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    emit(TASKS[task](**arguments))
