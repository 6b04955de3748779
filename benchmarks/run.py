"""Side-by-side benchmarks of lvqmln and upstream prosemble's LVQMLN.

    .venv/bin/python benchmarks/run.py            # full run (a few minutes), writes RESULTS.md
    .venv/bin/python benchmarks/run.py --quick    # one repeat each, smaller large problem

Every measurement runs in a fresh subprocess: ours in the project's ``.venv``, prosemble's in
``benchmarks/.venv-prosemble`` (created here on first use with ``pip install "prosemble[jax]"``,
so the project environment never sees it). Figures (issue 7):

1.  cold fit: a new process until a fitted model and its test accuracy (iris, digits; the seed's
    defaults with 300 full-batch epochs), timed from spawning the process to its result line;
1b. warm fit: five new estimators fitted one after another in one process, median of fits 2-5;
2.  steady-state time per epoch on iris, full batch, plain Trainer with progress bar and logger;
2b. the training step's own cost: LVQMLN against a bare module (the same backbone, loss,
    optimizer and batches; nothing else in the step) at batch 64, no bar, no logger;
3.  training throughput on 200k x 784 (hidden [512, 256], latent 64, 10 classes x 2 prototypes,
    batch 1024, Adam, 2 epochs) against the bound from the measured float32 matmul peak;
4.  prediction throughput of the iris model on CPU (1M rows).

Results go to ``benchmarks/RESULTS.md`` (overwritten), with the command, date and machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Ours run in the project's environment (created by `make install`), whichever python runs this.
OURS_PYTHON = ROOT / ".venv" / "bin" / "python"
if not OURS_PYTHON.exists():
    OURS_PYTHON = Path(sys.executable)
PROSEMBLE_VENV = HERE / ".venv-prosemble"
PROSEMBLE_REQUIREMENT = "prosemble[jax]"

sys.path.insert(0, str(HERE))
from _common import LARGE, RESULT_PREFIX, keep_section, mlp_flops_per_sample  # noqa: E402


# ---------------------------------------------------------------------------- environment
def ensure_prosemble_venv(install: bool) -> Path | None:
    """The python of ``benchmarks/.venv-prosemble``, created and filled on first use."""
    python = PROSEMBLE_VENV / "bin" / "python"
    if python.exists() and _probe(python, "import prosemble, jax, optax"):
        return python
    if not install:
        print("prosemble environment missing and --no-install given: skipping prosemble")
        return None
    print(f"creating {PROSEMBLE_VENV.relative_to(ROOT)} with pip install {PROSEMBLE_REQUIREMENT!r}")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PROSEMBLE_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", PROSEMBLE_REQUIREMENT], check=True
        )
    except subprocess.CalledProcessError as err:
        print(f"could not install prosemble ({err}); its columns stay empty")
        return None
    return python if _probe(python, "import prosemble, jax, optax") else None


def _probe(python: Path, code: str) -> bool:
    result = subprocess.run([str(python), "-c", code], capture_output=True)
    return result.returncode == 0


def _engine_counts(products: list[dict[str, Any]]) -> str:
    """``"7 via MKL, 4 via oneDNN"``: which engine was faster for how many products."""
    counts: dict[str, int] = {}
    for product in products:
        engine = product.get("engine", "mkl")  # results written before engines were compared
        counts[engine] = counts.get(engine, 0) + 1
    names = {"mkl": "MKL", "onednn": "oneDNN"}
    return ", ".join(f"{n} via {names.get(e, e)}" for e, n in sorted(counts.items()))


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024**2:.0f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "gpu": "none used (CPU only)",
    }


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------- data
def prepare_data(directory: Path) -> dict[str, str]:
    """iris and digits: stratified 70/30 split (seed 0), z-scored with the training split's
    statistics, float32; the same arrays for both libraries."""
    from sklearn.datasets import load_digits, load_iris
    from sklearn.model_selection import train_test_split

    paths = {}
    for name, loader in (("iris", load_iris), ("digits", load_digits)):
        X, y = loader(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.3, random_state=0, stratify=y
        )
        mean, std = X_train.mean(0), X_train.std(0)
        std[std == 0] = 1.0
        path = directory / f"{name}.npz"
        np.savez(
            path,
            X_train=((X_train - mean) / std).astype(np.float32),
            y_train=y_train.astype(np.int64),
            X_test=((X_test - mean) / std).astype(np.float32),
            y_test=y_test.astype(np.int64),
        )
        paths[name] = str(path)
    return paths


# ---------------------------------------------------------------------------- workers
class WorkerError(RuntimeError):
    pass


def run_worker(
    python: Path, side: str, task: str, timeout: float = 900.0, **arguments: Any
) -> tuple[float, dict[str, Any]]:
    """Run one task in a fresh process; ``(seconds from spawn to the result line, result)``."""
    script = HERE / ("worker_ours.py" if side == "ours" else "worker_prosemble.py")
    command = [str(python), str(script), task, json.dumps(arguments)]
    with tempfile.TemporaryFile(mode="w+") as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
        )
        result, elapsed = None, None
        try:
            assert process.stdout is not None
            for line in iter(process.stdout.readline, ""):
                # progress bars write "\r" updates: the result may follow one on the same line
                if RESULT_PREFIX in line:
                    elapsed = time.perf_counter() - start
                    result = json.loads(line.split(RESULT_PREFIX, 1)[1])
                if time.perf_counter() - start > timeout:
                    raise subprocess.TimeoutExpired(command, timeout)
            process.wait(timeout=max(1.0, timeout - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise WorkerError(f"{side} {task} timed out after {timeout:.0f} s") from None
        if process.returncode != 0 or result is None:
            stderr.seek(0)
            tail = stderr.read()[-3000:]
            last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "no output")
            print(tail)
            raise WorkerError(f"{side} {task} failed (exit {process.returncode}): {last}")
    return elapsed, result


def _result(python: Path, side: str, task: str, **arguments: Any) -> dict[str, Any]:
    return run_worker(python, side, task, **arguments)[1]


def attempt(label: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one measurement; on failure print why and return the error text (the table shows
    it) instead of aborting the whole run."""
    start = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except WorkerError as err:
        print(f"  {label}: FAILED\n{err}")
        return {"error": str(err).splitlines()[0]}
    print(f"  {label}: done in {time.perf_counter() - start:.1f} s")
    return out


