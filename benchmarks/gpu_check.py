"""The GPU check (``make gpu-check``): one script, under 5 minutes on one GPU, one table.

Checks on the first CUDA device, each against a stated bound:

1. forward, loss and gradients in CUDA float32 against the CPU in float64;
2. ``16-mixed`` and ``bf16-mixed`` fits learn: accuracy within 1 point of float32, no NaN;
3. throughput of ``Trainer.fit`` against a plain PyTorch loop with the same model, at
   1M x 784 (MLP) and 28x28 images (CNN), synthetic data: the ratio is stated (no bound);
4. explanations, exemplars and prototype projection on CUDA against their CPU results;
5. ONNX export of a CUDA-trained model, run in onnxruntime, against the model on CUDA;
6. DDP across every visible GPU when there are several: every rank ends identical.

Exit status: 0 when every check passes, 1 on any failure, 2 without CUDA (nothing checked).
``--cpu`` runs the same checks on the CPU at small sizes, to try the script itself on a
machine without a GPU (it proves nothing about a GPU).

Usage::

    python benchmarks/gpu_check.py          # or: make gpu-check
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402

from lvqmln_torch import LVQMLN, ArrayDataModule  # noqa: E402
from lvqmln_torch.core import functional as F  # noqa: E402

ROWS: list[tuple[str, str, str, str]] = []
QUIET = dict(logger=False, enable_progress_bar=False, enable_model_summary=False)


def row(check: str, measured: str, bound: str, ok: bool | None) -> None:
    """One line of the table; ``ok=None`` is information (no bound)."""
    ROWS.append((check, measured, bound, {True: "pass", False: "FAIL", None: "info"}[ok]))


def trainer(device: str, **kwargs: Any) -> L.Trainer:
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(accelerator=accelerator, devices=1, **QUIET, **kwargs)


def blobs(n: int, d: int, k: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(scale=spread, size=(k, d))[y] + rng.normal(size=(n, d))
    return X.astype(np.float32), y


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64 on the CPU."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def fitted(device: str, X: np.ndarray, y: np.ndarray, epochs: int, **kwargs: Any) -> LVQMLN:
    model = LVQMLN(**{"hidden_sizes": [64], "latent_dim": 8, "lr": 0.01, **kwargs})
    trainer(device, max_epochs=epochs).fit(model, ArrayDataModule(X, y, batch_size=256, seed=0))
    return model


# --------------------------------------------------------------------------- 1. numerics
def check_numerics(device: str) -> None:
    X, y = blobs(512, 20, 4, 2.0, seed=1)
    model = LVQMLN(in_features=20, n_classes=4, hidden_sizes=[64], latent_dim=8, seed=0)
    model.prepare(ArrayDataModule(X, y))
    x, t = torch.as_tensor(X), torch.as_tensor(y)
    results = {}
    for name, dtype, where in (("ref", torch.float64, "cpu"), ("dev", torch.float32, device)):
        net = copy.deepcopy(model).to(device=where, dtype=dtype)
        z = net.backbone(x.to(where, dtype))
        d = net.distances(z)
        loss = F.glvq_loss(d, t.to(where), net.prototype_labels)
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        results[name] = (z, d, loss, grads)
    bounds = (("latent codes", 1e-5), ("distances", 1e-4), ("loss", 1e-4), ("gradients", 1e-3))
    for i, (what, bound) in enumerate(bounds):
        err = relative(results["dev"][i], results["ref"][i])
        row(f"float32 {what} vs CPU float64", f"{err:.1e}", f"rel <= {bound:.0e}", err <= bound)


# --------------------------------------------------------------------------- 2. mixed precision
def check_mixed_precision(device: str) -> None:
    X_all, y_all = blobs(9000, 20, 5, 1.2, seed=2)
    X, y, Xt, yt = X_all[:6000], y_all[:6000], X_all[6000:], y_all[6000:]
    accuracy = {}
    precisions = ["32-true", "bf16-mixed"] + (["16-mixed"] if device != "cpu" else [])
    for precision in precisions:
        model = LVQMLN(hidden_sizes=[64], latent_dim=8, lr=0.01, seed=0)
        trainer(device, max_epochs=15, precision=precision).fit(
            model, ArrayDataModule(X, y, batch_size=128, seed=0)
        )
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
        accuracy[precision] = float(np.mean(model.cpu().predict(Xt) == yt))
        if precision == "32-true":
            row(
                "float32 fit: accuracy",
                f"{accuracy[precision]:.3f}",
                ">= 0.9",
                finite and accuracy[precision] >= 0.9,
            )
            continue
        gap = abs(accuracy[precision] - accuracy["32-true"])
        row(
            f"{precision} fit: accuracy (float32 {accuracy['32-true']:.3f})",
            f"{accuracy[precision]:.3f}, finite={finite}",
            "within 0.01, no NaN",
            finite and gap <= 0.01,
        )


# --------------------------------------------------------------------------- 3. throughput
class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        self.seconds.append(time.perf_counter() - self._start)


def _sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def plain_epoch_seconds(model: LVQMLN, X: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """One epoch of a plain loop (after one warm-up epoch) with a copy of ``model``'s
    backbone and prototypes: batches gathered on the CPU and moved, forward, GLVQ loss,
    backward, Adam. The same work as the fit, without Lightning."""
    device = model.device
    backbone = copy.deepcopy(model.backbone).train()
    prototypes = torch.nn.Parameter(model.prototypes.detach().clone())
    labels = model.prototype_labels
    optimizer = torch.optim.Adam([prototypes, *backbone.parameters()], lr=model.hparams.lr)
    seconds = 0.0
    for epoch in range(2):
        _sync(device)
        start = time.perf_counter()
        order = torch.randperm(len(X))
        for i in range(0, len(X), batch):
            index = order[i : i + batch]
            xb = X[index].to(device, non_blocking=True)
            yb = y[index].to(device, non_blocking=True)
            loss = F.glvq_loss(F.squared_euclidean_distance(backbone(xb), prototypes), yb, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)
        seconds = time.perf_counter() - start if epoch == 1 else seconds
    return seconds


def check_throughput(device: str, n_mlp: int, n_cnn: int) -> None:
    g = torch.Generator().manual_seed(0)
    cases = {
        f"MLP {n_mlp:,} x 784": (
            torch.randn(n_mlp, 784, generator=g),
            dict(in_features=784, hidden_sizes=[512, 256], latent_dim=64),
            4096,
        ),
        f"CNN {n_cnn:,} x 1x28x28": (
            torch.randn(n_cnn, 1, 28, 28, generator=g),
            dict(backbone="cnn", input_shape=(1, 28, 28), channels=[16, 32], latent_dim=32),
            512,
        ),
    }
    for name, (X, arguments, batch) in cases.items():
        y = torch.randint(0, 10, (len(X),), generator=g)
        model = LVQMLN(n_classes=10, n_prototypes_per_class=2, lr=0.001, **arguments)
        timer = EpochTimer()
        data = ArrayDataModule(X, y, batch_size=batch, seed=0, standardize=False)
        trainer(device, max_epochs=2, callbacks=[timer]).fit(model, data)
        ours = timer.seconds[-1]
        plain = plain_epoch_seconds(model, X, y, batch)
        row(
            f"throughput {name} (batch {batch})",
            f"fit {len(X) / ours:,.0f}/s, plain loop {len(X) / plain:,.0f}/s",
            "ratio stated",
            None,
        )
        row(f"  fit / plain-loop epoch time, {name}", f"{ours / plain:.2f}x", "", None)


# --------------------------------------------------------------------------- 4. explanations
def check_explanations(device: str) -> None:
    X, y = blobs(3000, 20, 4, 1.5, seed=4)
    cpu = fitted("cpu", X, y, epochs=5, n_prototypes_per_class=2)
    dev = copy.deepcopy(cpu).to(device)
    x = torch.as_tensor(X)
    with torch.no_grad():
        reference = cpu.double().distances(cpu.backbone(x.double())).numpy()  # (n, P)
        cpu.float()
    a, b = cpu.explain(x), {k: v.cpu() for k, v in dev.explain(x).items()}
    err = relative(b["distance"], a["distance"])
    row("explain: winning distance, CUDA vs CPU", f"{err:.1e}", "rel <= 1e-4", err <= 1e-4)
    bad = _not_near_best(b["prototype"].numpy(), reference, 1e-5)
    row(
        "explain: winning prototype, CUDA vs CPU",
        f"{bad} clear disagreements",
        "0 (ties within 1e-5 of max d may differ)",
        bad == 0,
    )
    (_, da), (ib, db) = cpu.prototype_exemplars(x, k=5), dev.prototype_exemplars(x, k=5)
    err = relative(db, da)
    bad = _not_near_best_ranked(ib.cpu().numpy(), da.numpy(), reference, 1e-5)
    row(
        "exemplars (k=5): distances / ranks",
        f"{err:.1e} / {bad} clear disagreements",
        "rel <= 1e-4 / 0",
        err <= 1e-4 and bad == 0,
    )
    labels = torch.as_tensor(y)
    sources = copy.deepcopy(dev).project_prototypes(x, labels).numpy()
    same = np.where(y[:, None] == cpu.prototype_labels.numpy()[None, :], reference, np.inf)
    bad = _not_near_best(sources, same.T, 1e-5)
    row(
        "projection: source samples, CUDA vs CPU",
        f"{bad} clear disagreements",
        "0 (ties within 1e-5 of max d may differ)",
        bad == 0,
    )


def _tolerance(d: np.ndarray, tol: float) -> float:
    """An absolute tolerance for squared distances: float32 computes them as
    ``|z|^2 + |w|^2 - 2 z.w``, whose rounding scales with the largest distance, not with
    each (small) one."""
    return tol * float(np.abs(d[np.isfinite(d)]).max())


def _not_near_best(chosen: np.ndarray, d: np.ndarray, tol: float) -> int:
    """How many rows of ``d`` chose a column clearly farther than the row's minimum."""
    best = d.min(axis=1)
    return int(np.sum(d[np.arange(len(d)), chosen] > best + _tolerance(d, tol)))


