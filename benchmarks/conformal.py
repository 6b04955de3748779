"""Conformal prediction sets on digits (issue 23): coverage, mean set size and the share of
empty sets over 20 random calibration/test splits, for MAPIE's default score (LAC, ``1 − p``)
and APS, and for the prototype-native score μ through MAPIE (``PrototypeMuScore``) and crepes.

The model trains on 1,000 digits (z-scored with their statistics); the other 797 samples are
split in halves 20 times (seeds 0-19) into calibration and test data.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/conformal.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import write_section
from crepes import ConformalClassifier
from mapie.classification import SplitConformalClassifier
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from lvqmln_torch.sklearn.conformal import PrototypeMuScore
from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

HERE = Path(__file__).resolve().parent
SECTION = "conformal"
MODELS = {
    "tanh, 50 iterations": dict(hidden_sizes=[64], latent_dim=10, max_iter=50, activation="tanh"),
    "defaults (sigmoid), 100 iterations": dict(hidden_sizes=[64], latent_dim=10, max_iter=100),
}
ALPHAS = (0.1, 0.05)
SPLITS = 20


def sets_of(method: str, clf, alpha: float, X_cal, y_cal, X_te) -> np.ndarray:
    """Boolean ``(n_test, k)`` prediction sets of one method."""
    if method == "μ (crepes)":
        cc = ConformalClassifier().fit(clf.nonconformity(X_cal, y_cal))
        return cc.predict_set(clf.nonconformity(X_te), confidence=1 - alpha, smoothing=False) > 0
    score = {"LAC (MAPIE default)": "lac", "APS (MAPIE)": "aps", "μ (MAPIE)": PrototypeMuScore()}
    mapie = SplitConformalClassifier(
        clf, confidence_level=1 - alpha, conformity_score=score[method], prefit=True
    )
    return mapie.conformalize(X_cal, y_cal).predict_set(X_te)[1][:, :, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    warnings.filterwarnings("ignore")
    X, y = load_digits(return_X_y=True)
    X_tr, X_ho, y_tr, y_ho = train_test_split(X, y, train_size=1000, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_ho = scaler.transform(X_tr), scaler.transform(X_ho)
    methods = ("LAC (MAPIE default)", "APS (MAPIE)", "μ (MAPIE)", "μ (crepes)")
    lines = [
        "| model (accuracy on the 797) | α | method | mean coverage | mean set size "
        "| empty sets | singletons |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, params in MODELS.items():
        clf = LVQMLNClassifier(**params).fit(X_tr, y_tr)
        accuracy = float(np.mean(clf.predict(X_ho) == y_ho))
        for alpha in ALPHAS:
            for method in methods:
                stats = []
                for seed in range(SPLITS):
                    X_cal, X_te, y_cal, y_te = train_test_split(
                        X_ho, y_ho, test_size=0.5, random_state=seed
                    )
                    sets = sets_of(method, clf, alpha, X_cal, y_cal, X_te)
                    sizes = sets.sum(axis=1)
                    covered = sets[np.arange(len(y_te)), np.searchsorted(clf.classes_, y_te)]
                    stats.append(
                        (covered.mean(), sizes.mean(), (sizes == 0).mean(), (sizes == 1).mean())
                    )
                c, s, e, one = np.mean(stats, axis=0)
                lines.append(
                    f"| {name} ({accuracy:.3f}) | {alpha} | {method} | {c:.3f} | {s:.2f} "
                    f"| {e:.1%} | {one:.1%} |"
                )
                print(lines[-1], flush=True)
    report = "\n".join(
        [
            "## Conformal prediction sets on digits (issue 23)",
            "",
            f"- Command: `python benchmarks/conformal.py {' '.join(sys.argv[1:])}`",
            f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
            f"{time.perf_counter() - start:.0f} s; {platform.machine()}, {os.cpu_count()} "
            "cores (shared with other jobs)",
            "- 1,000 training digits (z-scored); the other 797 split in halves "
            f"(calibration / test) {SPLITS} times, seeds 0-{SPLITS - 1}; means over the "
            "splits. μ: the prototype-native score (`PrototypeMuScore` in MAPIE, "
            "`nonconformity` in crepes with `smoothing=False`). MAPIE's APS includes the "
            "last label (its default), hence its over-coverage.",
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