# ---------------------------------------------------------------------------- figures
def cold_fits(pythons: dict[str, Path], data: dict[str, str], repeats: int) -> dict[str, Any]:
    """Figure 1. One discarded warm-up process per side (it fills the OS file cache), then
    ``repeats`` processes per side, interleaved so that load drift hits both alike."""
    out: dict[str, Any] = {}
    for name, path in data.items():
        runs: dict[str, list] = {side: [] for side in pythons}
        for side, python in pythons.items():
            run_worker(python, side, "cold_fit", data=path)
        for _ in range(repeats):
            for side, python in pythons.items():
                runs[side].append(run_worker(python, side, "cold_fit", data=path))
        out[name] = {
            side: {
                "wall_s": [wall for wall, _ in values],
                "median_s": statistics.median(wall for wall, _ in values),
                "import_s": statistics.median(r["import_s"] for _, r in values),
                "fit_s": statistics.median(r["fit_s"] for _, r in values),
                "accuracy": values[0][1]["accuracy"],
            }
            for side, values in runs.items()
        }
    return out


def warm_fits(
    pythons: dict[str, Path], data: dict[str, str], n_fits: int, rounds: int
) -> dict[str, Any]:
    """Figure 1b: ``rounds`` processes per side (interleaved), each fitting ``n_fits`` new
    estimators one after another; the median over all fits but each process's first."""
    out: dict[str, Any] = {}
    for name, path in data.items():
        runs: dict[str, list] = {side: [] for side in pythons}
        for _ in range(rounds):
            for side, python in pythons.items():
                runs[side].append(_result(python, side, "warm_fit", data=path, n_fits=n_fits))
        # For comparison: ours on the Lightning engine (the default picks the numpy engine).
        runs["ours_lightning"] = [
            _result(
                pythons["ours"], "ours", "warm_fit", data=path, n_fits=n_fits, engine="lightning"
            )
        ]
        out[name] = {
            side: {
                "fit_s": [r["fit_s"] for r in results],
                "median_s": statistics.median(t for r in results for t in r["fit_s"][1:]),
                "accuracy": results[0]["accuracy"],
                "engine": results[0].get("engine"),
                "n_iter": results[0].get("n_iter"),
            }
            for side, results in runs.items()
        }
    return out


