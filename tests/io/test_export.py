"""Export of the prediction path to TorchScript and ONNX, checked against the eager model."""

import os

import numpy as np
import pytest
import torch
from _numerics import assert_winners_agree
from _trainers import quiet_trainer
from sklearn.exceptions import NotFittedError
from torch import nn
from torch.nn.utils import parametrize

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.core import functional as F
from lvqmln_torch.io.export import (
    LVQMLNPredictor,
    export_onnx,
    export_program,
    export_torchscript,
    load_program,
    load_torchscript,
    read_onnx_classes,
)

# TorchScript is deprecated in torch >= 2.10; its export is still tested for older runtimes.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def _fit(model, dm, epochs):
    quiet_trainer(max_epochs=epochs).fit(model, dm)
    return model


@pytest.fixture(scope="module")
def mlp():
    X, y = load_builtin("iris")
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    dm = ArrayDataModule(X, labels, standardize=True)
    model = _fit(LVQMLN(latent_dim=3, n_prototypes_per_class=2, lr=0.05), dm, 30)
    x = torch.randn(37, 4, generator=torch.Generator().manual_seed(0))
    return model, x


@pytest.fixture(scope="module")
def cnn():
    X, y = load_builtin("digits", as_images=True)
    dm = ArrayDataModule(X[:200], y[:200] * 3, batch_size=50)  # non-contiguous labels
    model = _fit(LVQMLN(backbone="cnn", channels=[4, 8], latent_dim=4), dm, 1)
    x = torch.as_tensor(X[200:233], dtype=torch.float32)
    return model, x


