"""The CNN's backbone step on small image sets (issue 19, docs/images.md "The step on small
data"): test accuracy of ``LVQMLNClassifier(backbone="cnn", latent_dim=10)`` at several
``bb_lr`` beside the softmax control of the same backbone (``control.SoftmaxControl``).

Two sets, the tests' own: 1,000 digits upsampled to 28×28 (bilinear, pixels in [0, 1]; batch
32; tested on the next 400) and 500 8×8 digits in [0, 1] (batch 64; tested on the next 300).
Each line: one setting, the accuracy for each seed.

Usage::

    .venv/bin/python benchmarks/cnn_small_data.py            # both sets, every setting
    .venv/bin/python benchmarks/cnn_small_data.py --set 8x8 --epochs 10
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control import SoftmaxControl  # noqa: E402

from lvqmln_torch import LVQMLNClassifier  # noqa: E402

# Set → (training size, test size, batch size, default epochs, seeds).
SETS = {"28x28": (1000, 400, 32, (3, 6), (42, 0)), "8x8": (500, 300, 64, (10,), (42, 0, 1))}
STEPS = (None, 0.001, 0.002, 0.003)  # None: the default, 0.05 · lr


def images(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16, dtype=torch.float32)
    if name == "28x28":
        x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return x.numpy(), digits.target


def accuracy(model: type, name: str, epochs: int, seed: int, bb_lr: float | None) -> float:
    n_train, n_test, batch, _, _ = SETS[name]
    x, y = images(name)
    est = model(
        backbone="cnn",
        latent_dim=10,
        batch_size=batch,
        max_iter=epochs,
        random_seed=seed,
        bb_lr=bb_lr,
    )
    est.fit(x[:n_train], y[:n_train])
    test = slice(n_train, n_train + n_test)
    return float(np.mean(est.predict(x[test]) == y[test]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=tuple(SETS), nargs="+", default=list(SETS))
    parser.add_argument("--epochs", type=int, nargs="+", help="default: the set's own")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    for name in args.set:
        _, _, _, default_epochs, seeds = SETS[name]
        for epochs in args.epochs or default_epochs:
            for label, model, steps in (
                ("ours", LVQMLNClassifier, STEPS),
                ("softmax control", SoftmaxControl, (None,)),
            ):
                for bb_lr in steps:
                    scores = [accuracy(model, name, epochs, s, bb_lr) for s in seeds]
                    step = "default (0.05 lr)" if bb_lr is None else bb_lr
                    print(
                        f"{name}, {epochs} epochs, {label}, bb_lr {step}: "
                        + ", ".join(f"{a:.3f}" for a in scores),
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
