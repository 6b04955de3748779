"""Memory-mapped inputs (``np.memmap``, ``np.load(path, mmap_mode="r")`` or the path of a
``.npy`` file) for data larger than memory: the file is opened, never copied; batches read
their rows at every step, and the checks and standardisation statistics that need every row
read the file in chunks of bounded size. Lightning-free."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHUNK_BYTES", "MappedRows", "is_memory_mapped", "is_path", "open_npy", "scan"]

# The rows read at once by a chunked pass: about 32 MB of input (64 MB as float64).
CHUNK_BYTES = 32 * 2**20
"""The bytes of input a chunked pass reads at once (rows per chunk = this / bytes per
row)."""


def is_path(x: Any) -> bool:
    """Whether ``x`` is a file path (``str`` or ``os.PathLike``)."""
    return isinstance(x, str | os.PathLike)


def is_memory_mapped(x: Any) -> bool:
    """Whether ``x`` is an array backed by a memory map (``np.memmap``,
    ``np.load(..., mmap_mode=...)``, or a view of one)."""
    while isinstance(x, np.ndarray):
        if isinstance(x, np.memmap) and getattr(x, "_mmap", None) is not None:
            return True
        x = x.base
    return isinstance(x, mmap.mmap)


def open_npy(path: str | os.PathLike, name: str = "X") -> np.ndarray:
    """Open a ``.npy`` file read-only as a memory map (nothing is read but its header).

    Args:
        path: the ``.npy`` file.
        name: the argument's name, for the error messages.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: for a file that is not a ``.npy`` array (an ``.npz`` archive, pickled
            objects, no ``.npy`` header) or a file shorter than its header says (truncated).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{name}: file not found: {str(path)!r}")
    if path.suffix.lower() != ".npy":
        raise ValueError(
            f"{name} must be an array or the path of a .npy file (np.save), got {str(path)!r}; "
            "convert a CSV file with lvqmln_torch.data.csv_read.csv_to_npy"
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        expected = _expected_size(path)
        if expected is not None and path.stat().st_size < expected:
            raise ValueError(
                f"{name}: {str(path)!r} is truncated: its header describes {expected} bytes but "
                f"the file has {path.stat().st_size}; write it again"
            ) from err
        raise ValueError(f"{name}: {str(path)!r} is not a readable .npy array: {err}") from err
    except OSError as err:
        raise ValueError(f"{name}: {str(path)!r} cannot be opened: {err}") from err
    return array


def _expected_size(path: Path) -> int | None:
    """The file size a ``.npy`` header promises, or ``None`` without a readable header."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
            shape, _, dtype = read_header(handle)
            if dtype.hasobject:  # pickled objects: the size is not fixed
                return None
            return handle.tell() + int(np.prod(shape)) * dtype.itemsize
    except (ValueError, AttributeError, OSError):
        return None


class MappedRows:
    """Rows ``index`` of a memory-mapped array, read on demand (a split of the file without a
    copy of it).

    Args:
        array: ``(N, d)`` or ``(N, C, H, W)`` memory-mapped array.
        index: sorted ``(n,)`` row numbers of this part; ``None`` for every row.
    """

    def __init__(self, array: np.ndarray, index: np.ndarray | None = None) -> None:
        self.array = array
        self.index = index

    def __len__(self) -> int:
        return len(self.array) if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.array.shape[1:])

    @property
    def ndim(self) -> int:
        return self.array.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def filename(self) -> str:
        return str(getattr(self.array, "filename", None) or "a memory-mapped array")

    def subset(self, positions: np.ndarray) -> MappedRows:
        """The rows at ``positions`` (sorted) of this part."""
        return MappedRows(self.array, positions if self.index is None else self.index[positions])

    def read(self, positions: np.ndarray | None = None) -> np.ndarray:
        """The rows at the sorted ``positions`` of this part (all rows for ``None``) as an
        in-memory ``(len(positions), ...)`` array of the file's dtype."""
        # np.take on the plain view: half the time of memmap fancy indexing, a plain ndarray out.
        array = np.asarray(self.array)
        if positions is None:
            return np.array(array) if self.index is None else np.take(array, self.index, axis=0)
        rows = positions if self.index is None else self.index[positions]
        return np.take(array, rows, axis=0)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first position, rows)`` in order, each chunk about [`CHUNK_BYTES`][lvqmln_torch.data.mapped.CHUNK_BYTES]."""
        row_bytes = max(1, int(np.prod(self.array.shape[1:])) * self.array.dtype.itemsize)
        step = max(1, CHUNK_BYTES // row_bytes)
        for start in range(0, len(self), step):
            stop = min(start + step, len(self))
            if self.index is None:  # a contiguous slice: sequential reads of the file
                yield start, np.array(self.array[start:stop])
            else:
                yield start, np.take(np.asarray(self.array), self.index[start:stop], axis=0)


def scan(
    rows: MappedRows, name: str = "X", statistics_of: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """One chunked pass over ``rows``: check that every value is finite and, for the rows at
    the sorted positions ``statistics_of`` (the training split), compute the per-feature
    (per-channel for images) mean and standard deviation in float64 (Chan et al.'s pairwise
    update; ``ddof=0``, as ``np.std``).

    Returns:
        ``(mean, std)`` of shape ``(d,)`` or ``(C, 1, 1)``, or ``None`` without
        ``statistics_of``.

    Raises:
        ValueError: for NaN or Inf, naming the first row (of ``rows``) that holds one.
    """
    floating = np.issubdtype(rows.dtype, np.floating)
    if not floating and statistics_of is None:
        return None  # integers are always finite: nothing to read
    axes = (0,) if rows.ndim == 2 else (0, 2, 3)
    count, mean, m2 = 0, 0.0, 0.0
    for start, chunk in rows.chunks():
        if floating and not np.isfinite(chunk).all():
            finite = np.isfinite(chunk).reshape(len(chunk), -1).all(1)
            raise ValueError(
                f"{name} ({rows.filename}) contains NaN or Inf values (first in row "
                f"{start + int(np.flatnonzero(~finite)[0])}); clean or impute them first"
            )
        if statistics_of is None:
            continue
        lo, hi = np.searchsorted(statistics_of, [start, start + len(chunk)])
        if hi - lo < len(chunk):
            chunk = chunk[statistics_of[lo:hi] - start]
        if len(chunk) == 0:
            continue
        chunk = chunk.astype(np.float64)
        n_chunk = chunk.size // chunk.shape[1]  # values per feature (per channel)
        chunk_mean = chunk.mean(axis=axes, keepdims=True)[0]
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=axes, keepdims=True)[0]
        total = count + n_chunk
        delta = chunk_mean - mean
        mean = mean + delta * (n_chunk / total)
        m2 = m2 + chunk_m2 + delta**2 * (count * n_chunk / total)
        count = total
    if statistics_of is None:
        return None
    return np.asarray(mean), np.sqrt(np.asarray(m2) / count)
