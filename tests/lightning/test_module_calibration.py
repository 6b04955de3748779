"""The module's temperature scaling: the TemperatureCalibration callback (after RestoreBest,
on the validation loaders, refusing a fit without them), calibrate(loader), val_ece, the
temperature in checkpoints (old ones load with T = 1) and in the exported graphs."""

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.datasets import load_breast_cancer
from torchmetrics.functional.classification import multiclass_calibration_error

from lvqmln_torch import LVQMLN, ArrayDataModule
from lvqmln_torch.io.export import export_onnx, export_program
from lvqmln_torch.lightning.callbacks import RestoreBest, TemperatureCalibration


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
