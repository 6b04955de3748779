"""MNIST (60,000 / 10,000) in the accuracy benchmark: ``LVQMLN(backbone="cnn",
latent_dim=10)`` with every other default, an ``ArrayDataModule(batch_size=128)`` and
``Trainer.fit``, beside a softmax control, test accuracy after every epoch.

The control is the same backbone (built by the same module, with the same seed, so the same
initial weights, and the same input statistics) followed by ``nn.Linear(latent_dim,
n_classes)`` and cross-entropy, trained by a plain torch loop with the same optimizer (Adam;
the backbone at the module's backbone learning rate, the linear head at the prototypes'
``lr``), the same batches (the datamodule's seeded permutation of each epoch) and the same
number of epochs. The datamodule shuffles with the estimator's seed, so
``LVQMLNClassifier(backbone="cnn", latent_dim=10, batch_size=128, max_iter=epochs)`` trains the
same model; ``--mnist-estimator`` fits it once more for its own final test accuracy.

Run by ``benchmarks/accuracy.py --rows mnist`` (see ``mnist_data.py`` for the file).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import cpu_trainer

BATCH_SIZE = 128
EPOCHS = 5
# The datamodule's shuffling seed: the estimator's (its random_seed, default 42), so that
# LVQMLNClassifier(backbone="cnn", latent_dim=10, batch_size=128) trains this very model
# (tests/lightning/test_images.py checks that both paths give the same prototypes).
DATA_SEED = 42
MODEL = {"backbone": "cnn", "latent_dim": 10}


def ours(data: tuple, epochs: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The module through ``Trainer.fit``; the test split is the validation set, so
    ``val_acc`` after each epoch is the test accuracy. Seconds: training batches only."""
    from lightning.pytorch.callbacks import Callback

    from lvqmln_torch import LVQMLN, ArrayDataModule

    X_train, y_train, X_test, y_test = data

    class Record(Callback):
        def __init__(self) -> None:
            self.accuracy: list[float] = []
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.start = time.perf_counter()

        def on_validation_start(self, trainer: Any, module: Any) -> None:
            self.seconds.append(time.perf_counter() - self.start)

        def on_validation_end(self, trainer: Any, module: Any) -> None:
            self.accuracy.append(float(trainer.callback_metrics["val_acc"]))
            _progress("ours", self.accuracy, self.seconds)

    datamodule = ArrayDataModule(
        X_train, y_train, X_val=X_test, y_val=y_test, batch_size=BATCH_SIZE, seed=DATA_SEED
    )
    model = LVQMLN(**{**MODEL, **settings})
    record = Record()
    cpu_trainer(epochs, [record], num_sanity_val_steps=0).fit(model, datamodule)
    return {"accuracy": record.accuracy, "epoch_s": record.seconds}


def control(data: tuple, epochs: int, settings: dict[str, Any]) -> dict[str, Any]:
    """The same backbone with a linear softmax head, in a plain torch loop (see
    ``control.py``), on the datamodule's batches."""
    from control import fit_softmax

    from lvqmln_torch import LVQMLN, ArrayDataModule

    X_train, y_train, X_test, y_test = data
    datamodule = ArrayDataModule(X_train, y_train, batch_size=BATCH_SIZE, seed=DATA_SEED)
    datamodule.setup("fit")
    model = LVQMLN(
        **{**MODEL, **settings}, input_shape=X_train.shape[1:], n_classes=len(np.unique(y_train))
    )
    hp = dict(model.hparams)
    # The module measures its input statistics on its initialisation sample; the same here.
    model.backbone.set_input_statistics(
        datamodule.init_sample(hp["init_sample_size"], hp["seed"])[0]
    )
    x_test, t_test = torch.as_tensor(X_test), torch.as_tensor(y_test)
    accuracy, seconds = [], []

    def record(predict: Any, epoch_s: float) -> None:
        accuracy.append(float((predict(x_test) == t_test).double().mean()))
        seconds.append(epoch_s)
        _progress("control", accuracy, seconds)

    loader = datamodule.train_dataloader()  # each pass: the next epoch's seeded permutation
    fit_softmax(model.backbone, hp, lambda epoch: loader, epochs, record)
    return {"accuracy": accuracy, "epoch_s": seconds}


def estimator(data: tuple, epochs: int, settings: dict[str, Any]) -> dict[str, Any]:
    """``LVQMLNClassifier(backbone="cnn", latent_dim=10, batch_size=128, max_iter=epochs)``."""
    from lvqmln_torch import LVQMLNClassifier

    X_train, y_train, X_test, y_test = data
    clf = LVQMLNClassifier(**MODEL, batch_size=BATCH_SIZE, max_iter=epochs, **settings)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return {"accuracy": [float(clf.score(X_test, y_test))], "fit_s": seconds}


