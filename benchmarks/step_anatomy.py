"""Anatomy of figure 3's training step (issue 22): where one step of 1024 samples of the
784 -> 512 -> 256 -> 64 MLP goes, what Lightning and the module add to it, and how far the
parts that are not matrix products keep any eager PyTorch step from the FLOP bound.

    python benchmarks/step_anatomy.py [--samples 200000] [--rounds 4] [--write]

Measured in one process on figure 3's synthetic problem (``_common.LARGE``), default threads:

1. Phases of a plain PyTorch loop (the loop of ``worker_throughput._plain_epoch``), each timed
   with ``perf_counter`` around it (CPU kernels are synchronous): the batch gather
   (``index_select``), the backbone's forward, the distances and GLVQ loss, the backward pass,
   the optimizer (``zero_grad`` and Adam); medians over every step of ``rounds`` epochs.
2. The same loop's kernels under ``torch.profiler`` for one epoch, grouped: the matrix
   products (``aten::mm``/``addmm`` and oneDNN's ``_linear_pointwise``), the gather, the activation and its derivative, the
   optimizer's fused update, everything else. The profiler adds a few microseconds to every
   kernel, so the small ones read a little high.
3. The products at their best: ``worker_throughput.matmul_peak`` (the FLOP bound of figure 3),
   each product through MKL's ``torch.matmul`` and through oneDNN's linear, the faster
   counting (which library a step's products run in decides its speed as much as anything).
4. The loop's layers: per-step time of the plain loop through ``nn.Linear`` (oneDNN switched
   off: MKL products, as before ``lvqmln_torch.core.fused_linear``), the plain loop as the
   backbone trains by default (oneDNN), a bare ``LightningModule`` whose step is the loss
   alone (same network, optimizer and ``ArrayDataModule``), and ``LVQMLN`` itself; one epoch
   of each per round, alternating, each Lightning epoch in a fresh ``Trainer``
   (timed from its epoch start to its end), medians of the rounds after the first.
5. The loss alone: forward and backward of distances and GLVQ loss on ``(b, 64)`` codes and
   20 prototypes through the library's functional core, and through one hand-fused
   ``autograd.Function`` with the same arithmetic (the numpy engine's analytic gradient, ties
   split as ``amin`` splits them), at batch 64 and 1024: what fusing the loss would save.

Prints the report; ``--write`` also puts it into its section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import LARGE, cpu_trainer, make_large, mlp_flops_per_sample, publish  # noqa: E402

PHASES = ("gather", "forward", "loss", "backward", "optimizer")
MODEL = {
    "hidden_sizes": LARGE["hidden_sizes"],
    "latent_dim": LARGE["latent_dim"],
    "n_prototypes_per_class": LARGE["prototypes_per_class"],
}


def _plain_phases(net: Any, optimizer: Any, x: Any, y: Any, seed: int) -> dict[str, list]:
    """One plain epoch with every phase of every step timed (seconds)."""
    from lvqmln_torch.core import functional as F

    batch, clock = LARGE["batch_size"], time.perf_counter
    times: dict[str, list] = {name: [] for name in (*PHASES, "step")}
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for first in range(0, len(x), batch):
        t0 = clock()
        index = order[first : first + batch]
        x_batch, y_batch = x.index_select(0, index), y.index_select(0, index)
        t1 = clock()
        z = net.backbone(x_batch)
        t2 = clock()
        loss = F.glvq_loss(net.distances(z), y_batch, net.prototype_labels)
        t3 = clock()
        loss.backward()
        t4 = clock()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t5 = clock()
        for name, seconds in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[name].append(seconds)
        times["step"].append(t5 - t0)
    return times


def _kernel_groups(net: Any, optimizer: Any, x: Any, y: Any) -> dict[str, float]:
    """Milliseconds per step of each kernel group over one profiled plain epoch."""
    from torch.profiler import profile

    with profile() as prof:
        steps = len(_plain_phases(net, optimizer, x, y, seed=99)["step"])
    groups = {"matrix products": 0.0, "gather": 0.0, "activation": 0.0, "optimizer": 0.0}
    total = 0.0
    for event in prof.key_averages():
        if event.key.startswith(("Optimizer.", "autograd::", "aten::linear")):
            continue  # ranges around other kernels: their own time is Python and dispatch
        ms = event.self_cpu_time_total / 1e3 / steps
        total += ms
        if event.key in ("aten::mm", "aten::addmm") or "linear_pointwise" in event.key:
            groups["matrix products"] += ms
        elif event.key == "aten::index_select":
            groups["gather"] += ms
        elif event.key in ("aten::sigmoid", "aten::sigmoid_backward"):  # sigmoid also fused
            groups["activation"] += ms
        elif event.key.startswith("aten::_fused_adam"):
            groups["optimizer"] += ms
    groups["other kernels"] = total - sum(groups.values())
    return groups


class _FusedGLVQ(torch.autograd.Function):
    """Squared distances, μ and the mean identity-transfer GLVQ loss in one node, with the
    analytic backward of ``sklearn.numpy_core.glvq_loss_and_grads`` (an experiment here)."""

    @staticmethod
    def forward(ctx: Any, z: Any, prototypes: Any, targets: Any, labels: Any) -> Any:
        raw = torch.addmm(
            (z * z).sum(1, keepdim=True) + (prototypes * prototypes).sum(1),
            z,
            prototypes.T,
            alpha=-2.0,
        )
        same = targets[:, None] == labels[None, :]
        fill = torch.finfo(raw.dtype).max
        distances = raw.clamp_min(0.0)
        plus, minus = torch.where(same, distances, fill), torch.where(same, fill, distances)
        d_plus, d_minus = plus.amin(1), minus.amin(1)
        total = d_plus + d_minus + 1e-10
        mu = (d_plus - d_minus) / total
        ctx.save_for_backward(z, prototypes, raw >= 0, plus, minus, d_plus, d_minus, total, mu)
        return mu.mean()

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        z, prototypes, passes, plus, minus, d_plus, d_minus, total, mu = ctx.saved_tensors
        grad_mu = grad / len(mu)
        grad_a, grad_s = grad_mu / total, -grad_mu * mu / total

        def tie_split(masked: Any, minimum: Any, g: Any) -> Any:
            hits = masked == minimum[:, None]
            return hits.to(g.dtype) * (g / hits.sum(1))[:, None]

        g_d = tie_split(plus, d_plus, grad_a + grad_s) + tie_split(minus, d_minus, grad_s - grad_a)
        g_d = g_d * passes
        grad_z = torch.addmm(z * g_d.sum(1, keepdim=True), g_d, prototypes, beta=2.0, alpha=-2.0)
        grad_p = torch.addmm(prototypes * g_d.sum(0)[:, None], g_d.T, z, beta=2.0, alpha=-2.0)
        return grad_z, grad_p, None, None


def _loss_cost(batch: int, repeats: int = 400) -> dict[str, float]:
    """Median µs of the loss's forward and backward, functional core against fused."""
    from lvqmln_torch.core import functional as F

    generator = torch.Generator().manual_seed(0)
    n_prototypes = LARGE["n_classes"] * LARGE["prototypes_per_class"]
    z = torch.randn(batch, LARGE["latent_dim"], generator=generator, requires_grad=True)
    prototypes = torch.randn(n_prototypes, LARGE["latent_dim"], generator=generator)
    prototypes.requires_grad_(True)
    y = torch.randint(0, LARGE["n_classes"], (batch,), generator=generator)
    labels = torch.arange(LARGE["n_classes"]).repeat_interleave(LARGE["prototypes_per_class"])
    runs = {
        "functional": lambda: F.glvq_loss(F.squared_euclidean_distance(z, prototypes), y, labels),
        "fused": lambda: _FusedGLVQ.apply(z, prototypes, y, labels),
    }
    out: dict[str, float] = {}
    grads = []
    for name, loss_fn in runs.items():
        samples = []
        for i in range(repeats + 20):
            z.grad = prototypes.grad = None
            start = time.perf_counter()
            loss_fn().backward()
            if i >= 20:
                samples.append(time.perf_counter() - start)
        grads.append(torch.cat([z.grad.flatten(), prototypes.grad.flatten()]))
        out[name] = float(np.median(samples)) * 1e6
    out["max_grad_difference"] = float((grads[0] - grads[1]).abs().max())
    return out


