"""Memory and time of ``prototype_exemplars`` on up to a million samples (issue 14): the
streamed exact top-k against brute force (the full ``(n, P)`` distance matrix, then a sort).

    .venv/bin/python benchmarks/exemplars_memory.py [--sizes 250000 500000 1000000]

For each size and method, a fresh process (so memory freed by an earlier call cannot hide an
allocation) builds the inputs ``X`` (float32, 32 features) and the model, then measures the
peak growth of ``RssAnon`` (sampled from ``/proc/self/status`` every 2 ms by a thread) above
its level before the call, and the call's wall time; 3 processes per size and method,
alternating, medians reported. Both methods return the same indices (checked).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import torch

from lvqmln_torch.core.network import PrototypeNetwork

FEATURES, LATENT, CLASSES, PER_CLASS, K = 32, 16, 10, 3, 10


def rss_anon_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon in /proc/self/status")


def peak_growth(fn) -> tuple[float, float, object]:
    """``(peak RssAnon growth in MiB, seconds, result)`` of ``fn()``."""
    base, peak, done = rss_anon_kib(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon_kib())
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    return max(peak[0] - base, 0) / 1024, seconds, result


def network() -> PrototypeNetwork:
    config = {
        "backbone": "mlp",
        "in_features": FEATURES,
        "hidden_sizes": [64],
        "latent_dim": LATENT,
        "activation": "sigmoid",
        "latent_activation": True,
        "n_classes": CLASSES,
        "n_prototypes_per_class": PER_CLASS,
        "seed": 0,
        "initial_prototypes": None,
    }
    net = PrototypeNetwork.from_config(config)
    prototypes = torch.rand(CLASSES * PER_CLASS, LATENT, generator=torch.Generator().manual_seed(1))
    net.set_prototypes(prototypes, net.prototype_labels)
    return net


def brute_force(net: PrototypeNetwork, X: np.ndarray) -> np.ndarray:
    z = net.transform(X)
    d = net.head.distances(z, net.prototypes.detach())  # (n, P)
    return torch.argsort(d.T, dim=1, stable=True)[:, :K].numpy()


def measure(method: str, n: int) -> None:
    """One measurement in this process; prints ``peak_mib seconds checksum``."""
    net = network()
    X = np.random.default_rng(0).random((n, FEATURES), dtype=np.float32)
    if method == "streamed":
        growth, seconds, result = peak_growth(lambda: net.prototype_exemplars(X, k=K)[0].numpy())
    else:
        growth, seconds, result = peak_growth(lambda: brute_force(net, X))
    print(f"{growth:.1f} {seconds:.3f} {int(np.asarray(result, dtype=np.int64).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        measure(args.one[0], int(args.one[1]))
        return
    sizes = " ".join(map(str, args.sizes))
    print(f"- Command: `python benchmarks/exemplars_memory.py --sizes {sizes}`")
    print(
        f"- torch {torch.__version__}, {torch.get_num_threads()} threads; MLP {FEATURES}→64→"
        f"{LATENT}, {CLASSES * PER_CLASS} prototypes, k={K}; a fresh process per measurement, "
        f"median of {args.repeats}\n"
    )
    print(
        "| samples | X (MiB) | streamed: peak RssAnon growth | brute force: peak growth "
        "| streamed time | brute-force time |"
    )
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        runs: dict[str, list[list[float]]] = {"streamed": [], "brute": []}
        for _ in range(args.repeats):
            for method in runs:
                out = subprocess.run(
                    [sys.executable, __file__, "--one", method, str(n)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                runs[method].append([float(v) for v in out])
        checks = {v[2] for method in runs.values() for v in method}
        assert len(checks) == 1, "the two methods returned different exemplars"
        med = {m: [statistics.median(v[i] for v in r) for i in (0, 1)] for m, r in runs.items()}
        print(
            f"| {n:,} | {n * FEATURES * 4 / 2**20:.0f} | {med['streamed'][0]:.0f} MiB | "
            f"{med['brute'][0]:.0f} MiB | {med['streamed'][1]:.2f} s | {med['brute'][1]:.2f} s |"
        )


if __name__ == "__main__":
    main()
