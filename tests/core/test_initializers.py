"""Prototype initialisers (SPEC §1.3): shapes, class-blocked labels, seeding, keyword
arguments, small classes, errors, and ``n_prototypes_per_class`` in every form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.core.initializers import (
    INITIALIZERS,
    check_initializer,
    initialize_prototypes,
    prototype_labels_for,
    resolve_prototypes_per_class,
)

ALL_NAMES = [
    "stratified_random",
    "class_mean",
    "class_conditional_mean",
    "stratified_noise",
    "random_normal",
    "uniform",
    "zeros",
    "ones",
    "fill_value",
]


def _latent(n_per_class=(7, 5, 9), dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.repeat_interleave(torch.arange(len(n_per_class)), torch.tensor(n_per_class))
    y = y[torch.randperm(len(y), generator=g)]  # classes interleaved, not sorted
    z = torch.randn(len(y), dim, generator=g) + 3.0 * y[:, None]
    return z, y


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _is_row_of(row, rows):
    return bool((rows == row).all(dim=1).any())


def test_registry_has_every_upstream_initializer():
    assert sorted(INITIALIZERS) == sorted(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_shapes_and_class_blocked_labels(name):
    z, y = _latent()
    counts = [2, 1, 3]
    prototypes, labels = initialize_prototypes(z, y, counts, name, generator=_gen(0))
    assert prototypes.shape == (6, 3)
    assert prototypes.dtype == z.dtype
    assert labels.tolist() == [0, 0, 1, 2, 2, 2]
    assert torch.isfinite(prototypes).all()


@pytest.mark.parametrize("name", ALL_NAMES)
def test_same_seed_same_prototypes(name):
    z, y = _latent()
    a, _ = initialize_prototypes(z, y, [2, 2, 2], name, generator=_gen(5))
    b, _ = initialize_prototypes(z, y, [2, 2, 2], name, generator=_gen(5))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "name", ["stratified_random", "stratified_noise", "random_normal", "uniform"]
)
def test_different_seed_different_prototypes(name):
    z, y = _latent(n_per_class=(30, 30, 30))
    a, _ = initialize_prototypes(z, y, [3, 3, 3], name, generator=_gen(1))
    b, _ = initialize_prototypes(z, y, [3, 3, 3], name, generator=_gen(2))
    assert not torch.equal(a, b)


def test_stratified_random_picks_distinct_samples_of_the_right_class():
    z, y = _latent()
    counts = [4, 5, 2]
    prototypes, labels = initialize_prototypes(z, y, counts, "stratified_random", generator=_gen(3))
    for proto, label in zip(prototypes, labels):
        assert _is_row_of(proto, z[y == label])
        assert not any(_is_row_of(proto, z[y == other]) for other in range(3) if other != label)
    # Without replacement: class 1 has exactly 5 samples and gets 5 distinct prototypes.
    assert len(torch.unique(prototypes[labels == 1], dim=0)) == 5


def test_small_class_samples_with_replacement_and_warns():
    z, y = _latent(n_per_class=(2, 10))
    with pytest.warns(UserWarning, match="class index 0 has 2 samples but 5 prototypes"):
        prototypes, labels = initialize_prototypes(
            z, y, [5, 3], "stratified_random", generator=_gen(0)
        )
    assert labels.tolist() == [0] * 5 + [1] * 3
    class0 = prototypes[:5]
    assert all(_is_row_of(p, z[y == 0]) for p in class0)
    assert len(torch.unique(class0, dim=0)) <= 2  # only two distinct samples to draw from
    assert len(torch.unique(prototypes[5:], dim=0)) == 3  # enough samples: no replacement


def test_stratified_noise_small_class_warns_too():
    z, y = _latent(n_per_class=(1, 10))
    with pytest.warns(UserWarning, match="with replacement"):
        initialize_prototypes(z, y, [3, 1], "stratified_noise", generator=_gen(0))


def test_class_without_samples_is_a_clear_error():
    z = torch.randn(6, 2)
    y = torch.tensor([0, 0, 0, 2, 2, 2])
    with pytest.raises(ValueError, match="class index 1 has no training samples"):
        initialize_prototypes(z, y, [1, 1, 1], "stratified_random", generator=_gen(0))


@pytest.mark.parametrize("name", ["class_mean", "class_conditional_mean"])
def test_class_mean_copies_the_mean(name):
    z, y = _latent()
    prototypes, labels = initialize_prototypes(z, y, [1, 3, 2], name)
    for proto, label in zip(prototypes, labels):
        torch.testing.assert_close(proto, z[y == label].mean(dim=0), rtol=0, atol=1e-6)
    assert torch.equal(prototypes[1], prototypes[3])


def test_stratified_noise_is_stratified_random_plus_scaled_gaussian_noise():
    z, y = _latent(n_per_class=(400, 400), dim=5)
    counts = [300, 300]
    base, _ = initialize_prototypes(z, y, counts, "stratified_random", generator=_gen(7))
    zero, _ = initialize_prototypes(
        z, y, counts, "stratified_noise", generator=_gen(7), noise_std=0.0
    )
    assert torch.equal(base, zero)
    for noise_std in (0.1, 2.0):
        noisy, _ = initialize_prototypes(
            z, y, counts, "stratified_noise", generator=_gen(7), noise_std=noise_std
        )
        diff = noisy - base
        assert abs(diff.std().item() / noise_std - 1) < 0.05
        assert abs(diff.mean().item()) < 0.05 * noise_std
    default, _ = initialize_prototypes(z, y, counts, "stratified_noise", generator=_gen(7))
    assert abs((default - base).std().item() - 0.1) < 0.005


def test_random_normal_honours_mean_and_std():
    z, y = _latent(dim=50)
    prototypes, _ = initialize_prototypes(
        z, y, [40, 40, 40], "random_normal", generator=_gen(0), mean=3.0, std=0.5
    )
    assert abs(prototypes.mean().item() - 3.0) < 0.02
    assert abs(prototypes.std().item() - 0.5) < 0.02
    default, _ = initialize_prototypes(z, y, [40, 40, 40], "random_normal", generator=_gen(0))
    assert abs(default.mean().item()) < 0.03
    assert abs(default.std().item() - 1.0) < 0.03


def test_uniform_honours_low_and_high():
    z, y = _latent(dim=50)
    prototypes, _ = initialize_prototypes(
        z, y, [40, 40, 40], "uniform", generator=_gen(0), low=-2.0, high=-1.0
    )
    assert prototypes.min() >= -2.0 and prototypes.max() < -1.0
    assert abs(prototypes.mean().item() + 1.5) < 0.02
    default, _ = initialize_prototypes(z, y, [40, 40, 40], "uniform", generator=_gen(0))
    assert default.min() >= 0.0 and default.max() < 1.0
    assert abs(default.mean().item() - 0.5) < 0.02


def test_constant_initializers():
    z, y = _latent()
    counts = [1, 2, 1]
    zeros, _ = initialize_prototypes(z, y, counts, "zeros")
    ones, _ = initialize_prototypes(z, y, counts, "ones")
    filled, _ = initialize_prototypes(z, y, counts, "fill_value", value=-0.25)
    default, _ = initialize_prototypes(z, y, counts, "fill_value")
    assert torch.equal(zeros, torch.zeros(4, 3))
    assert torch.equal(ones, torch.ones(4, 3))
    assert torch.equal(filled, torch.full((4, 3), -0.25))
    assert torch.equal(default, torch.zeros(4, 3))


def test_callable_initializer_receives_data_counts_generator_and_kwargs():
    z, y = _latent()
    seen = {}

    def init(z_, y_, n_per_class, generator, shift=0.0):
        seen.update(z=z_, y=y_, counts=n_per_class, generator=generator)
        labels = prototype_labels_for(n_per_class)
        return torch.stack([z_[y_ == c].median(dim=0).values + shift for c in labels]), labels

    generator = _gen(0)
    prototypes, labels = initialize_prototypes(z, y, [1, 2, 1], init, generator, shift=1.0)
    assert seen["counts"] == [1, 2, 1] and seen["generator"] is generator
    assert torch.equal(seen["z"], z) and torch.equal(seen["y"], y)
    assert labels.tolist() == [0, 1, 1, 2]
    torch.testing.assert_close(prototypes[0], z[y == 0].median(dim=0).values + 1.0)


def test_callable_initializer_may_return_arrays():
    z, y = _latent()

    def init(z_, y_, n_per_class, generator):
        return np.zeros((3, z_.shape[1])), [0, 1, 2]

    prototypes, labels = initialize_prototypes(z, y, [1, 1, 1], init)
    assert prototypes.dtype == z.dtype and labels.dtype == torch.long


@pytest.mark.parametrize(
    ("output", "match"),
    [
        ((torch.zeros(3, 7), torch.arange(3)), r"expected \(P, 3\)"),
        ((torch.zeros(3, 3), torch.arange(2)), "labels for 3 prototypes"),
    ],
)
def test_callable_initializer_bad_output(output, match):
    z, y = _latent()
    with pytest.raises(ValueError, match=match):
        initialize_prototypes(z, y, [1, 1, 1], lambda *args: output)


def test_unknown_initializer_lists_the_valid_ones():
    z, y = _latent()
    with pytest.raises(
        ValueError, match="Unknown prototypes_initializer 'kmeans'.*stratified_random"
    ):
        initialize_prototypes(z, y, [1, 1, 1], "kmeans")
    with pytest.raises(ValueError, match="Valid initializers"):
        LVQMLN(prototypes_initializer="kmeans")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("stratified_random", {"noise_std": 0.1}),
        ("uniform", {"mean": 0.0}),
        ("random_normal", {"low": 0.0}),
        ("zeros", {"value": 1.0}),
        ("fill_value", {"fill": 1.0}),
    ],
)
def test_bad_initializer_kwargs_name_the_valid_keys(name, kwargs):
    z, y = _latent()
    with pytest.raises(ValueError, match="unknown prototypes_initializer_kwargs"):
        initialize_prototypes(z, y, [1, 1, 1], name, **kwargs)
    with pytest.raises(ValueError, match="valid keys"):
        LVQMLN(prototypes_initializer=name, prototypes_initializer_kwargs=kwargs)
    with pytest.raises(ValueError):
        check_initializer(name, kwargs)


# ---------------------------------------------------------------- n_prototypes_per_class


def test_resolve_prototypes_per_class_forms():
    assert resolve_prototypes_per_class(2, 3) == [2, 2, 2]
    assert resolve_prototypes_per_class([1, 3, 2], 3) == [1, 3, 2]
    assert resolve_prototypes_per_class((1, 3, 2), 3) == [1, 3, 2]
    assert resolve_prototypes_per_class({0: 2, 1: 1, 2: 4}, 3) == [2, 1, 4]
    classes = ["cat", "dog", "emu"]
    assert resolve_prototypes_per_class({"emu": 3, "cat": 1, "dog": 2}, 3, classes) == [1, 2, 3]
    # Class indices are accepted as keys too.
    assert resolve_prototypes_per_class({0: 1, 1: 2, 2: 3}, 3, classes) == [1, 2, 3]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (0, "must be an integer >= 1, got 0"),
        (-1, "must be an integer >= 1"),
        (1.5, "must be an integer >= 1, got 1.5"),
        (True, "must be an integer >= 1, got True"),
        ("2", "must be an integer >= 1"),
        ([1, 2], "has 2 entries but there are 3 classes"),
        ([1, 0, 1], r"n_prototypes_per_class\[1\] must be an integer >= 1"),
        ({0: 1, 1: 1}, "no entry for class 2"),
        ({0: 1, 1: 1, 2: 0}, r"\[2\] must be an integer >= 1"),
    ],
)
def test_bad_prototypes_per_class(value, match):
    with pytest.raises(ValueError, match=match):
        resolve_prototypes_per_class(value, 3)


# ---------------------------------------------------------------- through the model


def _data(labels=(0, 1, 2), n=(12, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(labels), n)
    X = rng.normal(size=(len(y), 4)) + 2.0 * np.repeat(np.arange(len(labels)), n)[:, None]
    return X, y


def _initialised(model, dm):
    """Run setup only (max_epochs=0): the prototypes are initialised from the training data."""
    trainer = quiet_trainer(max_epochs=0)
    trainer.fit(model, dm)
    return model


def test_model_initialises_prototypes_from_latent_training_codes():
    X, y = _data()
    dm = ArrayDataModule(X, y, test_size=0.25, seed=1)
    model = _initialised(LVQMLN(n_prototypes_per_class=2, seed=3), dm)
    x_train, y_train = dm.train_tensors()[:2]
    with torch.no_grad():
        z = model.backbone(x_train)
    assert model.prototypes.shape == (6, 2)
    assert model.prototype_labels.tolist() == [0, 0, 1, 1, 2, 2]
    for proto, label in zip(model.prototypes.detach(), model.prototype_labels):
        assert _is_row_of(proto, z[y_train == label])


def test_model_same_seed_same_start_different_seed_different_start():
    X, y = _data()
    dm = ArrayDataModule(X, y, seed=0)
    a = _initialised(LVQMLN(n_prototypes_per_class=2, seed=11), dm)
    b = _initialised(LVQMLN(n_prototypes_per_class=2, seed=11), dm)
    c = _initialised(LVQMLN(n_prototypes_per_class=2, seed=12), dm)
    assert torch.equal(a.prototypes, b.prototypes)
    for pa, pb in zip(a.backbone.parameters(), b.backbone.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.prototypes, c.prototypes)
    assert not torch.equal(a.backbone.layers[0].weight, c.backbone.layers[0].weight)


def test_model_initializer_kwargs_are_honoured():
    X, y = _data()
    dm = ArrayDataModule(X, y)
    model = _initialised(
        LVQMLN(prototypes_initializer="fill_value", prototypes_initializer_kwargs={"value": 0.3}),
        dm,
    )
    assert torch.equal(model.prototypes.detach(), torch.full((3, 2), 0.3))
    model = _initialised(
        LVQMLN(
            latent_dim=40,
            prototypes_initializer="uniform",
            prototypes_initializer_kwargs={"low": 5.0, "high": 6.0},
        ),
        dm,
    )
    assert model.prototypes.min() >= 5.0 and model.prototypes.max() < 6.0


def test_model_with_callable_initializer_trains_and_checkpoints(tmp_path):
    X, y = _data()
    dm = ArrayDataModule(X, y)

    def centre(z, y_, n_per_class, generator):
        labels = prototype_labels_for(n_per_class)
        return torch.stack([z[y_ == c].mean(dim=0) for c in labels]), labels

    model = LVQMLN(prototypes_initializer=centre, n_prototypes_per_class=[1, 2, 1])
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(model, dm)
    assert model.prototype_labels.tolist() == [0, 1, 1, 2]
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = LVQMLN.load_from_checkpoint(path, weights_only=True)
    assert torch.equal(loaded.prototypes, model.prototypes)


def test_model_small_class_warns_through_fit():
    X, y = _data(n=(12, 10, 2))
    dm = ArrayDataModule(X, y)
    with pytest.warns(UserWarning, match="class index 2 has 2 samples but 4 prototypes"):
        model = _initialised(LVQMLN(n_prototypes_per_class={0: 1, 1: 1, 2: 4}), dm)
    assert model.prototype_labels.tolist() == [0, 1, 2, 2, 2, 2]


def test_model_prototypes_per_class_dict_with_string_labels():
    X, y = _data(labels=("setosa", "versicolor", "virginica"))
    dm = ArrayDataModule(X, y)
    model = _initialised(
        LVQMLN(n_prototypes_per_class={"virginica": 3, "setosa": 1, "versicolor": 2}), dm
    )
    assert model.prototype_labels.tolist() == [0, 1, 1, 2, 2, 2]
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]


def test_model_prototypes_per_class_list():
    X, y = _data()
    model = _initialised(LVQMLN(n_prototypes_per_class=[2, 1, 3]), ArrayDataModule(X, y))
    assert model.prototype_labels.tolist() == [0, 0, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"a": 1, "b": 1}, r"unknown classes \['a', 'b'\]"),
        (2.5, "integer >= 1"),
    ],
)
def test_model_bad_prototypes_per_class(value, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        _initialised(LVQMLN(n_prototypes_per_class=value), ArrayDataModule(X, y))
    with pytest.raises(ValueError, match=match):
        LVQMLN(in_features=4, n_classes=3, n_prototypes_per_class=value)
