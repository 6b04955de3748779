"""Training on data larger than memory (issue 12): memory-mapped ``.npy`` against in-memory
arrays, one process and two-process DDP on CPU, and CSV reading (pyarrow against the
line-by-line reader).

    .venv/bin/python benchmarks/scale.py                          # 2M and 200k rows, CSV 1M x 50
    .venv/bin/python benchmarks/scale.py --rows 200000 20000 --csv-rows 100000 --repeats 1  # quick

For every size a seeded float32 ``(rows, 784)`` file of 10 Gaussian classes is written to a
temporary folder (deleted afterwards). Each run is a fresh process (Lightning relaunches it once
more for the second DDP rank): ``ArrayDataModule`` over the file (or, for the in-memory path,
over ``np.load`` of it), ``LVQMLN`` with an MLP ``[256]``, latent 32, 10 classes, batch 1024,
one shuffled epoch. Each process reports the peak of its anonymous memory (``RssAnon`` in
``/proc/self/status``, sampled every 5 ms: the mapped file's pages are page cache, not ours),
the time from calling ``Trainer.fit`` to its first training step, and its samples per second
after the first step (to the end of the epoch). Every configuration runs ``--repeats`` times
(3), interleaved with the others, and the report gives medians. The CSV part times
``read_csv_table`` on a ``(csv_rows, 50)`` file with pyarrow and with the line-by-line reader,
interleaved, median of ``--csv-repeats`` fresh processes each.

Results go to a section of ``benchmarks/RESULTS.md`` (replaced on every run; ``run.py`` keeps
it), with the command, date and machine.
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
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import write_section  # noqa: E402

FEATURES, CLASSES, BATCH = 784, 10, 1024
SECTION = "scale"  # its block of RESULTS.md (see _common.replace_section)


def rss_anon() -> int:
    """This process's anonymous resident memory in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler(threading.Thread):
    """Samples ``RssAnon`` every ``interval`` seconds and keeps the peak."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak = interval, rss_anon()

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_anon())
            time.sleep(self.interval)


# ---------------------------------------------------------------------------- workers
def fit_worker(
    x_path: Path, y_path: Path, mode: str, devices: int, threads: int, out: Path
) -> None:
    """One epoch of LVQMLN; writes ``out/rank<r>.json``."""
    sampler = PeakSampler()
    sampler.start()
    import torch
    from lightning.pytorch import Callback, Trainer

    from lvqmln_torch import LVQMLN, ArrayDataModule

    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // devices))
    imported = rss_anon()

    class Steps(Callback):
        """Times the first step's start, the first step's end and the last step's end."""

        first: float | None = None
        first_end: float | None = None
        end: float | None = None
        samples = 0  # after the first step

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.first is None:
                self.first = time.perf_counter()
            else:
                self.samples += len(batch[0])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.end = time.perf_counter()
            if self.first_end is None:
                self.first_end = self.end

    start = time.perf_counter()
    X = np.load(x_path) if mode == "memory" else x_path
    data = ArrayDataModule(X, y_path, batch_size=BATCH, shuffle=True, seed=0)
    del X
    data_s = time.perf_counter() - start
    model = LVQMLN(in_features=FEATURES, n_classes=CLASSES, hidden_sizes=[256], latent_dim=32)
    steps = Steps()
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[steps],
    )
    fit_start = time.perf_counter()
    trainer.fit(model, data)
    result = {
        "rank": trainer.global_rank,
        "memory_mapped": data.memory_mapped,
        "data_s": data_s,
        "first_step_s": steps.first - fit_start,
        # Steady state: the steps after the first, from its end to the last step's end.
        "samples_per_s": steps.samples / (steps.end - steps.first_end),
        "anon_after_imports": imported,
        "peak_anon": max(sampler.peak, rss_anon()),
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


def csv_worker(path: Path, reader: str) -> None:
    """Read ``path`` with ``reader`` ('pyarrow' or 'line-by-line'); prints seconds and peak."""
    sampler = PeakSampler()
    sampler.start()
    from lvqmln_torch import csv_read

    if reader == "line-by-line":
        csv_read._read_arrow = lambda *args: None  # the reader before pyarrow
    start = time.perf_counter()
    X, y, _ = csv_read.read_csv_table(path)
    seconds = time.perf_counter() - start
    print(json.dumps({"s": seconds, "peak_anon": sampler.peak, "shape": list(X.shape)}))


# ---------------------------------------------------------------------------- orchestration
def write_data(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """A seeded float32 ``(rows, 784)`` file of 10 Gaussian classes, written in chunks."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=0.5, size=(CLASSES, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, rows)
    X = np.lib.format.open_memmap(folder / "X.npy", "w+", np.float32, (rows, FEATURES))
    for start in range(0, rows, 50_000):
        part = y[start : start + 50_000]
        X[start : start + len(part)] = centers[part] + rng.standard_normal(
            (len(part), FEATURES), dtype=np.float32
        )
    X.flush()
    del X
    np.save(folder / "y.npy", y)
    return folder / "X.npy", folder / "y.npy"


def run_fit(
    x_path: Path, y_path: Path, mode: str, devices: int, threads: int
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out:
        env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
        env["LIGHTNING_DISABLE_TIPS"] = "1"
        command = [sys.executable, __file__, "--worker", "fit", str(x_path), str(y_path)]
        command += [mode, str(devices), str(threads), out]
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{mode} x{devices} failed:\n{proc.stderr[-4000:]}")
        return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(devices)]


def write_csv(path: Path, rows: int, cols: int = 50) -> None:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, cols)).round(6)
    table = pa.table(
        {**{f"f{j}": X[:, j] for j in range(cols)}, "label": rng.integers(0, 10, rows)}
    )
    pa_csv.write_csv(table, path)


def run_csv(path: Path, repeats: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"pyarrow": [], "line-by-line": []}
    for _ in range(repeats):
        for reader in runs:  # interleaved, so both see the same machine
            command = [sys.executable, __file__, "--worker", "csv", str(path), reader]
            proc = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[reader].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def render(fits: list[dict[str, Any]], csv: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    lines = [
        "## Data larger than memory (`benchmarks/scale.py`)",
        "",
        f"`{meta['command']}` on {meta['date']}, {meta['machine']}; load average "
        f"{meta['load_start']} at start, {meta['load_end']} at end.",
        "",
        "One epoch, batch 1024, MLP [256], latent 32, 10 classes, float32 `(rows, 784)` `.npy`, "
        f"{meta['threads']} torch thread(s) a process; per process (the largest over DDP ranks; "
        f"samples/s is per process), median of {meta['repeats']} interleaved runs:",
        "",
        "| rows | data | processes | peak RssAnon | Trainer.fit to first step | samples/s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for fit in fits:
        figures = summary(fit)
        lines.append(
            f"| {fit['rows']:,} | {fit['mode']} | {fit['devices']} | {mb(figures['peak'])} "
            f"| {figures['first']:.2f} s | {figures['rate']:,.0f} |"
        )
    lines += ["", *targets(fits)]
    if csv is not None:
        fast, slow = (statistics.median(r["s"] for r in csv["runs"][k]) for k in csv["runs"])
        peaks = {k: max(r["peak_anon"] for r in v) for k, v in csv["runs"].items()}
        lines += [
            "",
            f"CSV, {csv['rows']:,} x 50 ({mb(csv['bytes'])}), `read_csv_table`, median of "
            f"{csv['repeats']} interleaved fresh processes each: pyarrow {fast:.2f} s "
            f"(peak RssAnon {mb(peaks['pyarrow'])}), line-by-line {slow:.2f} s "
            f"(peak {mb(peaks['line-by-line'])}): **{slow / fast:.1f}x faster**.",
        ]
    return "\n".join(lines)


def summary(fit: dict[str, Any]) -> dict[str, float]:
    """Medians over a configuration's runs of: the largest peak and time to first step over
    its ranks, and the median samples/s over its ranks."""
    runs = fit["runs"]
    return {
        "peak": statistics.median(max(r["peak_anon"] for r in ranks) for ranks in runs),
        "first": statistics.median(max(r["first_step_s"] for r in ranks) for ranks in runs),
        "rate": statistics.median(
            statistics.median(r["samples_per_s"] for r in ranks) for ranks in runs
        ),
    }


def targets(fits: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, checked on this run's figures where it has them."""

    def get(rows: int, mode: str, devices: int) -> dict[str, float] | None:
        found = [f for f in fits if (f["rows"], f["mode"], f["devices"]) == (rows, mode, devices)]
        return summary(found[0]) if found else None

    sizes = sorted({f["rows"] for f in fits})
    out = []
    big, small = sizes[-1], sizes[0]
    for devices in (1, 2):
        a, b = get(big, "memory-mapped", devices), get(small, "memory-mapped", devices)
        if a and b and big > small:
            out.append(
                f"- {devices} process(es), {big:,} vs {small:,} rows: peak RssAnon ratio "
                f"{a['peak'] / b['peak']:.2f} (target within 1.10; under 1.5 GB: "
                f"{mb(a['peak'])}), time to first step ratio {a['first'] / b['first']:.2f} "
                "(target within 2; each under 10 s)"
            )
    for rows in sizes:
        mapped, memory = get(rows, "memory-mapped", 1), get(rows, "in memory", 1)
        if mapped and memory:
            out.append(
                f"- {rows:,} rows, 1 process: memory-mapped throughput "
                f"{mapped['rate'] / memory['rate']:.0%} of in-memory (target at least 90%)"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["--worker", "fit"]:
        fit_worker(Path(argv[2]), Path(argv[3]), argv[4], int(argv[5]), int(argv[6]), Path(argv[7]))
        return 0
    if argv[:2] == ["--worker", "csv"]:
        csv_worker(Path(argv[2]), argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000, 200_000])
    parser.add_argument("--memory-rows", type=int, default=200_000, help="in-memory run up to")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads a process (0: cores / processes)"
    )
    parser.add_argument("--csv-rows", type=int, default=1_000_000, help="0 skips the CSV part")
    parser.add_argument("--csv-repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    meta = {
        "command": shlex.join(["python", "benchmarks/scale.py", *argv]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "threads": args.threads or "cores / processes",
        "repeats": args.repeats,
    }
    fits = []
    for rows in sorted(args.rows, reverse=True):
        with tempfile.TemporaryDirectory(prefix="lvqmln-scale-") as folder:
            x_path, y_path = write_data(Path(folder), rows)
            plan = [("memory-mapped", 1), ("memory-mapped", 2)]
            if rows <= args.memory_rows:
                plan.append(("in memory", 1))
            runs: dict[tuple[str, int], list[list[dict[str, Any]]]] = {p: [] for p in plan}
            for repeat in range(args.repeats):  # interleaved: every path sees the same machine
                for mode, devices in plan:
                    print(
                        f"{rows:,} rows, {mode}, {devices} process(es), run {repeat + 1}",
                        flush=True,
                    )
                    worker_mode = "memory" if mode == "in memory" else "mmap"
                    ranks = run_fit(x_path, y_path, worker_mode, devices, args.threads)
                    runs[mode, devices].append(ranks)
            for (mode, devices), done in runs.items():
                fits.append({"rows": rows, "mode": mode, "devices": devices, "runs": done})
    csv = None
    if args.csv_rows:
        with tempfile.TemporaryDirectory(prefix="lvqmln-csv-") as folder:
            path = Path(folder) / "data.csv"
            print(f"CSV, {args.csv_rows:,} x 50", flush=True)
            write_csv(path, args.csv_rows)
            csv = {
                "rows": args.csv_rows,
                "bytes": path.stat().st_size,
                "repeats": args.csv_repeats,
                "runs": run_csv(path, args.csv_repeats),
            }
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    section = render(fits, csv, meta)
    write_section(args.output, SECTION, section)
    print(section)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
