"""Temperature scaling on held-out data (issue 23): ECE and NLL of ``predict_proba`` on a test
split before and after ``LVQMLNClassifier.calibrate`` on a separate calibration split.

Per row and seed: a stratified split into training / calibration / test data (features
z-scored with the training statistics), a fit, ECE (15 bins, torchmetrics'
``multiclass_calibration_error``) and mean NLL on the test split, ``calibrate`` on the
calibration split, and the same two numbers again. Targets per seed: where the ECE before is
above 0.05, at most half of it after; where it is below, at most 0.01 worse; the NLL at most
3 % worse. Predictions must not change.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/calibration.py            # 5 seeds, no MNIST
    PYTHONPATH=$PWD .venv/bin/python benchmarks/calibration.py --mnist    # + MNIST (one seed)
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_section
from mnist_data import find_mnist
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torchmetrics.functional.classification import multiclass_calibration_error

from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

HERE = Path(__file__).resolve().parent
SECTION = "calibration"
# mnist.pkl.gz (its validation split calibrates): $LVQMLN_MNIST, else benchmarks/data/.
MNIST = find_mnist(None)
# (loader, training size or fraction, calibration share of the rest, estimator settings)
ROWS = {
    "breast_cancer": (
        datasets.load_breast_cancer,
        0.5,
        dict(hidden_sizes=[10], latent_dim=2, max_iter=300),
    ),
    "digits": (datasets.load_digits, 1000, dict(hidden_sizes=[64], latent_dim=10, max_iter=100)),
    "digits_tanh": (
        datasets.load_digits,
        1000,
        dict(hidden_sizes=[64], latent_dim=10, max_iter=100, activation="tanh"),
    ),
}


def scores(probabilities: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(ECE with 15 bins, mean negative log-likelihood)``."""
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    target = torch.as_tensor(y)
    ece = float(multiclass_calibration_error(p, target, p.shape[1], n_bins=15, norm="l1"))
    nll = float(-torch.log(p[torch.arange(len(target)), target].clamp_min(1e-300)).mean())
    return ece, nll


def meets(ece_before: float, ece_after: float, nll_before: float, nll_after: float) -> bool:
    ece_ok = ece_after <= ece_before / 2 if ece_before > 0.05 else ece_after <= ece_before + 0.01
    return ece_ok and nll_after <= 1.03 * nll_before


def calibrated(params, seed, X_train, y_train, X_cal, y_cal, X_test, y_test) -> dict[str, Any]:
    """Fit an estimator, score its test probabilities, calibrate it on ``(X_cal, y_cal)`` and
    score them again; raises if calibration changed a prediction."""
    start = time.perf_counter()
    clf = LVQMLNClassifier(random_seed=seed, **params).fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    labels_before = clf.predict(X_test)
    y_index = np.searchsorted(clf.classes_, y_test)
    ece_b, nll_b = scores(clf.predict_proba(X_test), y_index)
    clf.calibrate(X_cal, y_cal)
    ece_a, nll_a = scores(clf.predict_proba(X_test), y_index)
    if not np.array_equal(labels_before, clf.predict(X_test)):
        raise AssertionError("calibration changed a prediction")
    return dict(
        accuracy=float(np.mean(labels_before == y_test)),
        temperature=clf.temperature_,
        ece_before=ece_b,
        ece_after=ece_a,
        nll_before=nll_b,
        nll_after=nll_a,
        met=meets(ece_b, ece_a, nll_b, nll_a),
        n_cal=len(y_cal),
        n_test=len(y_test),
        fit_s=fit_s,
    )


def run_one(X, y, train, params, seed) -> dict[str, float]:
    X_train, X_rest, y_train, y_rest = train_test_split(
        X, y, train_size=train, random_state=seed, stratify=y
    )
    X_cal, X_test, y_cal, y_test = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    scaler = StandardScaler().fit(X_train)
    X_train, X_cal, X_test = (scaler.transform(a) for a in (X_train, X_cal, X_test))
    return calibrated(params, seed, X_train, y_train, X_cal, y_cal, X_test, y_test)


def run_mnist(seed: int = 0, n_train: int = 10000) -> dict[str, float]:
    """MNIST: the first ``n_train`` training images, calibration on the 10,000 validation
    images, test on the 10,000 test images (pixels in [0, 1], not z-scored)."""
    with gzip.open(MNIST, "rb") as f:
        (X_tr, y_tr), (X_cal, y_cal), (X_test, y_test) = pickle.load(f, encoding="latin1")
    params = dict(
        hidden_sizes=[256], latent_dim=16, activation="tanh", batch_size=128, max_iter=10, lr=0.003
    )
    result = calibrated(params, seed, X_tr[:n_train], y_tr[:n_train], X_cal, y_cal, X_test, y_test)
    return {**result, "params": params, "n_train": n_train}


def row(name: str, settings: str, runs: list[dict]) -> str:
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k != "params"}
    worst_nll = max(r["nll_after"] / r["nll_before"] - 1 for r in runs)
    return (
        f"| {name} | `{settings}` | {len(runs)} | {runs[0]['n_cal']} / {runs[0]['n_test']} | "
        f"{mean['accuracy']:.3f} | {np.median([r['temperature'] for r in runs]):.3g} | "
        f"{mean['ece_before']:.3f} → **{mean['ece_after']:.3f}** | "
        f"{mean['nll_before']:.3f} → **{mean['nll_after']:.3f}** ({worst_nll:+.1%}) | "
        f"{sum(r['met'] for r in runs)}/{len(runs)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--mnist", action="store_true", help=f"add MNIST ({MNIST})")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    lines = [
        "| data set | settings | seeds | calibration / test samples | accuracy | T (median) "
        "| test ECE before → after (mean) | test NLL before → after (mean; worst change) "
        "| seeds meeting the targets |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.rows:
        load, train, params = ROWS[name]
        X, y = load(return_X_y=True)
        runs = [run_one(X.astype(np.float64), y, train, params, s) for s in range(args.seeds)]
        lines.append(row(name, f"{params}, train {train}", runs))
        print(lines[-1], flush=True)
    if args.mnist and MNIST is not None and MNIST.suffix == ".gz":
        result = run_mnist()
        lines.append(row("MNIST", f"{result['params']}, train {result['n_train']}", [result]))
        print(lines[-1], flush=True)
    report = "\n".join(
        [
            "## Calibration: temperature scaling on held-out data (issue 23)",
            "",
            f"- Command: `python benchmarks/calibration.py {' '.join(sys.argv[1:])}`",
            f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"{time.perf_counter() - start:.0f} s; {platform.machine()}, {os.cpu_count()} "
            f"cores (shared with other jobs), torch {torch.__version__}",
            "- Per seed: stratified split into training / calibration / test (the held-out "
            "part halved), features z-scored with the training statistics (MNIST: pixels "
            "in [0, 1]; its 10,000 validation images calibrate, its 10,000 test images test); "
            "ECE with 15 bins (torchmetrics), NLL the mean negative log-likelihood, both on "
            "the test split. Targets per seed: ECE above 0.05 before → at most half after; "
            "below → at most 0.01 worse; NLL at most 3 % worse. Predictions unchanged "
            "(checked).",
            "",
            *lines,
        ]
    )
    print(report)
    if args.write:
        write_section(args.output, SECTION, report)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
