"""Anonymous-memory growth of training on a memory-mapped ``.npy`` file, run as a subprocess
by ``tests/data/test_mapped.py`` (a fresh process, so nothing else has touched the heap).

Usage::

    python tests/mapped_memory_script.py FOLDER

Writes a float32 ``(ROWS, FEATURES)`` file into ``FOLDER`` chunk by chunk (the file's pages
are page cache, not this process's anonymous memory), then builds a standardised
``ArrayDataModule`` with a validation split over it, draws an initialisation sample, and fits
``LVQMLN`` for a few steps. Prints one JSON line: the file's size and the growth of
``RssAnon`` (``/proc/self/status``) over the data module, the sample and the fit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from _trainers import quiet_trainer

from lvqmln_torch import LVQMLN, ArrayDataModule

ROWS, FEATURES, CLASSES = 260_000, 256, 4


def rss_anon() -> int:
    """This process's anonymous resident memory in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def main(folder: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = np.lib.format.open_memmap(folder / "X.npy", "w+", np.float32, (ROWS, FEATURES))
    block = rng.random((20_000, FEATURES), dtype=np.float32)
    for start in range(0, ROWS, len(block)):
        X[start : start + len(block)] = block
    X.flush()
    del X
    np.save(folder / "y.npy", rng.integers(0, CLASSES, ROWS))
    latent = 8
    model = LVQMLN(
        in_features=FEATURES,
        n_classes=CLASSES,
        hidden_sizes=[32],
        latent_dim=latent,
        initial_prototypes=rng.normal(size=(CLASSES, latent)),
        initial_prototype_labels=list(range(CLASSES)),
    )
    trainer = quiet_trainer(max_steps=30, limit_val_batches=5)
    before = rss_anon()
    data = ArrayDataModule(
        folder / "X.npy", folder / "y.npy", val_size=0.1, batch_size=512, standardize=True
    )
    after_data = rss_anon()
    sample, _ = data.init_sample(5_000, seed=0)
    after_sample = rss_anon()
    del sample
    trainer.fit(model, data)
    after_fit = rss_anon()
    print(
        json.dumps(
            {
                "file_bytes": (folder / "X.npy").stat().st_size,
                "memory_mapped": data.memory_mapped,
                "steps": trainer.global_step,
                "data_growth": after_data - before,
                "sample_growth": after_sample - before,
                "fit_growth": after_fit - before,
            }
        )
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