def _not_near_best_ranked(idx: np.ndarray, want: np.ndarray, d: np.ndarray, tol: float) -> int:
    """How many ranked exemplars ``idx (P, k)`` sit clearly off the reference ranking's
    distances ``want (P, k)`` (by the reference distances ``d (n, P)``)."""
    got = d[idx, np.arange(len(idx))[:, None]]
    return int(np.sum(np.abs(got - want) > _tolerance(d, tol)))


# --------------------------------------------------------------------------- 5. ONNX
def check_onnx(device: str) -> None:
    import onnxruntime

    from lvqmln_torch.io.export import export_onnx

    X, y = blobs(2000, 20, 4, 1.5, seed=5)
    model = fitted(device, X, y, epochs=5)
    x = torch.as_tensor(X[:500])
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        labels, proba, latent = session.run(None, {"x": x.numpy()})
    model.to(device)
    want = model.predict_proba(x).cpu().numpy()
    with torch.no_grad():
        d = model.distances(model.transform(x)).double().cpu().numpy()
    err = float(np.abs(proba - want).max())
    best = model.prototype_labels.cpu().numpy()[d.argmin(1)]
    near = np.sort(d, axis=1)[:, 1] - d.min(1) <= _tolerance(d, 1e-5)
    bad = int(np.sum((labels != best) & ~near))
    row("ONNX (onnxruntime) vs CUDA: probabilities", f"{err:.1e}", "abs <= 1e-5", err <= 1e-5)
    row("ONNX (onnxruntime) vs CUDA: labels", f"{bad} clear disagreements", "0", bad == 0)