PARTS = {"ours": ours, "control": control, "estimator": estimator}


def _progress(name: str, accuracy: list[float], seconds: list[float]) -> None:
    """One line per epoch, so a long run can be followed in its log."""
    print(
        f"mnist {name} epoch {len(accuracy)}: test accuracy {accuracy[-1]:.4f}, "
        f"{seconds[-1]:.1f} s",
        flush=True,
    )


def _part(name: str, data: tuple, epochs: int, settings: dict[str, Any], threads: int) -> Any:
    torch.set_num_threads(threads)
    return PARTS[name](data, epochs, settings)


def run_mnist(
    data: tuple,
    epochs: int = EPOCHS,
    settings: dict[str, Any] | None = None,
    fit_estimator: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Ours, the control and (with ``fit_estimator``) the estimator on one split; with
    ``jobs > 1`` as that many processes at once (each with its share of the cores' threads),
    so the seconds per epoch then include the others' load."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    settings = settings or {}
    names = ["ours", "control", *(["estimator"] if fit_estimator else [])]
    if jobs <= 1:
        results = {name: PARTS[name](data, epochs, settings) for name in names}
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {n: pool.submit(_part, n, data, epochs, settings, threads) for n in names}
            results = {name: future.result() for name, future in futures.items()}
    print("mnist", results, flush=True)
    return results


def render_mnist(results: dict[str, Any], meta: dict[str, Any], n_train: int) -> str:
    """The per-epoch table (markdown)."""
    ours_acc, control_acc = results["ours"]["accuracy"], results["control"]["accuracy"]
    lines = [
        "## MNIST: ours against a softmax control, per epoch (issue 19)",
        "",
        f"Command: `{meta['command']}`; {meta['date']}; {meta['machine']}; load average "
        f"{meta['load_start']} at start, {meta['load_end']} at end (2 shared cores: other "
        "jobs ran at the same time, so the seconds are noisy; compare them within the run).",
        "",
        (
            "Standard split (60,000 training / 10,000 test images, pixels in [0, 1]). "
            if n_train == 60_000
            else f"Only the first {n_train:,} training images; the 10,000 test images. "
        )
        + "Ours: "
        "`LVQMLN(backbone='cnn', latent_dim=10)` with every other default, "
        f"`ArrayDataModule(batch_size={BATCH_SIZE})`, `Trainer.fit`. Control: the same backbone "
        "(same seed and input statistics) with a linear softmax head, a plain torch loop, the "
        "same Adam learning rates, batches and epochs. Seconds: the training batches of the "
        "epoch (no evaluation)"
        + (
            f"; ours and the control ran at once ({meta['jobs']} processes, one thread each)."
            if meta.get("jobs", 1) > 1
            else "."
        ),
        "",
        "| epoch | ours: test accuracy | control: test accuracy | ours − control (points) "
        "| ours: s/epoch | control: s/epoch |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for epoch, (a, b) in enumerate(zip(ours_acc, control_acc), 1):
        lines.append(
            f"| {epoch} | {a:.4f} | {b:.4f} | {100 * (a - b):+.2f} | "
            f"{results['ours']['epoch_s'][epoch - 1]:.1f} | "
            f"{results['control']['epoch_s'][epoch - 1]:.1f} |"
        )
    if "estimator" in results:
        est = results["estimator"]
        lines += [
            "",
            f"Estimator `LVQMLNClassifier(backbone='cnn', latent_dim=10, batch_size={BATCH_SIZE}, "
            f"max_iter={len(ours_acc)})`: test accuracy {est['accuracy'][0]:.4f} "
            f"(fit {est['fit_s']:.0f} s).",
        ]
    return "\n".join(lines) + "\n"


def plot_mnist(results: dict[str, Any], path: Path) -> None:
    """Accuracy against epoch, ours and the control, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lvqmln_torch.core.files import atomic_write

    ours_acc, control_acc = results["ours"]["accuracy"], results["control"]["accuracy"]
    epochs = np.arange(1, len(ours_acc) + 1)
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.plot(epochs, ours_acc, "o-", label="LVQMLN (prototype head)")
    axis.plot(epochs, control_acc, "s--", label="control (linear softmax head)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("MNIST test accuracy")
    axis.set_xticks(epochs)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    axis.set_title("Same CNN backbone, batches and optimizer")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    plt.close(figure)