def epoch_times(pythons: dict[str, Path], data: str, epochs: int) -> dict[str, Any]:
    """Figure 2."""
    out = {
        "ours": attempt(
            "ours", _result, pythons["ours"], "ours", "epoch_time", data=data, epochs=epochs
        )
    }
    if "prosemble" in pythons:
        out["prosemble"] = attempt(
            "prosemble", _result, pythons["prosemble"], "prosemble", "epoch_time", data=data
        )
    return out


def throughputs(pythons: dict[str, Path], n_samples: int) -> dict[str, Any]:
    """Figure 3 and its FLOP bound."""
    flops = mlp_flops_per_sample(
        LARGE["n_features"],
        LARGE["hidden_sizes"],
        LARGE["latent_dim"],
        LARGE["n_classes"] * LARGE["prototypes_per_class"],
    )
    peak = run_worker(pythons["ours"], "ours", "matmul_peak")[1]
    out: dict[str, Any] = {
        "flops_per_sample": flops,
        "matmul_peak": peak,
        "bound_samples_per_s": peak["gflops"] * 1e9 / flops["train"],
    }
    for side, python in pythons.items():
        out[side] = attempt(side, _result, python, side, "throughput", n_samples=n_samples)
    return out


def versions_of(python: Path, side: str) -> dict[str, Any]:
    return run_worker(python, side, "versions")[1]


def predictions(pythons: dict[str, Path], data: str, n_rows: int) -> dict[str, Any]:
    """Figure 4."""
    return {
        side: attempt(side, _result, python, side, "predict", data=data, n_rows=n_rows)
        for side, python in pythons.items()
    }


# ---------------------------------------------------------------------------- report
def _fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "–"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:.{digits}f}{unit}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "–"
    return f"{ours / theirs:.2f}x"


def _get(results: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "not met")


def _busy_note(meta: dict[str, Any]) -> str:
    """A warning when other processes kept more than half the cores busy as the run began (the
    1-minute load average at its start; the one at its end counts the benchmarks' own
    threads): torch's threads then wait on descheduled ones, and its timings fall far more than
    XLA's (see the docs' performance page, "On a busy machine, use fewer threads")."""
    try:
        load = float(meta["load_start"].split()[0])
    except (KeyError, ValueError, IndexError):
        return ""
    cores = meta["machine"].get("cores") or 1
    if load <= cores / 2:
        return ""
    return (
        f". **Other processes loaded the machine ({load:.1f} at the start, {cores} cores)**: "
        "torch's threads then wait on descheduled ones and its timings fall far more than "
        "prosemble's; rerun on a quiet machine before reading the throughput rows"
    )


