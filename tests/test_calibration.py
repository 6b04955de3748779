"""Temperature scaling: the fit, the targets on held-out data, persistence of the temperature
(old files and checkpoints load with T = 1), the module's loader path, the callback, val_ece,
the export and the reliability diagram."""

import pickle

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torchmetrics.functional.classification import multiclass_calibration_error

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.core import functional as F
from lvqmln_torch.core.calibration import (
    fit_temperature,
    nonconformity,
    reliability_bins,
    temperature_nll,
)
from lvqmln_torch.io.export import export_onnx, export_program
from lvqmln_torch.lightning.callbacks import RestoreBest, TemperatureCalibration
from lvqmln_torch.sklearn.estimator import LVQMLNClassifier


def _ece_nll(p, y):
    p = torch.as_tensor(p, dtype=torch.float64)
    y = torch.as_tensor(y)
    ece = float(multiclass_calibration_error(p, y, p.shape[1], n_bins=15))
    return ece, float(-torch.log(p[torch.arange(len(y)), y]).mean())


def _split(X, y, train, seed=0):
    X_tr, X_rest, y_tr, y_rest = train_test_split(
        X, y, train_size=train, random_state=seed, stratify=y
    )
    X_cal, X_te, y_cal, y_te = train_test_split(
        X_rest, y_rest, test_size=0.5, random_state=seed, stratify=y_rest
    )
    scaler = StandardScaler().fit(X_tr)
    return [scaler.transform(a) for a in (X_tr, X_cal, X_te)], (y_tr, y_cal, y_te)


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer, MLP [10], latent 2, 300 iterations: flat probabilities (ECE ~0.4)."""
    (X_tr, X_cal, X_te), (y_tr, y_cal, y_te) = _split(*load_breast_cancer(return_X_y=True), 0.5)
    clf = LVQMLNClassifier(hidden_sizes=[10], latent_dim=2, max_iter=300).fit(X_tr, y_tr)
    return clf, X_cal, y_cal, X_te, y_te


# ----------------------------------------------------------------------------- the math
def test_fit_recovers_the_temperature_that_generated_the_labels():
    g = torch.Generator().manual_seed(0)
    pooled = torch.rand(20000, 4, generator=g, dtype=torch.float64) * 3
    y = torch.multinomial(torch.softmax(-pooled / 0.4, dim=1), 1, generator=g)[:, 0]
    t = fit_temperature(pooled, y)
    assert abs(t - 0.4) < 0.03
    assert fit_temperature(pooled, y) == t  # deterministic
    # The minimum: both neighbours are worse.
    nll = [float(temperature_nll(pooled, y, t * f)) for f in (0.97, 1.0, 1.03)]
    assert nll[1] < nll[0] and nll[1] < nll[2]


def test_fit_sums_shards_through_reduce():
    g = torch.Generator().manual_seed(1)
    pooled = torch.rand(600, 3, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(-pooled / 0.3, dim=1), 1, generator=g)[:, 0]
    calls = []

    def reduce(t):  # two "ranks" holding identical shards: sums double, the minimiser does not
        calls.append(1)
        return 2 * t

    assert fit_temperature(pooled, y, reduce=reduce) == pytest.approx(
        fit_temperature(pooled, y), rel=1e-6
    )
    assert calls


def test_separable_data_warn_at_the_bound():
    pooled = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 10)
    y = torch.tensor([0, 1] * 10)
    with pytest.warns(UserWarning, match="no lower than at a bound"):
        t = fit_temperature(pooled, y, bounds=(1e-3, 10.0))
    assert t < 0.01  # every sample at probability 1: NLL 0
    with pytest.warns(UserWarning, match="no lower than at a bound"):  # no signal
        fit_temperature(torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))


@pytest.mark.parametrize(
    "bounds, match",
    [((0, 1), "0 < low < high"), ((2, 1), "0 < low < high"), ("x", "pair"), ((1,), "pair")],
)
def test_bad_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0, 1]), bounds=bounds)


def test_bad_calibration_data():
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="one per sample"):
        fit_temperature(torch.zeros(2, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="empty"):
        fit_temperature(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit_temperature(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))


def test_nonconformity_is_glvq_mu_of_each_class():
    g = torch.Generator().manual_seed(2)
    distances = torch.rand(50, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2, 2, 3, 1])
    pooled = F.stratified_min_pooling(distances, labels, 4)
    scores = nonconformity(pooled)
    for c in range(4):
        target = torch.full((50,), c)
        torch.testing.assert_close(scores[:, c], F.glvq_mu(distances, target, labels))
    assert ((scores < 0).sum(dim=1) <= 1).all()  # only the nearest class is negative


def test_reliability_bins_match_torchmetrics():
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn(500, 5, generator=g) * 2, dim=1)
    y = torch.randint(0, 5, (500,), generator=g)
    bins = reliability_bins(p, y, 15)
    expected = multiclass_calibration_error(p, y, 5, n_bins=15)
    assert float(bins["ece"]) == pytest.approx(float(expected), abs=1e-6)
    assert int(bins["count"].sum()) == 500


# ----------------------------------------------------------------------------- estimator
def test_targets_on_breast_cancer(cancer):
    """ECE above 0.05 before: at most half after; NLL at most 3 % worse; same predictions."""
    clf, X_cal, y_cal, X_te, y_te = cancer
    clf = pickle.loads(pickle.dumps(clf))  # the fixture stays uncalibrated
    labels = clf.predict(X_te)
    ece_b, nll_b = _ece_nll(clf.predict_proba(X_te), y_te)
    assert clf.temperature_ == 1.0
    assert clf.calibrate(X_cal, y_cal) is clf
    ece_a, nll_a = _ece_nll(clf.predict_proba(X_te), y_te)
    assert ece_b > 0.05 and ece_a <= ece_b / 2
    assert nll_a <= 1.03 * nll_b
    assert clf.temperature_ != 1.0
    np.testing.assert_array_equal(clf.predict(X_te), labels)


def test_targets_on_digits():
    """ECE below 0.05 before (a tanh MLP): at most 0.01 worse after; NLL at most 3 % worse."""
    (X_tr, X_cal, X_te), (y_tr, y_cal, y_te) = _split(*load_digits(return_X_y=True), 1000)
    clf = LVQMLNClassifier(hidden_sizes=[64], latent_dim=10, max_iter=50, activation="tanh")
    clf.fit(X_tr, y_tr)
    ece_b, nll_b = _ece_nll(clf.predict_proba(X_te), y_te)
    labels = clf.predict(X_te)
    clf.calibrate(X_cal, y_cal)
    ece_a, nll_a = _ece_nll(clf.predict_proba(X_te), y_te)
    assert ece_b < 0.05 and ece_a <= ece_b + 0.01
    assert nll_a <= 1.03 * nll_b
    np.testing.assert_array_equal(clf.predict(X_te), labels)


def test_estimator_calibrate_bad_inputs(cancer):
    clf, X_cal, y_cal, _, _ = cancer
    with pytest.raises(ValueError, match="7"):
        clf.calibrate(X_cal[:3], [0, 1, 7])
    with pytest.raises(ValueError, match="one label per sample"):
        clf.calibrate(X_cal[:3], [0, 1])
    with pytest.raises(ValueError, match="bounds"):
        clf.calibrate(X_cal, y_cal, bounds=(1, 1))
    with pytest.raises(Exception, match="not fitted"):
        LVQMLNClassifier().calibrate(X_cal, y_cal)


def test_temperature_saved_loaded_and_old_files_load_with_one(cancer, tmp_path):
    clf, X_cal, y_cal, X_te, _ = cancer
    clf = pickle.loads(pickle.dumps(clf)).calibrate(X_cal, y_cal)
    clf.save(tmp_path / "new.pt")
    loaded = LVQMLNClassifier.load(tmp_path / "new.pt")
    assert loaded.temperature_ == clf.temperature_
    np.testing.assert_allclose(loaded.predict_proba(X_te), clf.predict_proba(X_te), atol=1e-6)
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    del payload["state_dict"]["head.temperature"]  # a file written before issue 23
    torch.save(payload, tmp_path / "old.pt")
    old = LVQMLNClassifier.load(tmp_path / "old.pt")
    assert old.temperature_ == 1.0
    # A pickle of a network built before the buffer existed unpickles with T = 1.
    network = pickle.loads(pickle.dumps(clf.network_))
    del network.head._buffers["temperature"]
    assert float(pickle.loads(pickle.dumps(network)).head.temperature) == 1.0


def test_nonconformity_and_reliability_plot(cancer, tmp_path):
    clf, _, _, X_te, y_te = cancer
    scores = clf.nonconformity(X_te)
    assert scores.shape == (len(X_te), 2)
    np.testing.assert_allclose(clf.nonconformity(X_te, y_te), scores[np.arange(len(y_te)), y_te])
    np.testing.assert_array_equal(clf.classes_[scores.argmin(axis=1)], clf.predict(X_te))
    figure = clf.plot_reliability(X_te, y_te, path=tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0 and figure.axes
    with pytest.raises(ValueError, match="one label per sample"):
        clf.plot_reliability(X_te, y_te[:-1])


# ----------------------------------------------------------------------------- module
@pytest.fixture(scope="module")
def module_fit():
    X, y = load_breast_cancer(return_X_y=True)
    dm = ArrayDataModule(X, y, val_size=0.3, standardize=True, batch_size=64, seed=0)
    model = LVQMLN(hidden_sizes=[10], latent_dim=2)
    callback = TemperatureCalibration()
    trainer = quiet_trainer(max_epochs=8, callbacks=[callback, RestoreBest()])
    trainer.fit(model, dm)
    return model, dm, trainer, callback


def test_callback_fits_on_the_final_weights(module_fit):
    model, dm, trainer, callback = module_fit
    assert [type(c).__name__ for c in trainer.callbacks][-1] == "TemperatureCalibration"
    assert "val_ece" in trainer.callback_metrics  # logged during the fit, at T = 1
    assert model.temperature == callback.temperature != 1.0
    # The same T from the weights the fit ended on (after RestoreBest), by the loader path.
    before = model.temperature
    assert model.calibrate(dm.val_dataloader()) == pytest.approx(before, rel=1e-6)
    with pytest.raises(ValueError, match="drop y"):
        model.calibrate(dm.val_dataloader(), torch.zeros(3))
    with pytest.raises(ValueError, match="needs the labels"):
        model.calibrate(torch.zeros(3, 30))


def test_val_ece_is_torchmetrics_ece_at_the_current_temperature(module_fit):
    model, dm, trainer, _ = module_fit
    logged = trainer.validate(model, dm, verbose=False)[0]["val_ece"]
    batches = list(dm.val_dataloader())
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    expected = multiclass_calibration_error(model.predict_proba(x), y, 2, n_bins=15)
    assert logged == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")
def test_callback_needs_validation_data():
    X, y = load_breast_cancer(return_X_y=True)
    dm = ArrayDataModule(X[:100], y[:100], batch_size=50)
    trainer = quiet_trainer(max_epochs=1, callbacks=[TemperatureCalibration()])
    with pytest.raises(ValueError, match="has none"):
        trainer.fit(LVQMLN(hidden_sizes=[4]), dm)
    trainer = quiet_trainer(max_epochs=1, callbacks=[TemperatureCalibration()])
    with pytest.raises(ValueError, match="has none"):  # a plain training loader only
        trainer.fit(LVQMLN(hidden_sizes=[4], in_features=30, n_classes=2), dm.train_dataloader())
    with pytest.raises(ValueError, match="bounds"):
        TemperatureCalibration(bounds=(0, 1))


def test_checkpoint_keeps_the_temperature_and_old_ones_load(module_fit, tmp_path):
    model, _, trainer, _ = module_fit
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    assert LVQMLN.load_from_checkpoint(tmp_path / "new.ckpt").temperature == model.temperature
    checkpoint = torch.load(tmp_path / "new.ckpt", weights_only=True)
    del checkpoint["state_dict"]["head.temperature"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert LVQMLN.load_from_checkpoint(tmp_path / "old.ckpt").temperature == 1.0


def test_export_uses_the_temperature(module_fit, tmp_path):
    model, _, _, _ = module_fit
    x = torch.randn(9, 30)
    labels, probabilities, _ = export_program(model).module()(x)
    torch.testing.assert_close(probabilities, model.predict_proba(x), atol=1e-6, rtol=1e-5)
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export_onnx(model, tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, p_onnx, _ = session.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(p_onnx, model.predict_proba(x).numpy(), atol=1e-5)
    assert not np.allclose(p_onnx, torch.softmax(-model.class_distances(x), 1).numpy(), atol=1e-3)


def test_reliability_diagram_compares_and_checks_inputs(tmp_path):
    from lvqmln_torch.viz.calibration_plots import plot_reliability

    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (200,), generator=g).numpy()
    sharp = torch.softmax(torch.randn(200, 3, generator=g) * 4, dim=1).numpy()
    flat = torch.softmax(torch.log(torch.as_tensor(sharp)) / 4, dim=1).numpy()
    figure = plot_reliability(sharp, y, compare={"flat": flat}, path=tmp_path / "d.png")
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    ece = float(reliability_bins(torch.as_tensor(sharp), torch.as_tensor(y))["ece"])
    assert any(f"ECE {ece:.3f}" in t for t in legend) and any("flat" in t for t in legend)
    assert (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        plot_reliability(sharp, y + 1)
    with pytest.raises(ValueError, match="shape"):
        plot_reliability(sharp, y, compare={"x": flat[:10]})
    with pytest.raises(ValueError, match="k >= 2"):
        plot_reliability(sharp[:, :1], y)
