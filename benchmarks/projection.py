"""Accuracy with and without prototype projection (issue 14) on the built-in data sets.

    .venv/bin/python benchmarks/projection.py [--folds 5] [--max-iter 300]

Stratified k-fold cross-validation (seed 0); each fold z-scores with its training split's
statistics and fits ``LVQMLNClassifier`` twice with the same seed, ``project_prototypes``
False and True (projection at the end of training: the same training, then every prototype
replaced by the latent code of its nearest training sample of its class). Prints a Markdown
table: mean ± standard deviation of the test accuracy over the folds, and the mean paired
difference.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from lvqmln_torch import LVQMLNClassifier, load_builtin

DATASETS = ("iris", "wine", "breast_cancer", "digits")


def cross_validate(
    name: str, folds: int, max_iter: int, per_class: int, hidden: list[int], latent: int
) -> dict[str, np.ndarray]:
    X, y = load_builtin(name)
    scores: dict[str, list[float]] = {"plain": [], "projected": []}
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y):
        mean, std = X[train].mean(0), X[train].std(0)
        std[std == 0] = 1.0
        Xtr, Xte = (X[train] - mean) / std, (X[test] - mean) / std
        for key, project in (("plain", False), ("projected", True)):
            est = LVQMLNClassifier(
                hidden_sizes=hidden,
                latent_dim=latent,
                max_iter=max_iter,
                n_prototypes_per_class=per_class,
                project_prototypes=project,
            ).fit(Xtr, y[train])
            scores[key].append(est.score(Xte, y[test]))
    return {k: np.asarray(v) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--per-class", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--hidden-sizes", type=int, nargs="*", default=[10])
    parser.add_argument("--latent-dim", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    hidden = " ".join(map(str, args.hidden_sizes))
    print(
        f"- Command: `python benchmarks/projection.py --folds {args.folds} --max-iter "
        f"{args.max_iter} --per-class {' '.join(map(str, args.per_class))} --hidden-sizes "
        f"{hidden} --latent-dim {args.latent_dim}`"
    )
    print(f"- Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}")
    print(
        f"- {args.folds}-fold stratified CV (seed 0); MLP [{hidden}], latent {args.latent_dim}, "
        f"{args.max_iter} epochs, estimator defaults otherwise (Adam lr 0.01, full batch)\n"
    )
    print(
        "| data set | prototypes / class | accuracy, no projection | accuracy, projected "
        "| projected − plain (mean of folds) |"
    )
    print("|---|---|---|---|---|")
    for name in DATASETS:
        for per_class in args.per_class:
            s = cross_validate(
                name, args.folds, args.max_iter, per_class, args.hidden_sizes, args.latent_dim
            )
            diff = s["projected"] - s["plain"]
            print(
                f"| {name} | {per_class} | {s['plain'].mean():.3f} ± {s['plain'].std():.3f} "
                f"| {s['projected'].mean():.3f} ± {s['projected'].std():.3f} "
                f"| {diff.mean():+.3f} (min {diff.min():+.3f}, max {diff.max():+.3f}) |"
            )
    print(f"\n- Total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
