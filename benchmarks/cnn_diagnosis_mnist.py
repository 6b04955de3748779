"""Why the CNN's former defaults failed on 28×28 MNIST, measured (issue 19).

For one configuration (JSON of estimator parameters on top of ``backbone="cnn",
latent_dim=10``) on the first ``N`` MNIST training images, one line of JSON: at
initialisation the spread of the latent codes (mean per-dimension standard deviation) and the
share of saturated codes (``|z| > 0.95``), the mean distance between the initial prototypes;
the gradient norm of each backbone weight (and of the prototypes) at optimizer steps 0 and 20;
and after each epoch on the 10,000 test images the share of saturated codes, the share of
samples with ``|μ| < 0.05`` (every prototype about equally far: no gradient left to separate
the classes), the spread and the test accuracy. Everything is built by the library
(``module_arguments`` → ``PrototypeNetwork``, its initialisation and parameter groups); the loop
is a plain Adam loop over shuffled batches of 128. ``--control`` trains the same backbone with
a linear softmax head instead (the head at ``lr``, the backbone at its learning rate).

Usage (about 1-4 min per line on 2 shared cores; the table is in ``docs/images.md``)::

    python benchmarks/cnn_diagnosis_mnist.py '{}' --train 10000
    python benchmarks/cnn_diagnosis_mnist.py '{"bb_lr": 0.003}' --train 10000
    python benchmarks/cnn_diagnosis_mnist.py '{"bb_lr": 0.003}' --train 10000 --control
    python benchmarks/cnn_diagnosis_mnist.py '{"bb_lr": 0.003}' --head-lr-scale 0.0816
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_data import find_mnist, load_mnist  # noqa: E402

from lvqmln_torch import functional as F  # noqa: E402
from lvqmln_torch.core.construction import backbone_lr  # noqa: E402
from lvqmln_torch.core.network import PrototypeNetwork  # noqa: E402
from lvqmln_torch.sklearn.params import module_arguments  # noqa: E402
from lvqmln_torch.training.config import module_config  # noqa: E402
from lvqmln_torch.training.optimizers import parameter_groups  # noqa: E402


def diagnose(
    settings: dict, data: tuple, epochs: int, control: bool, head_scale: float | None = None
) -> dict[str, object]:
    x, t, x_test, t_test = (torch.as_tensor(a) for a in data)
    params = {"backbone": "cnn", "latent_dim": 10, "random_seed": 42, **settings}
    arguments = module_arguments(
        params, in_features=None, input_shape=x.shape[1:], classes=np.arange(10)
    )
    hp = module_config(arguments).hparams
    network = PrototypeNetwork.from_config(hp)
    network.set_prototypes(*network.initialize_from(x[:20000], t[:20000], seed=hp["seed"]))
    out: dict[str, object] = {}
    with torch.no_grad():
        z = network.backbone(x[:2000])
    out["z spread"] = float(z.std(0).mean())
    out["|z|>0.95"] = float((z.abs() > 0.95).double().mean())
    out["prototype distance"] = float(torch.pdist(network.prototypes.detach()).mean())
    head = torch.nn.Linear(hp["latent_dim"], 10)
    if control:
        groups = [
            {"params": list(network.backbone.parameters()), "lr": backbone_lr(hp)},
            {"params": list(head.parameters()), "lr": hp["lr"]},
        ]
    else:
        groups = parameter_groups(
            network.prototypes, network.backbone, hp["lr"], backbone_lr(hp), []
        )
        groups = [{k: v for k, v in g.items() if k != "name"} for g in groups]
    if head_scale is not None:
        # The backbone's linear head apart, at head_scale times the backbone's rate.
        backbone_head = list(network.backbone.head.parameters())
        convs = [p for n, p in network.backbone.named_parameters() if not n.startswith("head.")]
        groups = [
            {
                "params": list(head.parameters()) if control else [network.prototypes],
                "lr": hp["lr"],
            },
            {"params": convs, "lr": backbone_lr(hp)},
            {"params": backbone_head, "lr": backbone_lr(hp) * head_scale},
        ]
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(0)
    accuracy = []
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for step, i in enumerate(range(0, len(x), 128)):
            batch = order[i : i + 128]
            z = network.backbone(x[batch])
            if control:
                loss = torch.nn.functional.cross_entropy(head(z), t[batch])
            else:
                loss = F.glvq_loss(network.distances(z), t[batch], network.prototype_labels)
            optimizer.zero_grad()
            loss.backward()
            if epoch == 0 and step in (0, 20):
                for name, p in network.backbone.named_parameters():
                    if name.endswith("weight"):
                        out[f"|grad| {name} step {step}"] = float(p.grad.norm())
                if not control:
                    out[f"|grad| prototypes step {step}"] = float(network.prototypes.grad.norm())
            optimizer.step()
        with torch.no_grad():
            z = torch.cat([network.backbone(x_test[i : i + 2000]) for i in range(0, 10000, 2000)])
            if control:
                predictions = head(z).argmax(1)
            else:
                distances = network.distances(z)
                predictions = network.prototype_labels[distances.argmin(1)]
                mu = F.glvq_mu(distances, t_test, network.prototype_labels)
                out[f"|mu|<0.05 epoch {epoch + 1}"] = float((mu.abs() < 0.05).double().mean())
            out[f"|z|>0.95 epoch {epoch + 1}"] = float((z.abs() > 0.95).double().mean())
            out[f"z spread epoch {epoch + 1}"] = float(z.std(0).mean())
            accuracy.append(float((predictions == t_test).double().mean()))
    out["test accuracy"] = accuracy
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", help="JSON estimator parameters, e.g. '{\"bb_lr\": 0.003}'")
    parser.add_argument("--train", type=int, default=10000, help="the first N training images")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--control", action="store_true", help="a linear softmax head instead")
    parser.add_argument("--mnist", help="mnist.pkl.gz or IDX folder (see mnist_data.py)")
    parser.add_argument(
        "--head-lr-scale",
        type=float,
        help="train the backbone's linear head at this times the backbone's learning rate",
    )
    args = parser.parse_args()
    path = find_mnist(args.mnist)
    if path is None:
        print("MNIST not found: see benchmarks/mnist_data.py for how to get it", file=sys.stderr)
        return 1
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
    X, y, X_test, y_test = load_mnist(path)
    settings = json.loads(args.settings)
    out = diagnose(
        settings,
        (X[: args.train], y[: args.train], X_test, y_test),
        args.epochs,
        args.control,
        args.head_lr_scale,
    )
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}
    print(json.dumps({"settings": settings, "control": args.control, **rounded}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