def _lipschitz_mlp(mode):
    """An MLP whose weights are parametrised (the Lipschitz controls of issue 21)."""
    X, y = load_builtin("iris")
    dm = ArrayDataModule(X, y, standardize=True)
    model = LVQMLN(
        hidden_sizes=[6],
        latent_dim=3,
        activation="maxmin",
        latent_activation=False,
        lipschitz=mode,
        robust_eps=0.1,
        lr=0.05,
    )
    model = _fit(model, dm, 10)
    return model, torch.randn(37, 4, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def spectral():
    return _lipschitz_mlp("spectral")


@pytest.fixture(scope="module")
def orthogonal():
    return _lipschitz_mlp("orthogonal")


@pytest.fixture(scope="module")
def cnn_spectral():
    X, y = load_builtin("digits", as_images=True)
    dm = ArrayDataModule(X[:100], y[:100], batch_size=50)
    model = LVQMLN(
        backbone="cnn", channels=[4], kernel_sizes=[3], latent_dim=4, lipschitz="spectral"
    )
    model = _fit(model, dm, 1)
    return model, torch.as_tensor(X[200:217], dtype=torch.float32)


@pytest.mark.parametrize("which", ["spectral", "orthogonal", "cnn_spectral"])
def test_exports_bake_the_weight_parametrisations(request, which):
    model, x = request.getfixturevalue(which)
    before = model.predict_proba(x)
    predictor = LVQMLNPredictor.from_model(model)
    assert not any(parametrize.is_parametrized(m) for m in predictor.backbone.modules())
    # The model itself keeps its parametrisation and its predictions.
    assert any(parametrize.is_parametrized(m) for m in model.backbone.modules())
    assert torch.equal(model.predict_proba(x), before)


def _eager(model, x):
    return model.predict_indices(x), model.predict_proba(x), model.transform(x)


def _assert_equivalent(outputs, model, x):
    labels, proba, latent = (torch.as_tensor(np.asarray(o)) for o in outputs)
    ref_labels, ref_proba, ref_latent = _eager(model, x)
    # Another runtime rounds differently: the labels agree but for near ties.
    d = F.squared_euclidean_distance(ref_latent.double(), model.prototypes.detach().double())
    assert_winners_agree(labels.long(), d, model.prototype_labels, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(proba.double(), ref_proba.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(latent.double(), ref_latent.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("which", ["mlp", "cnn", "spectral", "orthogonal", "cnn_spectral"])
@pytest.mark.numerics
def test_predictor_module_matches_the_model(request, which):
    model, x = request.getfixturevalue(which)
    with torch.no_grad():
        _assert_equivalent(LVQMLNPredictor.from_model(model)(x), model, x)


@pytest.mark.parametrize("which", ["mlp", "cnn", "spectral", "orthogonal", "cnn_spectral"])
@pytest.mark.numerics
def test_torchscript_matches_eager(request, tmp_path, which):
    model, x = request.getfixturevalue(which)
    path = tmp_path / f"{which}.pt"
    traced = export_torchscript(model, path)
    _assert_equivalent(traced(x), model, x)  # a batch size other than the traced one
    loaded, classes = load_torchscript(path)
    assert classes == model.classes_.tolist()
    _assert_equivalent(loaded(x[:5]), model, x[:5])
    assert os.listdir(tmp_path) == [f"{which}.pt"]


@pytest.mark.parametrize("which", ["mlp", "cnn", "spectral", "orthogonal", "cnn_spectral"])
@pytest.mark.numerics
def test_exported_program_matches_eager(request, tmp_path, which):
    model, x = request.getfixturevalue(which)
    path = tmp_path / f"{which}.pt2"
    program = export_program(model, path)
    _assert_equivalent(program.module()(x), model, x)
    loaded, classes = load_program(path)
    assert classes == model.classes_.tolist()
    _assert_equivalent(loaded(x[:3]), model, x[:3])
    assert os.listdir(tmp_path) == [f"{which}.pt2"]


@pytest.mark.parametrize("which", ["mlp", "cnn", "spectral", "orthogonal", "cnn_spectral"])
@pytest.mark.numerics
def test_onnx_matches_eager(request, tmp_path, which):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, x = request.getfixturevalue(which)
    path = export_onnx(model, tmp_path / f"{which}.onnx")
    onnx.checker.check_model(str(path))
    assert read_onnx_classes(path) == model.classes_.tolist()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["labels", "probabilities", "latent"]
    for batch in (x, x[:1]):  # the batch dimension is dynamic
        outputs = session.run(None, {"x": batch.numpy()})
        _assert_equivalent(outputs, model, batch)
    assert os.listdir(tmp_path) == [f"{which}.onnx"]


def test_original_labels_from_the_exported_indices(mlp, tmp_path):
    model, x = mlp
    export_torchscript(model, tmp_path / "m.pt")
    loaded, classes = load_torchscript(tmp_path / "m.pt")
    labels = np.asarray(classes)[loaded(x)[0].numpy()]
    assert labels.tolist() == model.predict(x).tolist()
    assert set(labels.tolist()) <= {"setosa", "versicolor", "virginica"}


def test_float64_model_exports_in_float64(tmp_path):
    X, y = load_builtin("iris")
    dm = ArrayDataModule(X, y, standardize=True, dtype=torch.float64)
    model = LVQMLN(lr=0.05).double()
    quiet_trainer(max_epochs=3, precision="64-true").fit(model, dm)
    x = torch.randn(9, 4, dtype=torch.float64)
    traced = export_torchscript(model)
    labels, proba, latent = traced(x)
    assert proba.dtype == torch.float64 and latent.dtype == torch.float64
    _assert_equivalent((labels, proba, latent), model, x)


def test_errors(tmp_path, mlp):
    with pytest.raises(NotFittedError):
        export_torchscript(LVQMLN(in_features=4, n_classes=3))

    class Flatten(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            return self.linear(x)

    X, y = load_builtin("iris")
    model = _fit(LVQMLN(backbone=Flatten(), n_classes=3), ArrayDataModule(X, y), 1)
    with pytest.raises(ValueError, match="custom backbone needs an example_input"):
        export_torchscript(model)
    traced = export_torchscript(model, example_input=torch.zeros(3, 4))
    x = torch.randn(6, 4)
    _assert_equivalent(traced(x), model, x)
    (tmp_path / "plain.onnx").write_bytes(b"")  # parses as an empty ModelProto
    with pytest.raises(ValueError, match="has no 'classes' metadata"):
        read_onnx_classes(tmp_path / "plain.onnx")


def test_onnx_export_on_an_older_torch_says_what_it_needs(mlp, tmp_path, monkeypatch):
    model, _ = mlp
    monkeypatch.setattr(torch, "__version__", torch.torch_version.TorchVersion("2.5.1"))
    with pytest.raises(
        RuntimeError, match=r"ONNX export needs torch >= 2\.6 .*this is torch 2\.5\.1"
    ):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