def _layers(X: np.ndarray, y: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Per-step ms of the plain loop (through nn.Linear, then by default), a bare
    LightningModule and LVQMLN, epochs alternating."""
    import lightning.pytorch as pl

    from lvqmln_torch import LVQMLN, ArrayDataModule
    from lvqmln_torch.core import functional as F

    datamodule = ArrayDataModule(X, y, batch_size=LARGE["batch_size"], shuffle=True)
    datamodule.setup("fit")

    class Bare(pl.LightningModule):
        """The loss alone as a training step, on an initialised copy of the network."""

        def __init__(self) -> None:
            super().__init__()
            self.net = LVQMLN(**MODEL)
            self.net.prepare(datamodule)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            net = self.net
            return F.glvq_loss(
                net.distances(net.backbone(batch[0])), batch[1], net.prototype_labels
            )

        def configure_optimizers(self) -> Any:
            return self.net.configure_optimizers()

    out: dict[str, list[float]] = {
        "plain_nn_linear": [],
        "plain": [],
        "bare": [],
        "ours": [],
        "ours_train_acc": [],
    }

    class Timer(pl.Callback):
        def __init__(self, key: str) -> None:
            self.key = key

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seconds = time.perf_counter() - self.start
            out[self.key].append(seconds / trainer.num_training_batches * 1e3)
            if self.key == "ours":
                out["ours_train_acc"] = [float(trainer.callback_metrics["train_acc"])]

    plain = LVQMLN(**MODEL)
    plain.prepare(datamodule)
    plain.train()
    optimizer = plain.configure_optimizers()
    x, y_all = datamodule.train_tensors()[:2]
    ours, bare = LVQMLN(**MODEL), Bare()
    for round_ in range(rounds):
        for key, onednn in (("plain_nn_linear", False), ("plain", True)):
            torch.backends.mkldnn.enabled = onednn  # PyTorch's switch for the fused path
            try:
                times = _plain_phases(plain, optimizer, x, y_all, seed=round_)["step"]
            finally:
                torch.backends.mkldnn.enabled = True
            out[key].append(sum(times) / len(times) * 1e3)
        for key, module in (("bare", bare), ("ours", ours)):
            cpu_trainer(1, [Timer(key)]).fit(module, datamodule)
    return out


def measure(n_samples: int, rounds: int) -> dict[str, Any]:
    """Every measurement of the module docstring."""
    from worker_throughput import matmul_peak

    from lvqmln_torch import LVQMLN, ArrayDataModule

    X, y = make_large(n_samples, LARGE["n_features"], LARGE["n_classes"])
    datamodule = ArrayDataModule(X, y, batch_size=LARGE["batch_size"], shuffle=True)
    datamodule.setup("fit")
    net = LVQMLN(**MODEL)
    net.prepare(datamodule)
    net.train()
    optimizer = net.configure_optimizers()
    x, y_all = datamodule.train_tensors()[:2]
    _plain_phases(net, optimizer, x, y_all, seed=1000)  # warm-up epoch
    phases: dict[str, list] = {name: [] for name in (*PHASES, "step")}
    for round_ in range(rounds):
        for name, values in _plain_phases(net, optimizer, x, y_all, seed=round_).items():
            phases[name] += values
    result: dict[str, Any] = {
        "phases_ms": {name: float(np.median(v)) * 1e3 for name, v in phases.items()},
        "kernels_ms": _kernel_groups(net, optimizer, x, y_all),
        "peak": matmul_peak(),
        "loss_us": {batch: _loss_cost(batch) for batch in (64, LARGE["batch_size"])},
    }
    with warnings.catch_warnings():  # the stall detection's warning (see the report)
        warnings.simplefilter("ignore")
        result["layers_ms"] = _layers(X, y, rounds)
    return result


def render(result: dict[str, Any], meta: dict[str, Any]) -> str:
    phases, kernels, peak = result["phases_ms"], result["kernels_ms"], result["peak"]
    batch = LARGE["batch_size"]
    best_ms = peak["step_s"] * 1e3  # the 11 products at their best: the bound's step
    step_ms = phases["step"]
    essential_ms = kernels["gather"] + kernels["activation"] + kernels["optimizer"]
    layers = {key: float(np.median(v[1:] or v)) for key, v in result["layers_ms"].items()}
    flops = mlp_flops_per_sample(
        LARGE["n_features"],
        LARGE["hidden_sizes"],
        LARGE["latent_dim"],
        LARGE["n_classes"] * LARGE["prototypes_per_class"],
    )["train"]
    loss = result["loss_us"]
    engine_ms = {  # all 11 products through each library (best of repeats each)
        name: sum(p["engine_seconds"].get(name, float("nan")) for p in peak["products"]) * 1e3
        for name in ("mkl", "onednn")
    }
    rounds = result["layers_ms"]

    def rate(ms: float) -> str:
        return f"{batch / ms * 1e3:,.0f}/s, {best_ms / ms:.0%} of the bound"

    lines = [
        "## Anatomy of figure 3's training step (issue 22)",
        "",
        "Written by `benchmarks/step_anatomy.py --write` (see its docstring for the method).",
        "",
        f"- Command: `{meta['command']}`",
        f"- Date: {meta['date']}; machine: {meta['cpu']}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {meta['threads']} threads; load average (1 min) at start "
        f"{meta['load_start']:.2f}, at end {meta['load_end']:.2f}",
        f"- {meta['n_samples']:,} samples x {LARGE['n_features']}, batch {batch}, MLP "
        f"{LARGE['hidden_sizes']} -> {LARGE['latent_dim']}, "
        f"{LARGE['n_classes'] * LARGE['prototypes_per_class']} prototypes, Adam; "
        f"{flops:,} FLOPs of matrix products per sample",
        "",
        "| Phase of a plain PyTorch step | ms per step (median) | share |",
        "|---|---|---|",
        *(f"| {name} | {phases[name]:.2f} | {phases[name] / step_ms:.0%} |" for name in PHASES),
        f"| whole step | {step_ms:.2f} | {rate(step_ms)} |",
        "",
        "| Kernels of the plain loop (torch.profiler, one epoch) | ms per step |",
        "|---|---|",
        *(f"| {name} | {ms:.2f} |" for name, ms in kernels.items()),
        "",
        f"- The 11 products at their best (figure 3's bound, best of {peak['repeats']} each, "
        f"{peak['gflops']:.1f} GFLOP/s): {best_ms:.2f} ms per step = "
        f"{batch / best_ms * 1e3:,.0f} samples/s; inside the loop they took "
        f"{kernels['matrix products']:.2f} ms ({best_ms / kernels['matrix products']:.0%} "
        "of their best speed).",
        f"- The ceiling of an eager step: the products at their best plus the gather, the "
        f"activation and the optimizer's update as the loop ran them ({essential_ms:.2f} ms), "
        f"and nothing else (no loss kernels, no Python): {best_ms + essential_ms:.2f} ms = "
        f"{rate(best_ms + essential_ms)}.",
        f"- The loop's layers (ms per step, median of rounds 2-{len(rounds['plain'])}): plain "
        f"loop through nn.Linear (MKL) {layers['plain_nn_linear']:.2f} "
        f"({rate(layers['plain_nn_linear'])}); plain loop as the backbone trains by default "
        f"(oneDNN) {layers['plain']:.2f} ({rate(layers['plain'])}, "
        f"{layers['plain_nn_linear'] / layers['plain']:.3f}x nn.Linear's rate); a bare "
        f"LightningModule {layers['bare']:.2f} (Lightning's loop and data path add "
        f"{layers['bare'] - layers['plain']:.2f}); LVQMLN {layers['ours']:.2f} (the module's "
        f"metrics, checks and logging add {layers['ours'] - layers['bare']:.2f}; ours "
        f"{layers['plain'] / layers['ours']:.2f}x the plain loop's rate, {rate(layers['ours'])}).",
        "- Rounds (plain nn.Linear / plain / bare / ours, ms per step): "
        + "; ".join(
            " / ".join(f"{v:.2f}" for v in values)
            for values in zip(*(rounds[k] for k in ("plain_nn_linear", "plain", "bare", "ours")))
        ),
        f"- The 11 products all through MKL's `torch.matmul` {engine_ms['mkl']:.2f} ms, all "
        f"through oneDNN's linear {engine_ms['onednn']:.2f} ms; by product, oneDNN faster for "
        + ", ".join(p["name"] for p in peak["products"] if p.get("engine") == "onednn")
        + ".",
        "- The loss's forward and backward (distances, μ, mean) on 20 prototypes: "
        + "; ".join(
            f"batch {b}: functional core {v['functional']:.0f} µs, one fused autograd node "
            f"{v['fused']:.0f} µs (gradients equal to {v['max_grad_difference']:.1e})"
            for b, v in loss.items()
        ),
        f"- The default model does not learn this synthetic problem (training accuracy "
        f"{rounds['ours_train_acc'][-1]:.3f} after {meta['rounds']} epochs): the "
        "timings are those of its steps, whatever they learn.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=LARGE["n_samples"])
    parser.add_argument("--rounds", type=int, default=4, help="epochs per measurement")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    if args.samples < LARGE["batch_size"] or args.rounds < 2:
        parser.error(
            f"--samples must be at least {LARGE['batch_size']} (one batch) and --rounds at "
            "least 2 (the first round is a warm-up)"
        )
    from run import machine_info

    meta = {
        "command": " ".join(["python benchmarks/step_anatomy.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": machine_info()["cpu"],
        "threads": torch.get_num_threads(),
        "load_start": os.getloadavg()[0],
        "n_samples": args.samples,
        "rounds": args.rounds,
    }
    result = measure(args.samples, args.rounds)
    meta["load_end"] = os.getloadavg()[0]
    publish(render(result, meta), "step_anatomy", args.output, args.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
