"""Files saved with ``lipschitz="orthogonal"`` before it used the Cayley map load as the model
they were (issue 21).

The old code called ``torch.nn.utils.parametrizations.orthogonal(layer)`` with PyTorch's
default map (Householder for a non-square weight, the matrix exponential for a square one)
and saved no map name. ``old_constrain`` reproduces it: models built and trained under it
write exactly the old files. Sizes 4 → 6 → 6 → 4 give a wide, a square and a tall layer.
"""

import pickle

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from torch.nn.utils.parametrizations import orthogonal

from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.core import backbones
from lvqmln_torch.core.backbones import MLPBackbone
from lvqmln_torch.core.lipschitz_control import constrain
from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

SIZES = dict(hidden_sizes=(6, 6), latent_dim=4, activation="maxmin", lipschitz="orthogonal")
TOL = dict(rtol=0, atol=1e-5)


def old_constrain(layer, mode, input_hw=None):
    """``constrain`` as it was: PyTorch's default orthogonal map, no map recorded."""
    if mode == "orthogonal":
        orthogonal(layer)
    else:
        constrain(layer, mode, input_hw)


@pytest.fixture
def old_code(monkeypatch):
    """While active, backbones are built by the old code."""
    monkeypatch.setattr(backbones, "constrain", old_constrain)
    return monkeypatch


def _old_backbone(dtype=torch.float32):
    """An old-style backbone with weights far from their initial ones (as after training:
    only the entries the maps read are moved; the Householder signs stay ±1)."""
    backbone = MLPBackbone(4, (6, 6), 4, activation="maxmin")
    for layer in backbone.layers:
        orthogonal(layer)
    backbone.to(dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for layer in backbone.layers:
            original = layer.parametrizations.weight.original
            noise = torch.randn(original.shape, generator=gen, dtype=dtype)
            original.add_(0.5 * noise * (1 - torch.eye(*original.shape, dtype=dtype)))
            layer.bias.normal_(generator=gen)
    return backbone


def _marked_as_cayley(state, prefix=""):
    """``state`` relabelled as Cayley entries: what loading without the conversion gives."""
    code = torch.tensor(list(b"cayley"), dtype=torch.uint8)
    return {**state, **{f"{prefix}layers.{i}.orthogonal_map": code for i in range(3)}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_old_state_dict_loads_as_the_same_function(dtype):
    old = _old_backbone(dtype)
    state = old.state_dict()
    assert not any(k.endswith("orthogonal_map") for k in state)
    x = torch.randn(50, 4, dtype=dtype)
    new = MLPBackbone(4, **SIZES).to(dtype)
    rng = torch.random.get_rng_state()
    new.load_state_dict(state)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the conversion draws nothing
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x), **TOL)
        for layer, before in zip(new.layers, old.layers):
            torch.testing.assert_close(layer.weight, before.weight, **TOL)
            base = layer.parametrizations.weight[0].base  # orthogonal: training goes on
            eye = torch.eye(base.shape[0], dtype=dtype)
            torch.testing.assert_close(base.mT @ base, eye, rtol=0, atol=1e-5)
        # The files are worth converting: read as Cayley entries they are another function.
        naive = MLPBackbone(4, **SIZES).to(dtype)
        naive.load_state_dict(_marked_as_cayley(state))
        assert (naive(x) - old(x)).abs().max() > 0.1
    # Saved again, the map is recorded and the round trip is exact.
    again = MLPBackbone(4, **SIZES).to(dtype)
    again.load_state_dict(new.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), new(x))


def test_a_recorded_map_is_honoured_and_an_unknown_one_is_refused():
    old = _old_backbone()
    state = old.state_dict()
    # Layer 1 is square (matrix_exp by default), the others Householder: name them.
    for i, name in enumerate([b"householder", b"matrix_exp", b"householder"]):
        state[f"layers.{i}.orthogonal_map"] = torch.tensor(list(name), dtype=torch.uint8)
    new = MLPBackbone(4, **SIZES)
    new.load_state_dict(state)
    x = torch.randn(20, 4)
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x), **TOL)
    state["layers.1.orthogonal_map"] = torch.tensor(list(b"qr"), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"'layers.1.orthogonal_map'.*'qr'.*'cayley'"):
        MLPBackbone(4, **SIZES).load_state_dict(state)


def test_orthogonal_models_cannot_be_pickled_so_no_pickle_holds_an_old_map():
    # PyTorch refuses to pickle parametrised modules: old models were only ever saved as
    # state dicts (checkpoints, estimator files), which the conversion covers.
    with pytest.raises(RuntimeError, match="only supported through state_dict"):
        pickle.dumps(MLPBackbone(4, **SIZES))


def _fit_module(max_epochs=15):
    X, y = load_builtin("iris")
    model = LVQMLN(lr=0.05, **SIZES)
    trainer = quiet_trainer(max_epochs=max_epochs)
    trainer.fit(model, ArrayDataModule(X, y, batch_size=50))
    return model, trainer, torch.as_tensor(X[::3])


def test_an_old_lightning_checkpoint_loads_as_the_model_it_was(old_code, tmp_path):
    old, trainer, x = _fit_module()
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    old_code.undo()
    state = torch.load(path, weights_only=True)["state_dict"]
    assert not any(k.endswith("orthogonal_map") for k in state)
    loaded = LVQMLN.load_from_checkpoint(path, weights_only=True)
    torch.testing.assert_close(loaded.transform(x), old.transform(x), **TOL)
    torch.testing.assert_close(loaded.predict_proba(x), old.predict_proba(x), **TOL)
    naive = LVQMLN(**old.hparams)  # trained far enough that the maps disagree
    naive.load_state_dict(_marked_as_cayley(state, "backbone."))
    assert (naive.transform(x) - old.transform(x)).abs().max() > 0.1
    # Training goes on from it with orthogonal weights, and a checkpoint written now records
    # the map and loads exactly.
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(loaded, ArrayDataModule(*load_builtin("iris"), batch_size=50))
    for layer in loaded.backbone.layers:
        weight = layer.weight.detach()
        gram = weight @ weight.mT if weight.shape[0] <= weight.shape[1] else weight.mT @ weight
        torch.testing.assert_close(gram, torch.eye(gram.shape[0]), rtol=0, atol=1e-5)
    trainer.save_checkpoint(tmp_path / "new.ckpt")
    again = LVQMLN.load_from_checkpoint(tmp_path / "new.ckpt", weights_only=True)
    assert torch.equal(again.transform(x), loaded.transform(x))


def test_an_old_estimator_file_loads_as_the_estimator_it_was(old_code, tmp_path):
    X, y = load_builtin("iris")
    old = LVQMLNClassifier(max_iter=15, lr=0.05, **SIZES).fit(X, y)
    old.save(tmp_path / "old.pt")
    old_code.undo()
    state = torch.load(tmp_path / "old.pt", weights_only=True)["state_dict"]
    assert not any(k.endswith("orthogonal_map") for k in state)
    loaded = LVQMLNClassifier.load(tmp_path / "old.pt")
    np.testing.assert_allclose(loaded.transform(X), old.transform(X), rtol=0, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_proba(X), old.predict_proba(X), rtol=0, atol=1e-5)
    loaded.save(tmp_path / "new.pt")
    assert "backbone.layers.0.orthogonal_map" in torch.load(tmp_path / "new.pt")["state_dict"]
    again = LVQMLNClassifier.load(tmp_path / "new.pt")
    np.testing.assert_array_equal(again.transform(X), loaded.transform(X))
