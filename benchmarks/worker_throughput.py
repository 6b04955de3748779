"""Figure 3 of ``benchmarks/run.py`` on our side: training throughput on the large synthetic
problem, a plain PyTorch loop beside it, and the matmul rate its FLOP bound comes from.

Tasks of ``worker_ours.py`` (run in the project's environment, one task per process).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
from _common import LARGE, cpu_trainer, make_large, mlp_matmuls, timed


def _plain_epoch(net: Any, optimizer: Any, x: Any, y: Any, seed: int) -> float:
    """Seconds of one epoch of a plain PyTorch loop over ``net``: shuffled batches gathered
    with ``index_select`` (as ``InMemoryBatches`` gathers them), forward, GLVQ loss, backward,
    optimizer step; nothing else."""
    import torch

    from lvqmln_torch.core import functional as F

    batch = LARGE["batch_size"]
    start = time.perf_counter()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for first in range(0, len(x), batch):
        index = order[first : first + batch]
        x_batch, y_batch = x.index_select(0, index), y.index_select(0, index)
        optimizer.zero_grad(set_to_none=True)
        loss = F.glvq_loss(net.distances(net.backbone(x_batch)), y_batch, net.prototype_labels)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def throughput(
    n_samples: int = LARGE["n_samples"], epochs: int = LARGE["epochs"]
) -> dict[str, Any]:
    """Training throughput on the large synthetic problem (Trainer.fit, mini-batches, Adam).

    Runs two epochs more than ``epochs``: the steady-state rate comes from the median epoch
    after the first (as prosemble's comes from fits whose memory and compilation are warm), the
    end-to-end time of an ``epochs``-epoch fit from the datamodule's construction to the end of
    epoch ``epochs``. After each of those later epochs a callback runs one epoch of a plain
    PyTorch loop over a second module built with the same arguments and seed (the same network,
    initialised by the same code, the optimizer it configures): the two alternate, so both see
    the same machine, and neither's time includes the other's.
    """
    import lightning.pytorch as pl
    import torch

    from lvqmln_torch import LVQMLN, ArrayDataModule

    X, y = make_large(n_samples, LARGE["n_features"], LARGE["n_classes"])
    arguments = {
        "hidden_sizes": LARGE["hidden_sizes"],
        "latent_dim": LARGE["latent_dim"],
        "n_prototypes_per_class": LARGE["prototypes_per_class"],
    }
    model = LVQMLN(**arguments)
    stamps: dict[str, list[float]] = {"starts": [], "ends": [], "plain": [], "load": []}

    class Timer(pl.Callback):
        """Our epochs' start and end, then (from the second epoch on) one plain epoch."""

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            stamps["starts"].append(time.perf_counter())

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            stamps["ends"].append(time.perf_counter())
            stamps["load"].append(os.getloadavg()[0])  # the 1-minute load average
            if trainer.current_epoch == 0:
                return
            if not hasattr(self, "net"):  # built and initialised outside every timing
                self.net = LVQMLN(**arguments)
                self.net.prepare(trainer.datamodule)
                self.net.train()
                self.optimizer = self.net.configure_optimizers()
                self.x, self.y = trainer.datamodule.train_tensors()[:2]
            with torch.enable_grad():
                seconds = _plain_epoch(
                    self.net, self.optimizer, self.x, self.y, trainer.current_epoch
                )
            stamps["plain"].append(seconds)

    trainer = cpu_trainer(epochs + 2, [Timer()])
    start = time.perf_counter()
    datamodule = ArrayDataModule(X, y, batch_size=LARGE["batch_size"], shuffle=True)
    setup_s = time.perf_counter() - start
    trainer.fit(model, datamodule)
    epoch_s = [end - begin for begin, end in zip(stamps["starts"], stamps["ends"])]
    end_to_end_s = stamps["ends"][epochs - 1] - start
    return {
        "n_samples": n_samples,
        "epochs": epochs,
        "steps_per_epoch": math.ceil(n_samples / LARGE["batch_size"]),
        "datamodule_s": setup_s,
        "end_to_end_s": end_to_end_s,
        "epoch_s": epoch_s,
        "samples_per_s": n_samples / float(np.median(epoch_s[1:])),
        "fit_samples_per_s": n_samples * epochs / end_to_end_s,
        "plain_epoch_s": stamps["plain"],
        "load": stamps["load"],
        "raw_samples_per_s": n_samples / float(np.median(stamps["plain"])),
        "final_loss": float(trainer.callback_metrics["train_loss"]),
        "threads": torch.get_num_threads(),
    }


def matmul_peak(repeats: int = 10) -> dict[str, Any]:
    """The float32 matmul rate on the products of one training step of figure 3's model (see
    ``_common.mlp_matmuls``: the same shapes and transposed layouts that ``nn.Linear`` and its
    backward run), default thread count: each product's best time of ``repeats`` (a peak is
    what the bound needs, and a busy machine only ever lowers a sample) through MKL's
    ``torch.matmul`` and, where this build has it, through oneDNN's linear (which the MLP's
    training path uses, ``lvqmln_torch.core.fused_linear``), the faster of the two; their sum
    is the step's matmul time, the bound's denominator."""
    import torch

    from lvqmln_torch.core.fused_linear import fused_path_available

    generator = torch.Generator().manual_seed(0)

    def factor(rows: int, cols: int, transposed: bool) -> Any:
        if transposed:  # a transposed view of a contiguous (cols, rows) matrix
            return torch.randn(cols, rows, generator=generator).T
        return torch.randn(rows, cols, generator=generator)

    products = []
    for shape in mlp_matmuls(
        LARGE["batch_size"],
        LARGE["n_features"],
        LARGE["hidden_sizes"],
        LARGE["latent_dim"],
        LARGE["n_classes"] * LARGE["prototypes_per_class"],
    ):
        m, k, n = shape["m"], shape["k"], shape["n"]
        a, b = factor(m, k, shape["a_t"]), factor(k, n, shape["b_t"])
        engines = {"mkl": lambda a=a, b=b: torch.matmul(a, b)}
        if fused_path_available():  # a @ b as oneDNN's linear with the weight bᵀ
            engines["onednn"] = lambda a=a, b=b: torch.ops.mkldnn._linear_pointwise(
                a.contiguous(), b.T, None, "none", [], ""
            )
        seconds = {}
        for name, product in engines.items():
            product()  # warm-up
            seconds[name] = min(timed(product)[0] for _ in range(repeats))
        engine = min(seconds, key=seconds.get)
        products.append(
            {
                **shape,
                "seconds": seconds[engine],
                "engine": engine,
                "engine_seconds": seconds,
                "gflops": 2.0 * m * k * n / seconds[engine] / 1e9,
            }
        )
    step_s = sum(p["seconds"] for p in products)
    flops = sum(2.0 * p["m"] * p["k"] * p["n"] for p in products)
    return {
        "gflops": flops / step_s / 1e9,
        "step_s": step_s,
        "batch_size": LARGE["batch_size"],
        "products": products,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }
