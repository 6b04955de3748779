"""One place for parameter rules: NumPy scalars and arrays are accepted and stored as plain
values at every entry point and unknown dict keys are errors (the training rules are in
tests/training/test_rules.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV

from lvqmln_torch import LVQMLN, ArrayDataModule, LVQMLNClassifier, MLPBackbone
from lvqmln_torch.core.head import PrototypeHead
from lvqmln_torch.core.validation import (
    Integer,
    IntegerList,
    Keywords,
    Options,
    Real,
    check_lookahead,
    plain,
)

X, Y = load_iris(return_X_y=True)


# --------------------------------------------------------------------------- NumPy values
def test_grid_search_over_numpy_grids():
    search = GridSearchCV(
        LVQMLNClassifier(max_iter=3),
        {"latent_dim": np.arange(2, 4), "batch_size": np.array([32, 64])},
        cv=2,
    )
    search.fit(X, Y)
    assert set(search.cv_results_["param_latent_dim"]) == {2, 3}


def test_numpy_scalars_and_arrays_everywhere():
    estimator = LVQMLNClassifier(
        max_iter=np.int64(2),
        batch_size=np.int64(32),
        hidden_sizes=np.array([8]),
        lr=np.float32(0.01),
        n_prototypes_per_class=np.int32(2),
    ).fit(X, Y)
    hparams = estimator.module_hparams_
    assert hparams["hidden_sizes"] == [8] and type(hparams["hidden_sizes"][0]) is int
    assert type(hparams["n_prototypes_per_class"]) is int and type(hparams["lr"]) is float

    model = LVQMLN(hidden_sizes=np.array([5, 3]), latent_dim=np.int64(3), seed=np.int64(1))
    datamodule = ArrayDataModule(X, Y, batch_size=np.int64(50), seed=np.int16(0))
    quiet_trainer(max_epochs=1).fit(model, datamodule=datamodule)
    assert model.hparams.hidden_sizes == [5, 3] and type(model.hparams.latent_dim) is int
    assert model.prototypes.shape == (3, 3)
    assert MLPBackbone(np.int64(4), np.array([6]), np.int64(2)).layers[0].out_features == 6


def test_n_prototypes_per_class_with_an_unknown_class_is_an_error():
    counts = {0: 1, 1: 1, 2: 1, 9: 2}
    with pytest.raises(ValueError, match=r"unknown classes \[9\]; the classes are \[0, 1, 2\]"):
        LVQMLNClassifier(max_iter=1, n_prototypes_per_class=counts).fit(X, Y)
    with pytest.raises(ValueError, match=r"unknown classes \[9\]"):
        LVQMLN(in_features=4, n_classes=3, n_prototypes_per_class=counts)


@pytest.mark.parametrize(
    ("lookahead", "match"),
    [
        ({"sync_period": 2, "step": 0.5}, r"Unknown lookahead keys \['step'\]. Valid keys"),
        ({"sync_period": 0}, "lookahead sync_period must be an integer >= 1"),
        ({"slow_step_size": 1.5}, r"lookahead slow_step_size must be a number in \(0, 1\]"),
        ([6, 0.5], "lookahead must be a dict or None with keys sync_period, slow_step_size"),
    ],
)
def test_lookahead_is_checked_by_the_module_and_the_estimator(lookahead, match):
    with pytest.raises(ValueError, match=match):
        LVQMLN(lookahead=lookahead)
    with pytest.raises(ValueError, match=match):
        LVQMLNClassifier(max_iter=1, lookahead=lookahead).fit(X, Y)


def test_lookahead_defaults_fill_missing_keys():
    assert check_lookahead("lookahead", {"sync_period": np.int64(3)}) == {
        "sync_period": 3,
        "slow_step_size": 0.5,
    }
    assert LVQMLN(lookahead={}).hparams.lookahead == {"sync_period": 6, "slow_step_size": 0.5}


# --------------------------------------------------------------------------- constraints
def test_constraints_convert_and_name_the_valid_choices():
    assert Integer(1)("n", np.int64(3)) == 3 and Integer(1, none=True)("n", None) is None
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got True"):
        Integer(1)("n", True)
    assert Real(0.0, low_open=True)("lr", np.float32(0.5)) == 0.5
    for bad in (0.0, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="lr must be a positive number"):
            Real(0.0, low_open=True)("lr", bad)
    with pytest.raises(ValueError, match=r"Valid activations: relu, tanh or None"):
        Options(("relu", "tanh"), none=True, noun="activations")("activation", "gelu")
    assert IntegerList(1)("hidden_sizes", np.array([4, 2])) == [4, 2]
    assert IntegerList(1)("hidden_sizes", ()) == []
    with pytest.raises(ValueError, match="a list of 3 integers >= 1"):
        IntegerList(1, length=3)("input_shape", [1, 8])
    with pytest.raises(ValueError, match=r"Unknown kw keys \['c'\]. Valid keys: a, b"):
        Keywords(("a", "b"))("kw", {"a": 1, "c": 2})


def test_plain_values():
    value = {"a": np.int64(1), "b": (np.float32(0.5), np.array([1, 2])), "c": torch.tensor([3])}
    assert plain(value) == {"a": 1, "b": [0.5, [1, 2]], "c": [3]}
    with pytest.raises(ValueError, match="f is <function"):
        plain({"x": lambda: 0}, "f", strict=True)


def test_head_winner_and_rival_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    z, prototypes = torch.randn(50, 3, generator=generator), torch.randn(6, 3, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    result = PrototypeHead.winner_rival(PrototypeHead.distances(z, prototypes), labels)
    d = ((z[:, None, :] - prototypes[None]) ** 2).sum(-1)
    for i in range(len(z)):
        winner = int(d[i].argmin())
        others = [j for j in range(6) if labels[j] != labels[winner]]
        rival = others[int(d[i, others].argmin())]
        assert (int(result.winner[i]), int(result.rival[i])) == (winner, rival)
        assert float(result.rival_distance[i]) == pytest.approx(float(d[i, rival]), rel=1e-5)


# --------------------------------------------------------------------------- lazy imports
def test_estimator_numpy_path_never_imports_lightning(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from sklearn.datasets import load_iris
        from lvqmln_torch import LVQMLNClassifier
        X, y = load_iris(return_X_y=True)
        estimator = LVQMLNClassifier(max_iter=5).fit(X, y)
        assert estimator.engine_ == "numpy"
        estimator.predict(X), estimator.predict_proba(X), estimator.transform(X)
        estimator.save({str(tmp_path / "model.pt")!r})
        LVQMLNClassifier.load({str(tmp_path / "model.pt")!r}).predict(X)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "lightning")
        assert not loaded, loaded
        assert estimator.model_.__class__.__name__ == "LVQMLN"  # on demand, with Lightning
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