# --------------------------------------------------------------------------- 6. DDP
def ddp_worker(out: Path) -> None:
    """Run by ``check_ddp`` (Lightning re-runs this script once per GPU)."""
    X, y = blobs(4096, 20, 4, 1.5, seed=6)
    model = LVQMLN(hidden_sizes=[64], latent_dim=8, lr=0.01, seed=0)
    trainer_ = L.Trainer(
        accelerator="gpu",
        devices=-1,
        strategy="ddp",
        max_epochs=3,
        enable_checkpointing=False,
        **QUIET,
    )
    trainer_.fit(model, ArrayDataModule(X, y, batch_size=512, seed=0))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, out / f"rank{trainer_.global_rank}.pt")


def check_ddp(n_gpus: int) -> None:
    if n_gpus < 2:
        row("DDP across GPUs", f"{n_gpus} GPU visible", "needs 2 or more", None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, __file__, "--ddp-worker", tmp]
        run = subprocess.run(command, capture_output=True, text=True, timeout=240)
        files = sorted(Path(tmp).glob("rank*.pt"))
        if run.returncode != 0 or len(files) != n_gpus:
            row(
                f"DDP on {n_gpus} GPUs",
                f"exit {run.returncode}, {len(files)} ranks saved",
                "all ranks",
                False,
            )
            print(run.stderr[-3000:], file=sys.stderr)
            return
        states = [torch.load(f, weights_only=True) for f in files]
    same = all(torch.equal(s[k], states[0][k]) for s in states[1:] for k in states[0])
    row(
        f"DDP on {n_gpus} GPUs: ranks' final weights",
        "identical" if same else "differ",
        "bit-identical",
        same,
    )


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="try the script on the CPU (small)")
    parser.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker)
        return 0
    if not args.cpu and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); nothing was checked."
        )
        return 2
    device = "cpu" if args.cpu else "cuda"
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric"):
        __import__("logging").getLogger(name).setLevel("ERROR")
    start = time.perf_counter()
    checks = [
        ("numerics", lambda: check_numerics(device)),
        ("mixed precision", lambda: check_mixed_precision(device)),
        (
            "throughput",
            lambda: check_throughput(
                device, *((20_000, 5_000) if args.cpu else (1_000_000, 60_000))
            ),
        ),
        ("explanations", lambda: check_explanations(device)),
        ("onnx", lambda: check_onnx(device)),
        ("ddp", lambda: check_ddp(0 if args.cpu else torch.cuda.device_count())),
    ]
    for name, check in checks:
        try:
            check()
        except Exception as err:  # one broken check must not hide the others
            traceback.print_exc()
            row(name, f"raised {type(err).__name__}: {str(err)[:60]}", "", False)
    where = (
        torch.cuda.get_device_name(0) if device == "cuda" else "CPU (--cpu: a trial of the script)"
    )
    print(
        f"\nGPU check on {where}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s\n"
    )
    widths = [
        max(len(r[i]) for r in [("check", "measured", "bound", "result"), *ROWS]) for i in range(4)
    ]
    for r in [("check", "measured", "bound", "result"), tuple("-" * w for w in widths), *ROWS]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    failed = [r for r in ROWS if r[3] == "FAIL"]
    print(f"\n{len(failed)} failed" if failed else "\nall checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
