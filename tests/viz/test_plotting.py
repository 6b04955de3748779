"""Latent-space plots (plot_latent_space) and the LatentSpacePlot callback."""

import os

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from lightning.pytorch.loggers import CSVLogger, Logger

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.lightning.callbacks import LatentSpacePlot
from lvqmln_torch.viz.plotting import (
    nearest_prototype_fn,
    plot_latent_space,
    plot_model_latent_space,
)

mpl_image = pytest.importorskip("matplotlib.image")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpl_image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def _blobs(dim, n=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, dim))
    y = np.repeat(np.array(["a", "b", "c"]), n // 3)
    z = centres[np.repeat(np.arange(3), n // 3)] + rng.normal(size=(n, dim))
    return z, y, centres


def _scatter_offsets(figure):
    return [np.asarray(c.get_offsets()) for c in figure.axes[0].collections]


def test_2d_plot_with_decision_regions_writes_a_png(tmp_path):
    z, y, centres = _blobs(2)
    calls = []

    def nearest(points):
        calls.append(points.shape)
        d = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        return np.array(["a", "b", "c"])[d.argmin(1)]

    path = tmp_path / "plots" / "latent.png"
    figure = plot_latent_space(
        z, y, centres, ["a", "b", "c"], predict_fn=nearest, path=path, title="t"
    )
    _assert_png(path)
    assert os.listdir(path.parent) == ["latent.png"]  # no temporary file left
    ax = figure.axes[0]
    assert ax.get_title() == "t" and ax.get_xlabel() == "z₁"
    assert calls and calls[0][1] == 2  # regions were predicted on 2-D latent points
    assert len(ax.images) == 1  # the decision regions
    regions = ax.images[0].get_array()
    assert set(np.unique(regions).tolist()) == {0, 1, 2}
    offsets = _scatter_offsets(figure)
    np.testing.assert_allclose(offsets[-1], centres)  # prototypes drawn where they are
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c", "prototype"]


def test_more_than_two_dimensions_uses_pca_for_samples_and_prototypes():
    z, y, centres = _blobs(5)
    figure = plot_latent_space(z, y, centres, ["a", "b", "c"], predict_fn=lambda p: 1 / 0)
    ax = figure.axes[0]
    assert ax.get_xlabel().startswith("PC1") and ax.get_ylabel().startswith("PC2")
    assert not ax.images  # no decision regions in a projection (predict_fn never called)
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    offsets = _scatter_offsets(figure)
    projected = np.vstack(offsets[:3])
    expected = np.vstack([(z[y == c] - mean) @ vt[:2].T for c in "abc"])
    np.testing.assert_allclose(projected, expected, atol=1e-9)
    np.testing.assert_allclose(offsets[-1], (centres - mean) @ vt[:2].T, atol=1e-9)


def test_one_dimension_and_unlabelled_samples(tmp_path):
    z = np.linspace(-1, 1, 20)[:, None]
    figure = plot_latent_space(
        z,
        prototypes=[[-0.5], [0.5]],
        prototype_labels=[0, 1],
        predict_fn=lambda p: (p[:, 0] > 0).astype(int),
        path=tmp_path / "one.png",
    )
    _assert_png(tmp_path / "one.png")
    assert len(figure.axes[0].images) == 1


def test_accepts_tensors():
    z, y, centres = _blobs(2)
    figure = plot_latent_space(torch.tensor(z), torch.tensor(np.searchsorted(["a", "b", "c"], y)))
    assert len(_scatter_offsets(figure)) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent": np.zeros((0, 2))}, "non-empty"),
        ({"latent": np.zeros(5)}, "non-empty"),
        ({"labels": ["a"]}, "labels has 1 entries but latent has 4 rows"),
        ({"prototypes": np.zeros((2, 3))}, r"prototypes must have shape \(P, 2\)"),
        (
            {"prototypes": np.zeros((2, 2)), "prototype_labels": ["z", "a"], "classes": ["a"]},
            "prototype_labels contains 'z'",
        ),
        ({"labels": ["a", "b", "a", "q"], "classes": ["a", "b"]}, "'q', which is not among"),
    ],
)
def test_errors(kwargs, match):
    kwargs = {"latent": np.zeros((4, 2)), **kwargs}
    with pytest.raises(ValueError, match=match):
        plot_latent_space(**kwargs)


class _FigureLogger(Logger):
    """A logger whose experiment takes figures like TensorBoard's SummaryWriter."""

    class _Experiment:
        def __init__(self):
            self.figures = []

        def add_figure(self, tag, figure, global_step=None, close=True):
            self.figures.append((tag, figure, global_step))

    def __init__(self):
        super().__init__()
        self._experiment = self._Experiment()

    @property
    def name(self):
        return "figures"

    @property
    def version(self):
        return 0

    @property
    def experiment(self):
        return self._experiment

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass


def test_callback_writes_pngs_and_logs_figures(tmp_path):
    X, y = load_builtin("iris")
    dm = ArrayDataModule(X, y, standardize=True)
    model = LVQMLN(lr=0.05)
    figure_logger = _FigureLogger()
    plot = LatentSpacePlot(every_n_epochs=2, dirpath=tmp_path / "plots")
    trainer = quiet_trainer(
        max_epochs=4,
        logger=[figure_logger, CSVLogger(tmp_path)],  # CSVLogger takes no figures: skipped
        callbacks=[plot],
    )
    trainer.fit(model, dm)
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == [
        "latent_space.png",
        "latent_space_epoch=0001.png",
        "latent_space_epoch=0003.png",
    ]
    for path in plot.paths:
        _assert_png(path)
    figures = figure_logger.experiment.figures
    assert [(tag, step) for tag, _, step in figures] == [
        ("latent_space", 2),  # global step (full batch: one per epoch) after epoch 2
        ("latent_space", 4),
        ("latent_space", 4),  # the final figure
    ]
    # The final figure shows the fitted prototypes (2-D latent: no projection).
    final = figures[-1][1].axes[0]
    np.testing.assert_allclose(
        np.asarray(final.collections[-1].get_offsets()),
        model.prototypes.detach().numpy(),
        rtol=1e-6,
    )
    assert len(final.images) == 1


def test_callback_default_folder_is_under_the_log_dir(tmp_path):
    X, y = load_builtin("iris")
    trainer = quiet_trainer(max_epochs=1, logger=CSVLogger(tmp_path), callbacks=[LatentSpacePlot()])
    trainer.fit(LVQMLN(latent_dim=3), ArrayDataModule(X, y))
    _assert_png(tmp_path / "lightning_logs" / "version_0" / "latent_space" / "latent_space.png")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every_n_epochs": 0}, "every_n_epochs must be a positive integer"),
        ({"max_samples": 0}, "max_samples must be a positive integer"),
    ],
)
def test_callback_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LatentSpacePlot(**kwargs)


def test_plot_of_a_fitted_model(tmp_path):
    X, y = load_builtin("iris")
    names = np.array(["setosa", "versicolor", "virginica"])
    dm = ArrayDataModule(X, names[y], standardize=True)
    model = LVQMLN(lr=0.05, n_prototypes_per_class=2)
    quiet_trainer(max_epochs=20).fit(model, dm)
    x = dm.train_tensors()[0]
    figure = plot_model_latent_space(model, x, names[y], path=tmp_path / "m.png", title="iris")
    _assert_png(tmp_path / "m.png")
    ax = figure.axes[0]
    np.testing.assert_allclose(
        np.asarray(ax.collections[-1].get_offsets()), model.prototypes.detach().numpy(), rtol=1e-6
    )
    # The shaded regions are the model's own decisions: every sample lies in the region of
    # the class the model predicts for it.
    z = model.transform(x).numpy()
    decide = nearest_prototype_fn(model.prototypes, model.prototype_labels, model.classes_)
    assert decide(z).tolist() == model.predict(x).tolist()
    assert nearest_prototype_fn([[0.0], [1.0]], [1, 0])(np.array([[0.2], [0.9]])).tolist() == [1, 0]
