"""Why the CNN stalled on digits images, measured (issue 13).

For upstream's CNN (global-average head, raw inputs, relu, ``bb_lr = lr``), the same with
sigmoid and tanh, and our defaults (flatten head, inputs standardised inside the model, tanh,
``bb_lr = 0.1 lr``) and three variants of them (sigmoid; ``bb_lr = lr``; ``bb_lr = 0.3 lr``,
the default until issue 19; ``benchmarks/cnn_diagnosis_mnist.py`` measures 28×28 MNIST), on digits as ``(n, 1, 8, 8)`` images under three pixel scalings, it
prints at initialisation: the spread of the latent codes (mean per-dimension standard
deviation), the mean distance between the initial prototypes, the gradient norms of the first
batch; and after 1 and 5 epochs: the share of samples with ``|μ| < 0.05`` (μ ≈ 0: every
prototype equally far), the training loss and the training accuracy. Everything is built by the
library (``module_arguments`` → ``PrototypeNetwork``, its initialisation and parameter groups);
the loop is a plain Adam loop over batches of 64.

Usage: ``.venv/bin/python benchmarks/cnn_diagnosis.py`` (a few minutes on 2 cores; the
table it prints is in ``docs/images.md``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from lvqmln_torch import functional as F
from lvqmln_torch.core.construction import UPSTREAM_CNN, backbone_lr
from lvqmln_torch.core.network import PrototypeNetwork
from lvqmln_torch.sklearn.params import module_arguments
from lvqmln_torch.training.config import module_config
from lvqmln_torch.training.optimizers import parameter_groups

UPSTREAM = dict(UPSTREAM_CNN)
CONFIGS = {
    "upstream relu": {**UPSTREAM, "activation": "relu", "bb_lr": 0.01},
    "upstream sigmoid": {**UPSTREAM, "activation": "sigmoid", "bb_lr": 0.01},
    "upstream tanh": {**UPSTREAM, "activation": "tanh", "bb_lr": 0.01},
    "ours, sigmoid": {"activation": "sigmoid"},
    "ours, bb_lr = lr": {"bb_lr": 0.01},
    "ours, bb_lr = 0.3 lr (the default until issue 19)": {"bb_lr": 0.003},
    "ours (defaults)": {},
}


def scalings() -> tuple[dict[str, np.ndarray], np.ndarray]:
    digits = load_digits()
    raw = digits.images[:, None].astype(np.float32)
    return {
        "raw 0-16": raw,
        "[0, 1]": raw / 16,
        "standardised": (raw - raw.mean()) / raw.std(),
    }, digits.target


def diagnose(settings: dict, X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, float]:
    params = {"backbone": "cnn", "latent_dim": 10, "random_seed": 42, **settings}
    arguments = module_arguments(
        params, in_features=None, input_shape=X.shape[1:], classes=np.unique(y)
    )
    hp = module_config(arguments).hparams
    network = PrototypeNetwork.from_config(hp)
    x, t = torch.from_numpy(X), torch.from_numpy(y)
    network.set_prototypes(*network.initialize_from(x, t, seed=hp["seed"]))
    out: dict[str, float] = {}
    with torch.no_grad():
        z = network.backbone(x)
    out["z spread"] = float(z.std(0).mean())
    out["prototype distance"] = float(torch.pdist(network.prototypes.detach()).mean())
    groups = parameter_groups(network.prototypes, network.backbone, hp["lr"], backbone_lr(hp), [])
    optimizer = torch.optim.Adam([{k: v for k, v in g.items() if k != "name"} for g in groups])
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(5):
        total = 0.0
        order = torch.randperm(len(x), generator=generator)
        for step, i in enumerate(range(0, len(x), 64)):
            batch = order[i : i + 64]
            z = network.backbone(x[batch])
            loss = F.glvq_loss(network.distances(z), t[batch], network.prototype_labels)
            optimizer.zero_grad()
            loss.backward()
            if epoch == 0 and step == 0:
                out["|grad| backbone"] = float(
                    torch.sqrt(sum((p.grad**2).sum() for p in network.backbone.parameters()))
                )
                out["|grad| prototypes"] = float(network.prototypes.grad.norm())
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        if epoch in (0, 4):
            with torch.no_grad():
                d = network.distances(network.backbone(x))
                mu = F.glvq_mu(d, t, network.prototype_labels)
                acc = (network.prototype_labels[d.argmin(1)] == t).double().mean()
            out[f"|mu|<0.05 e{epoch + 1}"] = float((mu.abs() < 0.05).double().mean())
            out[f"loss e{epoch + 1}"] = total / len(x)
            out[f"acc e{epoch + 1}"] = float(acc)
    return out


def main() -> None:
    data, y = scalings()
    rows = []
    for name, settings in CONFIGS.items():
        for scaling, X in data.items():
            rows.append((name, scaling, diagnose(settings, X, y)))
            print(name, scaling, {k: round(v, 4) for k, v in rows[-1][2].items()}, flush=True)
    keys = list(rows[0][2])
    print()
    print("| CNN | pixels | " + " | ".join(keys) + " |")
    print("|---|---|" + "---:|" * len(keys))
    for name, scaling, out in rows:
        print(f"| {name} | {scaling} | " + " | ".join(f"{out[k]:.3g}" for k in keys) + " |")


if __name__ == "__main__":
    main()
