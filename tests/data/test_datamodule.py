"""ArrayDataModule and in-memory batching: splits, standardisation, batching, shuffling,
class weights, input validation; the built-in data sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch.callbacks import Callback

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.data.batches import BatchPlan, InMemoryBatches
from lvqmln_torch.data.labels import encode_labels


def _blobs(n_per_class=(40, 30, 20), d=3, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    labels = np.arange(len(n_per_class)) if labels is None else np.asarray(labels)
    y = np.repeat(labels, n_per_class)
    X = rng.normal(size=(len(y), d)) * 2.0 + 5.0
    X += np.repeat(np.arange(len(n_per_class)), n_per_class)[:, None]
    return X, y


_trainer = quiet_trainer


# ---------------------------------------------------------------- splits


def test_splits_are_stratified_disjoint_and_complete():
    X, y = _blobs()
    dm = ArrayDataModule(X, y, val_size=0.2, test_size=0.25, seed=3)
    parts = {name: dm._tensors[name] for name in ("train", "val", "test")}
    sizes = {name: len(t[1]) for name, t in parts.items()}
    assert sum(sizes.values()) == 90
    assert sizes["test"] == math.ceil(0.25 * 90)
    # Stratified: every class appears in each split in proportion (±1 sample).
    full = np.bincount(y, minlength=3) / len(y)
    for name, tensors in parts.items():
        counts = np.bincount(tensors[1].numpy(), minlength=3)
        assert np.all(np.abs(counts - full * len(tensors[1])) <= 1), (name, counts)
    # Disjoint and complete: the raw rows (no standardisation) partition X.
    rows = np.concatenate([t[0].numpy() for t in parts.values()])
    assert len(np.unique(rows, axis=0)) == len(X)
    np.testing.assert_allclose(np.sort(rows, axis=0), np.sort(X.astype(np.float32), axis=0))


def test_splits_are_seeded():
    X, y = _blobs()
    a = ArrayDataModule(X, y, test_size=0.3, seed=1)
    b = ArrayDataModule(X, y, test_size=0.3, seed=1)
    c = ArrayDataModule(X, y, test_size=0.3, seed=2)
    assert torch.equal(a._tensors["test"][0], b._tensors["test"][0])
    assert not torch.equal(a._tensors["test"][0], c._tensors["test"][0])


def test_split_sizes_as_counts():
    X, y = _blobs()
    dm = ArrayDataModule(X, y, val_size=9, test_size=18)
    assert len(dm._tensors["test"][1]) == 18
    assert len(dm._tensors["val"][1]) == 9
    assert len(dm.train_tensors()[1]) == 63


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"test_size": 1.5}, "test_size must be a fraction in \\(0, 1\\)"),
        ({"val_size": 0.0}, "val_size must be a fraction"),
        ({"test_size": 90}, "test_size must be between 1 and 89"),
        ({"val_size": 0}, "val_size must be between"),
    ],
)
def test_bad_split_sizes(kwargs, match):
    X, y = _blobs()
    with pytest.raises(ValueError, match=match):
        ArrayDataModule(X, y, **kwargs)


def test_explicit_validation_and_test_arrays():
    X, y = _blobs(labels=["a", "b", "c"])
    Xv, yv = _blobs(n_per_class=(3, 2, 1), seed=5, labels=["a", "b", "c"])
    Xt, yt = _blobs(n_per_class=(1, 1, 4), seed=6, labels=["a", "b", "c"])
    dm = ArrayDataModule(X, y, X_val=Xv, y_val=yv, X_test=Xt, y_test=yt)
    assert len(dm.train_tensors()[1]) == len(X)
    np.testing.assert_allclose(dm._tensors["val"][0].numpy(), Xv.astype(np.float32))
    assert dm._tensors["val"][1].tolist() == [0, 0, 0, 1, 1, 2]
    assert dm._tensors["test"][1].tolist() == [0, 1, 2, 2, 2, 2]
    # predict defaults to the test inputs.
    assert torch.equal(dm._tensors["predict"][0], dm._tensors["test"][0])


def test_explicit_arrays_errors():
    X, y = _blobs()
    with pytest.raises(ValueError, match="either val_size or X_val"):
        ArrayDataModule(X, y, val_size=0.2, X_val=X, y_val=y)
    with pytest.raises(ValueError, match="X_val needs y_val"):
        ArrayDataModule(X, y, X_val=X)
    with pytest.raises(ValueError, match="X_test has per-sample shape \\(2,\\)"):
        ArrayDataModule(X, y, X_test=X[:, :2], y_test=y)
    with pytest.raises(ValueError, match="not among the training classes"):
        ArrayDataModule(X, y, X_val=X[:2], y_val=[0, 7])
    with pytest.raises(ValueError, match="X_predict has per-sample shape"):
        ArrayDataModule(X, y, X_predict=X[:, :1])


# ---------------------------------------------------------------- standardisation


def test_standardisation_uses_training_statistics_only():
    X, y = _blobs()
    X[:20] += 100.0  # make the held-out part (if it were used) shift the statistics
    dm = ArrayDataModule(X, y, test_size=0.3, val_size=0.2, seed=0, standardize=True)
    raw = ArrayDataModule(X, y, test_size=0.3, val_size=0.2, seed=0)
    train_raw = raw.train_tensors()[0].double().numpy()
    np.testing.assert_allclose(dm.mean_, train_raw.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(dm.scale_, train_raw.std(axis=0), rtol=1e-5)
    assert not np.allclose(dm.mean_, X.mean(axis=0))
    train = dm.train_tensors()[0].double()
    torch.testing.assert_close(
        train.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(train.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    # Validation and test use the same (training) transform.
    for name in ("val", "test"):
        expected = (raw._tensors[name][0].double().numpy() - dm.mean_) / dm.scale_
        np.testing.assert_allclose(dm._tensors[name][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dm.transform_inputs(X[:3]), (X[:3] - dm.mean_) / dm.scale_)
    assert set(dm.state_dict()) == {"mean", "scale"}


def test_standardisation_of_constant_feature_and_images():
    X, y = _blobs()
    X[:, 1] = 7.0
    dm = ArrayDataModule(X, y, standardize=True)
    assert dm.scale_[1] == 1.0
    assert torch.all(dm.train_tensors()[0][:, 1] == 0)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 2, 4, 4)) + np.array([1.0, 10.0])[None, :, None, None]
    dm = ArrayDataModule(images, np.arange(30) % 2, standardize=True)
    assert dm.mean_.shape == (2, 1, 1) and dm.input_shape == (2, 4, 4)
    x = dm.train_tensors()[0].double()
    torch.testing.assert_close(
        x.mean(dim=(0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_without_standardisation_inputs_are_unchanged_and_dtype_is_honoured():
    X, y = _blobs()
    dm = ArrayDataModule(X, y, dtype=torch.float64)
    x = dm.train_tensors()[0]
    assert x.dtype == torch.float64
    np.testing.assert_array_equal(x.numpy(), X)
    assert dm.state_dict() == {}


# ---------------------------------------------------------------- batching and shuffling


def _epochs(loader, n):
    return [list(loader) for _ in range(n)]


def test_full_batch_is_one_batch_of_everything():
    X, y = _blobs()
    dm = ArrayDataModule(X, y, batch_size=None)
    loader = dm.train_dataloader()
    assert len(loader) == 1
    (batch,) = list(loader)
    assert len(batch) == 2 and len(batch[0]) == 90
    assert batch[0] is dm.train_tensors()[0]  # no copy


@pytest.mark.parametrize(("batch_size", "sizes"), [(32, [32, 32, 26]), (45, [45, 45]), (200, [90])])
def test_mini_batch_counts_and_smaller_last_batch(batch_size, sizes):
    X, y = _blobs()
    loader = ArrayDataModule(X, y, batch_size=batch_size).train_dataloader()
    assert len(loader) == len(sizes)
    assert [len(b[1]) for b in loader] == sizes


def test_every_epoch_covers_each_sample_once():
    X, y = _blobs()
    loader = ArrayDataModule(X, y, batch_size=16, seed=4).train_dataloader()
    for epoch in _epochs(loader, 3):
        rows = torch.cat([b[0] for b in epoch])
        assert len(torch.unique(rows, dim=0)) == 90


def test_shuffling_differs_between_epochs_and_is_reproducible():
    X, y = _blobs()

    def orders(seed):
        loader = ArrayDataModule(X, y, batch_size=16, seed=seed).train_dataloader()
        return [torch.cat([b[0][:, 0] for b in epoch]) for epoch in _epochs(loader, 3)]

    first, again, other = orders(0), orders(0), orders(1)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def test_no_shuffle_keeps_the_order():
    X, y = _blobs()
    loader = ArrayDataModule(X, y, batch_size=16, shuffle=False).train_dataloader()
    for epoch in _epochs(loader, 2):
        np.testing.assert_array_equal(
            torch.cat([b[0] for b in epoch]).numpy(), X.astype(np.float32)
        )


def test_shuffle_depends_on_the_trainer_epoch_only():
    tensors = (torch.arange(10.0), torch.arange(10))
    epoch = {"value": 3}
    a = InMemoryBatches(
        tensors, BatchPlan(4, shuffle=True, seed=9, epoch_fn=lambda: epoch["value"])
    )
    b = InMemoryBatches(tensors, BatchPlan(4, shuffle=True, seed=9, epoch_fn=lambda: 3))
    first = [t[1] for t in a]
    assert all(torch.equal(x[1], y) for x, y in zip(b, first))
    assert all(torch.equal(x[1], y) for x, y in zip(a, first))  # same epoch again: same order
    epoch["value"] = 4
    assert not all(torch.equal(x[1], y) for x, y in zip(a, first))


class _RecordBatches(Callback):
    def __init__(self):
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs[-1].append(batch[1].clone())


def test_shuffling_in_a_real_fit_is_per_epoch_and_reproducible():
    X, y = _blobs()

    def run():
        recorder = _RecordBatches()
        dm = ArrayDataModule(X, y, batch_size=32, seed=5)
        _trainer(max_epochs=3, callbacks=[recorder]).fit(LVQMLN(seed=0), dm)
        return [torch.cat(epoch) for epoch in recorder.epochs]

    first, second = run(), run()
    assert len(first) == 3
    assert [len(e) for e in first] == [90, 90, 90]
    assert not torch.equal(first[0], first[1])
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- weights


def test_balanced_class_weight_is_n_over_k_n_c():
    X, y = _blobs(n_per_class=(40, 30, 20))
    dm = ArrayDataModule(X, y, class_weight="balanced")
    _, y_idx, w = dm.train_tensors()
    expected = {0: 90 / (3 * 40), 1: 90 / (3 * 30), 2: 90 / (3 * 20)}
    for c, value in expected.items():
        assert torch.allclose(w[y_idx == c], torch.tensor(value, dtype=w.dtype))
    # Balanced weights make every class weigh the same in total.
    totals = torch.stack([w[y_idx == c].sum() for c in range(3)])
    torch.testing.assert_close(totals, torch.full((3,), 30.0))


def test_balanced_weights_use_the_training_split():
    X, y = _blobs(n_per_class=(40, 30, 20))
    dm = ArrayDataModule(X, y, class_weight="balanced", test_size=0.2, seed=0)
    _, y_idx, w = dm.train_tensors()
    counts = torch.bincount(y_idx)
    assert counts.tolist() == [32, 24, 16]  # stratified: the proportions are kept
    for c, n_c in enumerate(counts.tolist()):
        assert torch.allclose(w[y_idx == c], torch.tensor(72 / (3 * n_c), dtype=w.dtype))


def test_split_with_a_singleton_class_falls_back_to_unstratified():
    X, y = _blobs(n_per_class=(20, 20, 1))
    dm = ArrayDataModule(X, y, test_size=0.2, seed=0)
    assert len(dm.train_tensors()[1]) + len(dm._tensors["test"][1]) == 41


def test_dict_class_weight_and_sample_weight_multiply():
    X, y = _blobs(n_per_class=(2, 2), labels=["no", "yes"])
    sample_weight = np.array([1.0, 2.0, 3.0, 4.0])
    dm = ArrayDataModule(X, y, sample_weight=sample_weight, class_weight={"yes": 10.0})
    assert dm.train_tensors()[2].tolist() == [1.0, 2.0, 30.0, 40.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_weight": "auto"}, "class_weight must be 'balanced', a dict or None"),
        ({"class_weight": {9: 1.0}}, "class_weight has classes \\[9\\]"),
        ({"class_weight": {0: -1.0}}, "finite and non-negative"),
        ({"class_weight": 3}, "class_weight must be"),
        ({"sample_weight": -np.ones(90)}, "sample_weight must be finite and non-negative"),
        # scikit-learn's check_all_zero_sample_weights_error wants the case named.
        ({"sample_weight": np.zeros(90)}, "positive sum: all sample weights are zero"),
        ({"sample_weight": np.full(90, np.nan)}, "NaN or infinite"),
    ],
)
def test_bad_weights(kwargs, match):
    X, y = _blobs()
    with pytest.raises(ValueError, match=match):
        ArrayDataModule(X, y, **kwargs)


# ---------------------------------------------------------------- validation of inputs


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.array([[1.0, np.inf], [0.0, 1.0]]), [0, 1], "contains NaN or Inf"),
        (np.zeros((4, 2)), [[0], [1], [0], [1]], "labels for X must be 1-D"),
        ([["a", "b"], ["c", "d"]], [0, 1], "X must be numeric"),
    ],
)
def test_bad_inputs_raise_naming_the_problem(X, y, match):
    with pytest.raises(ValueError, match=match):
        ArrayDataModule(X, y)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "32"])
def test_bad_batch_size(batch_size):
    X, y = _blobs()
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        ArrayDataModule(X, y, batch_size=batch_size)


def test_nan_in_explicit_validation_data():
    X, y = _blobs()
    Xv = X[:4].copy()
    Xv[0, 0] = np.nan
    with pytest.raises(ValueError, match="X_val contains NaN"):
        ArrayDataModule(X, y, X_val=Xv, y_val=y[:4])


@pytest.mark.parametrize("row", [0, 1_499, 2_999])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_found_in_any_chunk_of_a_large_array(row, value):
    # 3,000 x 500 values: the finite check reads several chunks of about a million values.
    X = np.zeros((3_000, 500), dtype=np.float32)
    y = np.arange(3_000) % 2
    X[row, 499] = value
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        ArrayDataModule(X, y)


@pytest.mark.parametrize("standardize", [False, True])
def test_training_tensors_do_not_share_memory_with_the_inputs(standardize):
    # Without a split the training array is not copied before the tensors are made from it:
    # changing the caller's array afterwards must still leave the tensors alone.
    X, y = _blobs()
    X = X.astype(np.float32)
    dm = ArrayDataModule(X, y, standardize=standardize)
    before = dm.train_tensors()[0].clone()
    X[:] = 0.0
    torch.testing.assert_close(dm.train_tensors()[0], before, rtol=0, atol=0)


def test_tensor_inputs_are_accepted():
    X, y = _blobs()
    dm = ArrayDataModule(torch.tensor(X), torch.tensor(y))
    assert dm.n_classes == 3 and dm.n_features == 3


def test_encode_labels_round_trip():
    y = np.array([50, 10, 20, 50, 10])
    idx, classes = encode_labels(y)
    assert classes.tolist() == [10, 20, 50]
    assert idx.tolist() == [2, 0, 1, 2, 0]
    np.testing.assert_array_equal(classes[idx], y)
    with pytest.raises(ValueError, match="labels \\[30\\] are not among the training classes"):
        encode_labels([10, 30], classes)


# ---------------------------------------------------------------- built-in data sets


@pytest.mark.parametrize(
    ("name", "shape", "k"),
    [
        ("iris", (150, 4), 3),
        ("wine", (178, 13), 3),
        ("breast_cancer", (569, 30), 2),
        ("digits", (1797, 64), 10),
    ],
)
def test_builtin_datasets(name, shape, k):
    X, y = load_builtin(name)
    assert X.shape == shape and len(np.unique(y)) == k


def test_digits_as_images():
    X, y = load_builtin("digits", as_images=True)
    assert X.shape == (1797, 1, 8, 8) and X.min() >= 0.0 and X.max() <= 1.0
    with pytest.raises(ValueError, match="only available for 'digits'"):
        load_builtin("iris", as_images=True)
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'. Valid datasets: iris"):
        load_builtin("mnist")
