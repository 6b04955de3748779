"""Arrays for LVQMLN without Lightning: validation, label encoding, splits, standardisation,
weights, and batches by index (no per-sample ``__getitem__`` and collate), from arrays in memory
or memory-mapped ``.npy`` files ([`mapped`][lvqmln_torch.data.mapped]).
[`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule] adds Lightning's hooks; the estimator's numpy engine
uses [`ArrayData`][lvqmln_torch.data.arrays.ArrayData] directly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.validation import Boolean, Integer, check_n_classes, check_sample_weight, validate
from .batches import BatchPlan, InMemoryBatches, MappedBatches
from .labels import class_weights, encode_labels
from .mapped import MappedRows, is_memory_mapped, is_path, open_npy, scan

__all__ = ["DATA_CONSTRAINTS", "ArrayData", "validate_inputs"]

# The data modules' shared settings.
DATA_CONSTRAINTS = {
    "batch_size": Integer(1, none=True, text="a positive integer or None (full batch)"),
    "shuffle": Boolean(),
    "seed": Integer(0),
    "standardize": Boolean(),
    "on_device": Boolean(),
}


def _check_rank_and_size(X: Any, name: str) -> None:
    if X.ndim not in (2, 4):
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features) for an MLP or 4-D (n, C, H, W) images for a "
            f"CNN, got shape {X.shape}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if X.size == 0:
        raise ValueError(f"{name} has no features (shape {X.shape})")


def _check_labels(n: int, y: Any, name: str) -> np.ndarray:
    y = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels for {name} must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"{name} has {n} samples but its labels have {len(y)}")
    return y


def _all_finite(X: np.ndarray, chunk_values: int = 1 << 20) -> bool:
    """Whether every value of ``X`` is finite, checked about ``chunk_values`` values at a time:
    one boolean array the size of ``X`` would cost its size in memory and, for large inputs,
    more time in page faults than the check itself."""
    rows = max(1, chunk_values // max(1, X[0].size))
    return all(np.isfinite(X[i : i + rows]).all() for i in range(0, len(X), rows))


def validate_inputs(X: Any, y: Any = None, name: str = "X") -> tuple[np.ndarray, np.ndarray | None]:
    """Check an input array (2-D features or 4-D images) and its labels.

    Raises:
        ValueError: for an empty array, a wrong rank, NaN or Inf, or lengths that differ.
    """
    if isinstance(X, Tensor):
        X = X.detach().cpu().numpy()
    try:
        X = np.asarray(X, dtype=np.float64 if np.asarray(X).dtype == np.float64 else np.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from err
    _check_rank_and_size(X, name)
    if not _all_finite(X):
        raise ValueError(f"{name} contains NaN or Inf values; clean or impute them first")
    return X, None if y is None else _check_labels(len(X), y, name)


def validate_mapped(X: np.ndarray, y: Any = None, name: str = "X") -> tuple[MappedRows, Any]:
    """Check a memory-mapped input array without reading it (rank, size, dtype) and its labels;
    NaN and Inf are found by [`scan`][lvqmln_torch.data.mapped.scan].

    Raises:
        ValueError: for an empty array, a wrong rank, a non-numeric dtype, or lengths that differ.
    """
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric (integers or floats), got dtype {X.dtype}")
    _check_rank_and_size(X, name)
    if y is not None:
        y = _check_labels(len(X), y, name)
    return MappedRows(X), y


def _rows(X: np.ndarray | MappedRows, index: np.ndarray) -> np.ndarray | MappedRows:
    """Rows ``index`` (sorted, distinct) of ``X``: ``X`` itself when they are all of its rows
    (no copy: the tensors are made from it anyway, and a copy of a large array costs seconds of
    page faults and its size in memory), else a copy in memory or a view of a memory-mapped
    file."""
    if len(index) == len(X):
        return X
    if isinstance(X, MappedRows):
        return X.subset(index)
    return X[index]


class ArrayData:
    """Arrays in, batches out (no Lightning; see [`ArrayDataModule`][lvqmln_torch.data.datamodule.ArrayDataModule]).

    Inputs that are memory-mapped (``np.memmap``, ``np.load(path, mmap_mode="r")``, or the path
    of a ``.npy`` file) stay on disk when ``batch_size`` is set: splits and DDP shards are row
    numbers, each step reads its rows (in ascending order within a batch), NaN/Inf checks and
    standardisation statistics read the file in chunks, and ``memory_mapped`` is ``True``. With
    ``batch_size=None`` they are loaded, as a full batch needs every row at once.

    Args:
        X: ``(n, d)`` features or ``(n, C, H, W)`` images, in memory or memory-mapped (any
            integer or float dtype), or the path of a ``.npy`` file.
        y: ``(n,)`` labels of any sortable type (mapped to class indices; see ``classes_``),
            or the path of a ``.npy`` file (labels are held in memory).
        sample_weight: optional ``(n,)`` non-negative loss weights.
        class_weight: ``'balanced'`` or a dict label → weight; multiplies ``sample_weight``.
        val_size: fraction in (0, 1) or a sample count to split off for validation
            (stratified).
        test_size: the same for the test split.
        X_val: explicit validation inputs instead of a split (as ``X``: memory-mapped too).
        y_val: their labels.
        X_test: explicit test inputs instead of a split.
        y_test: their labels.
        X_predict: inputs for ``predict`` (default: the test split, else ``X``).
        batch_size: mini-batch size; ``None`` means full batch.
        shuffle: reshuffle the training batches every epoch (seeded).
        seed: seed of the splits and the shuffling.
        standardize: z-score features (per feature; per channel for images) with statistics
            of the training split only.
        dtype: floating dtype of the inputs (``torch.float64`` for float64 training).
        on_device: keep the tensors on the training device, so a step only indexes them.
    """

    def __init__(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        class_weight: str | Mapping[Any, float] | None = None,
        val_size: float | int | None = None,
        test_size: float | int | None = None,
        X_val: Any = None,
        y_val: Any = None,
        X_test: Any = None,
        y_test: Any = None,
        X_predict: Any = None,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        standardize: bool = False,
        dtype: torch.dtype = torch.float32,
        on_device: bool = True,
    ) -> None:
        super().__init__()  # LightningDataModule's, in ArrayDataModule
        settings = validate(
            {
                "batch_size": batch_size,
                "shuffle": shuffle,
                "seed": seed,
                "standardize": standardize,
                "on_device": on_device,
            },
            DATA_CONSTRAINTS,
        )
        batch_size, seed = settings["batch_size"], settings["seed"]
        self.batch_size = batch_size
        X, y = self._validate(X, y, "X", "y")
        y_idx, classes = encode_labels(y)
        check_n_classes(len(classes), f"y ({classes.tolist()})")
        weights = None
        if sample_weight is not None:
            weights = check_sample_weight(sample_weight, len(X))
        if class_weight is not None:
            per_class = class_weights(y_idx, classes, class_weight)[y_idx]
            weights = per_class if weights is None else weights * per_class

        self.classes_ = classes
        self.n_classes = len(classes)
        self.memory_mapped = isinstance(X, MappedRows)
        self.shuffle = settings["shuffle"]
        self.seed = seed
        self.dtype = dtype
        self.on_device = settings["on_device"]
        self.standardize = settings["standardize"]

        index = np.arange(len(X))
        splits: dict[str, np.ndarray | None] = {"val": None, "test": None}
        for name, size, explicit in (("test", test_size, X_test), ("val", val_size, X_val)):
            if size is None:
                continue
            if explicit is not None:
                raise ValueError(f"give either {name}_size or X_{name}, not both")
            index, splits[name] = self._split(index, y_idx, size, name)
        train = index
        # Rows of X in the training split (PrototypeProjection records these).
        self.train_index_ = train
        self._arrays: dict[str, tuple[Any, ...] | None] = {
            "train": (_rows(X, train), y_idx[train], None if weights is None else weights[train]),
        }
        for name, explicit_x, explicit_y in (("val", X_val, y_val), ("test", X_test, y_test)):
            if splits[name] is not None:
                part = splits[name]
                self._arrays[name] = (
                    _rows(X, part),
                    y_idx[part],
                    None if weights is None else weights[part],
                )
            elif explicit_x is not None:
                if explicit_y is None:
                    raise ValueError(f"X_{name} needs y_{name}")
                ex, ey = self._validate(explicit_x, explicit_y, f"X_{name}", f"y_{name}")
                self._check_shape(ex, X, f"X_{name}")
                self._arrays[name] = (ex, encode_labels(ey, classes)[0], None)
            else:
                self._arrays[name] = None
        if X_predict is not None:
            px, _ = self._validate(X_predict, None, "X_predict")
            self._check_shape(px, X, "X_predict")
            self._predict_x = px
        elif self._arrays["test"]:
            self._predict_x = self._arrays["test"][0]
        else:  # all of X: the training array itself when no split took rows from it
            self._predict_x = self._arrays["train"][0] if len(train) == len(X) else X

        self.input_shape = tuple(X.shape[1:]) if X.ndim == 4 else None
        self.n_features = X.shape[1] if X.ndim == 2 else None
        # Standardisation statistics from the training split only.
        train_x = self._arrays["train"][0]
        self.mean_ = std = None
        if self.memory_mapped:  # one chunked pass: the finite check and the statistics
            stats = scan(X, "X", train if standardize else None)
            if standardize:
                self.mean_, std = stats
        elif standardize:
            axes = (0,) if X.ndim == 2 else (0, 2, 3)
            self.mean_ = train_x.mean(axis=axes, keepdims=True)[0]
            std = train_x.std(axis=axes, keepdims=True)[0]
        self.scale_ = np.where(std > 0, std, 1.0) if standardize else None
        self._tensors: dict[str, tuple[Tensor, ...] | None] = {}
        self._to_tensors(torch.device("cpu"))

    def _validate(
        self, x: Any, y: Any, name: str, label_name: str = "y"
    ) -> tuple[np.ndarray | MappedRows, np.ndarray | None]:
        """Validated inputs: a ``.npy`` path is opened as a memory map; a memory-mapped array
        stays on disk when there is a ``batch_size`` (it is read batch by batch, and checked for
        NaN and Inf in chunks), else it is loaded, as a full batch needs every row at once.
        Labels are always held in memory (a ``.npy`` path is loaded)."""
        if is_path(x):
            x = open_npy(x, name)
        if is_path(y):
            y = np.array(open_npy(y, label_name))
        if self.batch_size is not None and is_memory_mapped(x):
            rows, y = validate_mapped(x, y, name)
            if name != "X":  # X is scanned once its split and statistics are known
                scan(rows, name)
            return rows, y
        return validate_inputs(x, y, name)

    @staticmethod
    def _check_shape(x: np.ndarray, reference: np.ndarray, name: str) -> None:
        if x.shape[1:] != reference.shape[1:]:
            raise ValueError(
                f"{name} has per-sample shape {x.shape[1:]} but the training data have {reference.shape[1:]}"
            )

    def _split(self, index: np.ndarray, y_idx: np.ndarray, size: float | int, name: str):
        if isinstance(size, float) and not 0.0 < size < 1.0:
            raise ValueError(
                f"{name}_size must be a fraction in (0, 1) or a sample count, got {size!r}"
            )
        if isinstance(size, int) and not 0 < size < len(index):
            raise ValueError(
                f"{name}_size must be between 1 and {len(index) - 1} samples, got {size}"
            )
        from sklearn.model_selection import train_test_split  # not needed without splits

        labels = y_idx[index]
        stratify = labels if np.unique(labels, return_counts=True)[1].min() >= 2 else None
        try:
            kept, held = train_test_split(
                index, test_size=size, random_state=self.seed, stratify=stratify
            )
        except ValueError:  # too few samples per class for a stratified split of this size
            kept, held = train_test_split(index, test_size=size, random_state=self.seed)
        return np.sort(kept), np.sort(held)

    def transform_inputs(self, x: Any) -> np.ndarray:
        """Apply the training split's standardisation (if any) to new inputs."""
        x = np.asarray(x, dtype=np.float64)
        return (x - self.mean_) / self.scale_ if self.standardize else x

    def _input_tensor(self, x: np.ndarray, device: torch.device) -> Tensor:
        """Validated inputs (float32 or float64) as a new tensor, standardised if asked; without
        standardisation straight from ``x`` (no float64 intermediate: same values, less memory)."""
        if self.standardize:
            return torch.as_tensor(self.transform_inputs(x), dtype=self.dtype, device=device)
        return torch.tensor(x, dtype=self.dtype, device=device)

    def _read(self, rows: np.ndarray) -> Tensor:
        """Rows read from a memory-mapped file (a new array) as a CPU input tensor in ``dtype``,
        standardised in ``dtype``: per step, so without the float64 pass of the in-memory path
        (the values agree to ``dtype``'s rounding)."""
        if not rows.dtype.isnative:  # a big-endian file: torch takes native byte order only
            rows = rows.astype(rows.dtype.newbyteorder("="))
        x = torch.from_numpy(rows).to(self.dtype)
        if self.standardize:
            mean, scale = (torch.as_tensor(v, dtype=self.dtype) for v in (self.mean_, self.scale_))
            x = (x - mean) / scale
        return x

    def _to_tensors(self, device: torch.device) -> None:
        """Tensors of every split on ``device``; memory-mapped inputs stay on disk and their
        labels and weights on the CPU (a batch is read there, and Lightning moves it)."""

        def inputs(x: np.ndarray | MappedRows) -> Tensor | MappedRows:
            return x if isinstance(x, MappedRows) else self._input_tensor(x, device)

        def convert(arrays: tuple[Any, ...] | None) -> tuple[Tensor | MappedRows, ...] | None:
            if arrays is None:
                return None
            x, y, w = arrays
            at = torch.device("cpu") if isinstance(x, MappedRows) else device
            out = [inputs(x), torch.as_tensor(y, dtype=torch.long, device=at)]
            if w is not None:
                out.append(torch.as_tensor(w, dtype=self.dtype, device=at))
            return tuple(out)

        self._tensors = {name: convert(arrays) for name, arrays in self._arrays.items()}
        # Predicting on a split's own array reuses its tensor instead of a second copy.
        same = [n for n, a in self._arrays.items() if a is not None and a[0] is self._predict_x]
        self._tensors["predict"] = (
            (self._tensors[same[0]][0],) if same else (inputs(self._predict_x),)
        )

    def train_tensors(self) -> tuple[Tensor, ...]:
        """``(X, y[, w])`` of the training split: inputs after standardisation, class indices.
        Memory-mapped inputs are read here in full (use [`init_sample`][lvqmln_torch.data.arrays.ArrayData.init_sample] or
        [`loader`][lvqmln_torch.data.arrays.ArrayData.loader] to read a bounded part)."""
        x, *rest = self._tensors["train"]
        return (self._read(x.read()), *rest) if isinstance(x, MappedRows) else (x, *rest)

    def init_sample(self, max_samples: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """At most ``max_samples`` training samples ``(X, y)`` for the prototype initialisation:
        the whole training split, in order, when it is no larger; otherwise a uniform subset
        drawn with ``seed`` (sorted indices, so only those rows are read).

        Args:
            max_samples: the bound (the model's ``init_sample_size``).
            seed: seed of the subset (the model's ``seed``: identical on every rank).

        Returns:
            ``(n, ...)`` inputs after standardisation and ``(n,)`` class indices,
            ``n = min(max_samples, n_train)``.
        """
        x, y = self._tensors["train"][:2]
        if len(y) <= max_samples:
            return (self._read(x.read()), y) if isinstance(x, MappedRows) else (x, y)
        generator = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(y), generator=generator)[:max_samples].sort().values
        if isinstance(x, MappedRows):  # only the chosen rows are read
            return self._read(x.read(index.numpy())), y.index_select(0, index)
        index = index.to(x.device)
        return x.index_select(0, index), y.index_select(0, index)

    def loader(
        self,
        name: str,
        shuffle: bool = False,
        epoch_fn: Callable[[], int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> InMemoryBatches | MappedBatches:
        """Batches of the ``train``, ``val``, ``test`` or ``predict`` data (see
        [`BatchPlan`][lvqmln_torch.data.batches.BatchPlan] for the arguments); read from the file at
        every step for memory-mapped inputs.

        Raises:
            ValueError: when there are no such data.
        """
        tensors = self._tensors.get(name)
        if tensors is None:
            raise ValueError(f"this {type(self).__name__} has no {name} data")
        plan = BatchPlan(self.batch_size, shuffle, self.seed, epoch_fn, rank, world_size)
        if isinstance(tensors[0], MappedRows):
            return MappedBatches(tensors[0], tensors[1:], self._read, plan)
        return InMemoryBatches(tensors, plan)

    def has(self, name: str) -> bool:
        """Whether there are ``train``, ``val``, ``test`` or ``predict`` data."""
        return self._tensors.get(name) is not None