def render(
    results: dict[str, Any], meta: dict[str, Any], command: str, repeats: int, quick: bool
) -> str:
    rows = []
    for name in ("iris", "digits"):
        ours = _get(results, "cold", name, "ours", "median_s")
        theirs = _get(results, "cold", name, "prosemble", "median_s")
        ok = None if ours is None or theirs is None else ours <= 0.5 * theirs
        rows.append(
            (
                f"1. cold fit, {name} (s, new process → fitted + accuracy)",
                _fmt(ours, " s"),
                _fmt(theirs, " s"),
                _ratio(ours, theirs),
                "≤ 0.5x",
                _verdict(ok),
            )
        )
    for name in ("iris", "digits"):
        ours = _get(results, "warm", name, "ours", "median_s")
        theirs = _get(results, "warm", name, "prosemble", "median_s")
        ok = None if ours is None or theirs is None else ours <= 0.3 * theirs
        rows.append(
            (
                f"1b. warm fit, {name} (s per new estimator)",
                _fmt(ours, " s", 3),
                _fmt(theirs, " s", 3),
                _ratio(ours, theirs),
                "≤ 0.3x",
                _verdict(ok),
            )
        )
    epoch = _get(results, "epoch", "ours", "bar_logger_on", "epoch_ms_median")
    raw = _get(results, "epoch", "ours", "raw_step_ms_median")
    theirs = _get(results, "epoch", "prosemble", "epoch_ms_median")
    overhead = None if epoch is None or raw is None else epoch - raw
    rows.append(
        (
            "2. time per epoch, iris full batch, progress bar + logger on (ms)",
            _fmt(epoch, " ms"),
            _fmt(theirs, " ms", 3),
            _ratio(epoch, theirs),
            "–",
            "–",
        )
    )
    rows.append(
        (
            "2. … of which overhead beyond the optimizer step itself (ms)",
            _fmt(overhead, " ms"),
            "–",
            "–",
            "≤ 2 ms",
            _verdict(None if overhead is None else overhead <= 2.0),
        )
    )
    bare = _get(results, "epoch", "ours", "bare_module_bar_logger_on", "epoch_ms_median")
    rows.append(
        (
            "2. … of which Lightning's own (a bare module: the loss only) (ms)",
            _fmt(None if bare is None or raw is None else bare - raw, " ms"),
            "–",
            "–",
            "–",
            "–",
        )
    )
    engine = _get(results, "epoch", "ours", "numpy_engine_epoch_ms")
    rows.append(
        (
            "2. time per epoch, iris full batch, the estimator's numpy engine, all included (ms)",
            _fmt(engine, " ms", 3),
            _fmt(theirs, " ms", 3),
            _ratio(engine, theirs),
            "–",
            "–",
        )
    )
    step = _get(results, "step", "ratio")
    rows.append(
        (
            "2b. training step at batch 64: LVQMLN / a bare module (same backbone and loss)",
            "–"
            if step is None
            else f"{results['step']['lvqmln_step_ms']:.2f} / "
            f"{results['step']['bare_module_step_ms']:.2f} ms = {step:.2f}x",
            "–",
            "–",
            "≤ 1.10x",
            _verdict(None if step is None else step <= 1.10),
        )
    )
    ours = _get(results, "throughput", "ours", "samples_per_s")
    theirs = _get(results, "throughput", "prosemble", "samples_per_s")
    bound = _get(results, "throughput", "bound_samples_per_s")
    size = f"{meta['n_samples'] // 1000}k x 784"
    rows.append(
        (
            f"3. training throughput, {size}, steady state: the epochs only, no compilation "
            "(samples/s)",
            _fmt(ours, "/s"),
            _fmt(theirs, "/s"),
            _ratio(ours, theirs),
            "≥ 1x",
            _verdict(None if ours is None or theirs is None else ours >= theirs),
        )
    )
    rows.append(
        (
            "3. … as % of the FLOP bound " + (f"({bound:,.0f}/s)" if bound else ""),
            "–" if ours is None or bound is None else f"{100 * ours / bound:.0f}%",
            "–" if theirs is None or bound is None else f"{100 * theirs / bound:.0f}%",
            "–",
            "≥ 85%",
            _verdict(None if ours is None or bound is None else ours >= 0.85 * bound),
        )
    )
    plain = _get(results, "throughput", "ours", "raw_samples_per_s")
    rows.append(
        (
            "3. … ours against a plain PyTorch loop (the same steps, epochs alternating with "
            "ours; samples/s)",
            _fmt(ours, "/s"),
            "plain loop " + _fmt(plain, "/s"),
            _ratio(ours, plain),
            "–",
            "–",
        )
    )
    ours = _get(results, "throughput", "ours", "fit_samples_per_s")
    theirs = _get(results, "throughput", "prosemble")
    if theirs is not None and "first_fit_s" in theirs:
        theirs = theirs["n_samples"] * theirs["epochs"] / theirs["first_fit_s"]
    else:
        theirs = None
    rows.append(
        (
            f"3. … end to end: a fresh model's 2-epoch fit on {size} as a user runs it (samples/s)",
            _fmt(ours, "/s"),
            _fmt(theirs, "/s"),
            _ratio(ours, theirs),
            "–",
            "–",
        )
    )
    ours = _get(results, "predict", "ours", "estimator_samples_per_s")
    theirs = _get(results, "predict", "prosemble", "samples_per_s")
    rows.append(
        (
            "4. prediction, iris model, 1M rows (samples/s)",
            _fmt(ours, "/s"),
            _fmt(theirs, "/s"),
            _ratio(ours, theirs),
            "≥ 1,000,000/s",
            _verdict(None if ours is None else ours >= 1e6),
        )
    )

    lines = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run.py` (overwritten on every run); see `benchmarks/README.md`.",
        "",
        f"- Command: `{command}`",
        f"- Date: {meta['date']}; total harness time {meta['total_s']:.0f} s",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"{meta['machine']['memory']} RAM, {meta['machine']['os']}, "
        f"{meta['machine']['gpu']}",
        f"- Load average (1, 5, 15 min) at start: {meta['load_start']}; at end: "
        f"{meta['load_end']}. The machine may be shared: a busy machine inflates every timing "
        "(prosemble's compilation as much as our Python), so compare figures of one run"
        + _busy_note(meta),
        f"- Ours: {_versions(meta.get('ours_versions'))}",
        f"- prosemble: {_versions(meta.get('prosemble_versions'))}",
        f"- Repeats: cold fit = median of {repeats} new processes per side (interleaved) after "
        f"one discarded warm-up process per side; warm fit = median of fits 2-5 of 5 in each of "
        f"{meta['warm_rounds']} process(es) per side; per-epoch time = median over "
        f"{meta['epochs']} epochs; figure 3 on {meta['n_samples']:,} samples"
        + (" (--quick)" if quick else ""),
        "",
        "| Benchmark | lvqmln (ours) | prosemble | ours / prosemble | Target | Status |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *details(results)]
    return "\n".join(lines) + "\n"


def _versions(versions: dict[str, Any] | None) -> str:
    if not versions:
        return "not available"
    return ", ".join(f"{k} {v}" for k, v in versions.items() if k != "jax_devices")


def details(results: dict[str, Any]) -> list[str]:
    out = ["## Details", ""]
    for name in ("iris", "digits"):
        for side in ("ours", "prosemble"):
            r = _get(results, "cold", name, side)
            if r and "error" not in r:
                out.append(
                    f"- cold fit {name}, {side}: processes {', '.join(f'{x:.2f}' for x in r['wall_s'])} s; "
                    f"inside: import {r['import_s']:.2f} s, fit {r['fit_s']:.2f} s; "
                    f"test accuracy {r['accuracy']:.3f}"
                )
    for name in ("iris", "digits"):
        for side in ("ours", "ours_lightning", "prosemble"):
            r = _get(results, "warm", name, side)
            if r and "error" not in r:
                processes = "; ".join(", ".join(f"{x:.3f}" for x in fits) for fits in r["fit_s"])
                engine = f", engine {r['engine']!r}, {r['n_iter']} epochs" if r["engine"] else ""
                label = "ours" if side == "ours_lightning" else side
                out.append(
                    f"- warm fits {name}, {label}{engine} (one process per group): {processes} s "
                    f"(median of fits 2-5: {r['median_s']:.3f} s); test accuracy "
                    f"{r['accuracy'][-1]:.3f}"
                )
    ours = _get(results, "epoch", "ours")
    if ours and "error" not in ours:
        on, off = ours["bar_logger_on"], ours["bar_logger_off"]
        bare = ours["bare_module_bar_logger_on"]
        out.append(
            f"- per epoch, ours: {on['epoch_ms_median']:.2f} ms with {on['progress_bar']} and "
            f"{on['logger']} (p10 {on['epoch_ms_p10']:.2f} ms); {off['epoch_ms_median']:.2f} ms "
            f"with both off; Lightning's floor, a bare module (the loss only: no metrics, "
            f"logging or checks) with bar and logger on: {bare['epoch_ms_median']:.2f} ms; "
            f"the optimizer step alone in a plain PyTorch loop: "
            f"{ours['raw_step_ms_median']:.2f} ms (medians of {ours['epochs']} epochs after "
            f"{ours['skip']}); the estimator's numpy engine (the default for this problem): "
            f"{ours['numpy_engine_epoch_ms']:.3f} ms per epoch, all included"
        )
    theirs = _get(results, "epoch", "prosemble")
    if theirs and "error" not in theirs:
        short, long = theirs["short"], theirs["long"]
        out.append(
            "- per epoch, prosemble: inside its compiled `lax.scan` (use_scan=True), from "
            f"refits of one model (compiled once): (refit({long}) − refit({short})) / "
            f"{long - short}; refit times {short}: "
            + ", ".join(f"{x:.3f}" for x in theirs["refit_s"][str(short)])
            + f" s, {long}: "
            + ", ".join(f"{x:.3f}" for x in theirs["refit_s"][str(long)])
            + " s"
        )
    t = _get(results, "throughput")
    if t and "error" not in t:
        f = t["flops_per_sample"]
        p = t["matmul_peak"]
        out.append(
            f"- FLOP bound: forward {f['forward']:,} FLOPs/sample (MLP matmuls + prototype "
            f"product), training {f['train']:,} (3x forward without the first layer's input "
            f"gradient, which backpropagation never computes); float32 products of one "
            f"training step at batch {p['batch_size']} ({len(p['products'])}, the model's own "
            f"shapes and layouts, best of {p['repeats']} each, {p['threads']} threads, each "
            f"through the faster of MKL's torch.matmul and oneDNN's linear where the build has "
            f"it: {_engine_counts(p['products'])}): {1e3 * p['step_s']:.2f} ms, "
            f"{p['gflops']:.1f} GFLOP/s (from {min(x['gflops'] for x in p['products']):.0f} to "
            f"{max(x['gflops'] for x in p['products']):.0f} GFLOP/s by product) → bound "
            f"{t['bound_samples_per_s']:,.0f} samples/s"
        )
        ours = t.get("ours")
        if ours and "error" not in ours:
            out.append(
                f"- throughput, ours (Trainer.fit, batch 1024, Adam, shuffled): "
                f"{len(ours['epoch_s'])} epochs of {ours['n_samples']:,} samples took "
                f"{', '.join(f'{x:.2f}' for x in ours['epoch_s'])} s (1-minute load average "
                f"at their ends {', '.join(f'{x:.2f}' for x in ours['load'])}); steady state = the "
                f"median of the epochs after the first (the table's rate); end to end, from "
                f"building the datamodule ({ours['datamodule_s']:.2f} s) to the end of epoch "
                f"{ours['epochs']}: {ours['end_to_end_s']:.2f} s (prototype initialisation "
                f"included); the same steps in a plain PyTorch loop (one epoch after each of "
                f"ours but the first, alternating): "
                f"{', '.join(f'{x:.2f}' for x in ours['plain_epoch_s'])} s per epoch, "
                f"{ours['raw_samples_per_s']:,.0f} samples/s; final train loss "
                f"{ours['final_loss']:.4f}"
            )
        theirs = t.get("prosemble")
        if theirs and "error" not in theirs:
            out.append(
                f"- throughput, prosemble (use_scan=True: its mini-batch `lax.scan`, the fast "
                f"path; every fit compiles anew, so first fits filled JAX's persistent "
                f"compilation cache): fits of {theirs['epochs']} epochs "
                f"{', '.join(f'{x:.2f}' for x in theirs['fits_s'])} s and of "
                f"{2 * theirs['epochs']} epochs "
                f"{', '.join(f'{x:.2f}' for x in theirs['double_fits_s'])} s without "
                f"compilation → {theirs['epoch_s']:.2f} s per epoch from the medians (the "
                f"table's rate); end to "
                f"end without compilation {theirs['fit_samples_per_s']:,.0f} samples/s, with "
                f"it ({theirs['first_fit_s']:.2f} s) "
                f"{theirs['n_samples'] * theirs['epochs'] / theirs['first_fit_s']:,.0f} "
                f"samples/s; final train loss {theirs['final_loss']:.4f}"
            )
    ours = _get(results, "predict", "ours")
    if ours and "error" not in ours:
        out.append(
            f"- prediction, ours: estimator.predict (numpy in, labels out) "
            f"{ours['estimator_samples_per_s']:,.0f}/s; LVQMLN.predict_indices on a tensor "
            f"{ours['module_samples_per_s']:,.0f}/s ({ours['threads']} threads)"
        )
    out += [
        "",
        "Notes:",
        "- Figure 2's overhead is the per-epoch time with progress bar and logger on minus the "
        "same optimizer step (forward, loss, backward, Adam) in a plain PyTorch loop: what the "
        "Lightning loop, logging, metrics and the bar add per epoch. The bare module's time "
        "minus the same step is Lightning's own share of it.",
        "- The estimator (figures 1, 1b and 4) trains on its numpy engine for these problems "
        "(`engine='auto'`); the warm-fit details also give the Lightning engine's times.",
        "- prosemble compiles a new XLA program for every new model (its jit is keyed on the "
        "model object), so its warm fit is mostly compilation; its per-epoch time is one "
        "iteration inside the compiled scan.",
        "- prosemble 2.4.0 fails with `max_iter=1` and a `batch_size` (argmax of an empty "
        "loss difference in `_fit_minibatch_scan`); figure 3 does not need it.",
    ]
    errors = [
        f"- {path}: {value['error']}"
        for path, value in _walk(results)
        if isinstance(value, dict) and "error" in value
    ]
    if errors:
        out += ["", "Failures:", *errors]
    return out


def _walk(tree: Any, prefix: str = "") -> Any:
    if isinstance(tree, dict):
        yield prefix, tree
        for key, value in tree.items():
            yield from _walk(value, f"{prefix}/{key}" if prefix else key)


# ---------------------------------------------------------------------------- main
# The sections other scripts write into RESULTS.md (see _common.replace_section): kept.
KEPT_SECTIONS = (
    "projection",
    "scale",
    "accuracy",
    "mnist",
    "mnist_speed",
    "calibration",
    "conformal",
    "robustness",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, 50k-sample figure 3")
    parser.add_argument("--repeats", type=int, default=None, help="cold-fit processes per side")
    parser.add_argument("--skip-prosemble", action="store_true", help="measure ours only")
    parser.add_argument(
        "--no-install", action="store_true", help="do not create the prosemble environment"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("cold", "warm", "epoch", "step", "throughput", "predict"),
        help="run only these figures",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    warm_rounds = 1 if args.quick else 2
    epochs = 300 if args.quick else 1000
    n_samples = 50_000 if args.quick else LARGE["n_samples"]
    figures = set(args.only or ("cold", "warm", "epoch", "step", "throughput", "predict"))
    command = " ".join(
        ["python benchmarks/run.py"]
        + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]
    )

    start = time.perf_counter()
    meta: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(),
        "load_start": load_average(),
    }
    pythons: dict[str, Path] = {"ours": OURS_PYTHON}
    if not args.skip_prosemble:
        python = ensure_prosemble_venv(install=not args.no_install)
        if python is not None:
            pythons["prosemble"] = python
    for side, python in pythons.items():
        meta[f"{side}_versions"] = attempt(f"{side} versions", versions_of, python, side)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lvqmln-bench-") as tmp:
        data = prepare_data(Path(tmp))
        if "cold" in figures:
            print("1. cold fit")
            results["cold"] = attempt("cold fits", cold_fits, pythons, data, repeats)
        if "warm" in figures:
            print("1b. warm fit")
            results["warm"] = attempt("warm fits", warm_fits, pythons, data, 5, warm_rounds)
        if "epoch" in figures:
            print("2. per-epoch time")
            results["epoch"] = attempt("epoch time", epoch_times, pythons, data["iris"], epochs)
        if "step" in figures:
            print("2b. step cost")
            results["step"] = attempt("step cost", _result, OURS_PYTHON, "ours", "step_cost")
        if "throughput" in figures:
            print("3. throughput")
            results["throughput"] = attempt("throughput", throughputs, pythons, n_samples)
        if "predict" in figures:
            print("4. prediction")
            results["predict"] = attempt(
                "prediction", predictions, pythons, data["iris"], 1_000_000
            )
    meta["load_end"] = load_average()
    meta.update(warm_rounds=warm_rounds, epochs=epochs, n_samples=n_samples)
    meta["total_s"] = time.perf_counter() - start
    report = render(results, meta, command, repeats, args.quick)
    if args.output.exists():  # keep the sections the other benchmark scripts write
        old = args.output.read_text()
        for name in KEPT_SECTIONS:
            report = keep_section(old, report, name)
    args.output.write_text(report)
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(report)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
