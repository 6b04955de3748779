"""CsvDataModule, CSV reading errors, and the CSV prediction writer."""

import csv
import os

import numpy as np
import pytest
import torch
from _trainers import quiet_trainer
from sklearn.datasets import load_iris

from lvqmln_torch import LVQMLN
from lvqmln_torch.core.files import atomic_write
from lvqmln_torch.data.csv_datamodule import (
    CsvDataModule,
    CsvPredictionWriter,
    read_csv_table,
    write_predictions_csv,
)


def _write(path, text):
    path.write_text(text)
    return path


def _iris_csv(path, target="species", with_target=True, rows=None):
    bunch = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    index = range(len(bunch.data)) if rows is None else rows
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names + ([target] if with_target else []))
        for i in index:
            label = [bunch.target_names[bunch.target[i]]] if with_target else []
            writer.writerow([*bunch.data[i].tolist(), *label])
    return path


_trainer = quiet_trainer


def test_reads_features_and_string_labels(tmp_path):
    path = _iris_csv(tmp_path / "iris.csv")
    X, y, names = read_csv_table(path, target="species")
    bunch = load_iris()
    np.testing.assert_allclose(X, bunch.data)
    assert names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert y.tolist() == bunch.target_names[bunch.target].tolist()


def test_integer_labels_feature_subset_and_whitespace(tmp_path):
    path = _write(tmp_path / "d.csv", "a, b ,c,label\n1, 2,3, 7\n4,5,6,3\n\n7,8,9,7\n")
    X, y, names = read_csv_table(path, target="label", features=["c", "a"])
    assert names == ["c", "a"]
    np.testing.assert_array_equal(X, [[3, 1], [6, 4], [9, 7]])
    assert y.dtype.kind == "i" and y.tolist() == [7, 3, 7]


def test_datamodule_splits_standardises_and_knows_its_sizes(tmp_path):
    path = _iris_csv(tmp_path / "iris.csv")
    dm = CsvDataModule(str(path), target="species", test_size=0.2, val_size=0.25, seed=3)
    assert dm.n_features == 4 and dm.n_classes == 3
    assert dm.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert dm.feature_names_ == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    x_train = dm.train_tensors()[0]
    assert len(x_train) == 90
    np.testing.assert_allclose(x_train.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(0, unbiased=False).numpy(), 1.0, atol=1e-5)


def test_predict_path_without_target_column(tmp_path):
    train = _iris_csv(tmp_path / "train.csv")
    new = _iris_csv(tmp_path / "new.csv", with_target=False, rows=[0, 60, 120])
    dm = CsvDataModule(str(train), target="species", predict_path=str(new), standardize=True)
    x = dm.predict_dataloader().tensors[0]
    expected = (load_iris().data[[0, 60, 120]] - dm.mean_) / dm.scale_
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-5)


def test_trains_and_predicts_string_labels(tmp_path):
    path = _iris_csv(tmp_path / "iris.csv")
    dm = CsvDataModule(str(path), target="species", test_size=0.2)
    model = LVQMLN(lr=0.05)
    _trainer(max_epochs=60).fit(model, dm)
    x_test, y_test = dm.test_dataloader().tensors[:2]
    predicted = model.predict(x_test)
    assert set(predicted.tolist()) <= {"setosa", "versicolor", "virginica"}
    assert np.mean(predicted == dm.classes_[y_test.numpy()]) >= 0.8


@pytest.mark.parametrize(
    "content, kwargs, error, match",
    [
        ("", {}, ValueError, "is empty"),
        ("\n  \n", {}, ValueError, "is empty"),
        ("a,b,label\n", {}, ValueError, "has a header but no data rows"),
        (
            "a,b,label\n1,2,x\n",
            {"target": "cls"},
            ValueError,
            r"target column 'cls' not found .*columns are \['a', 'b', 'label'\]",
        ),
        (
            "a,b,c,label\n1,x,z,0\n2,3,y,1\n",
            {},
            ValueError,
            r"non-numeric feature columns .*'b' \(line 2: 'x'\); 'c' \(line 2: 'z'\)",
        ),
        ("a,b,label\n1,2,0\n3,,1\n", {}, ValueError, r"column 'b' .*missing .*line 3"),
        ("a,b,label\n1,2,0\n3,4\n", {}, ValueError, "line 3: 2 fields but the header has 3"),
        ("a,a,label\n1,2,0\n", {}, ValueError, r"duplicate column names: \['a'\]"),
        (
            "a,b,label\n1,2,0\n",
            {"features": ["a", "q"]},
            ValueError,
            r"feature columns \['q'\] not found",
        ),
        (
            "a,b,label\n1,2,0\n",
            {"features": ["a", "label"]},
            ValueError,
            "cannot also be a feature",
        ),
        ("label\n0\n", {}, ValueError, "no feature columns"),
        ("a,label\n1,0\n2,\n", {}, ValueError, r"target column has an empty value \(line 3\)"),
    ],
)
def test_clear_errors(tmp_path, content, kwargs, error, match):
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(error, match=match):
        read_csv_table(path, **{"target": "label", **kwargs})


def test_binary_file_is_reported(tmp_path):
    (tmp_path / "blob.csv").write_bytes(b"a,b\n\xff\xfe\x00\x01,2\n")
    with pytest.raises(ValueError, match="is not a readable UTF-8 CSV file"):
        read_csv_table(tmp_path / "blob.csv", target="b")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="CSV file not found: .*nope.csv"):
        CsvDataModule(str(tmp_path / "nope.csv"))
    path = _iris_csv(tmp_path / "iris.csv")
    with pytest.raises(FileNotFoundError, match="other.csv"):
        CsvDataModule(str(path), target="species", predict_path=str(tmp_path / "other.csv"))
    _write(tmp_path / "short.csv", "sepal_length,sepal_width\n1,2\n")
    with pytest.raises(ValueError, match=r"feature columns \['petal_length', 'petal_width'\]"):
        CsvDataModule(str(path), target="species", predict_path=str(tmp_path / "short.csv"))


def test_write_predictions_csv(tmp_path):
    path = write_predictions_csv(
        tmp_path / "sub" / "p.csv",
        np.array(["b", "a"]),
        torch.tensor([[0.25, 0.75], [0.5, 0.5]]),
        ["a", "b"],
        latent=torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
    )
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["prediction", "proba_a", "proba_b", "latent_0", "latent_1"]
    assert rows[1] == ["b", "0.25", "0.75", "1.0", "2.0"]
    assert rows[2] == ["a", "0.5", "0.5", "3.0", "4.0"]
    assert os.listdir(path.parent) == ["p.csv"]
    with pytest.raises(ValueError, match=r"probabilities must have shape \(2, 3\)"):
        write_predictions_csv(tmp_path / "q.csv", [0, 1], np.ones((2, 2)), [0, 1, 2])
    assert not (tmp_path / "q.csv").exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_prediction_writer_matches_model(tmp_path):
    path = _iris_csv(tmp_path / "iris.csv")
    dm = CsvDataModule(str(path), target="species", test_size=0.2, batch_size=7)
    model = LVQMLN(lr=0.05, latent_dim=3)
    _trainer(max_epochs=5).fit(model, dm)
    writer = CsvPredictionWriter(tmp_path / "pred.csv", latent=True)
    _trainer(callbacks=[writer]).predict(model, dm, return_predictions=False)
    assert writer.written == tmp_path / "pred.csv"
    rows = list(csv.DictReader(writer.written.open()))
    x = dm.predict_dataloader().tensors[0]
    assert [r["prediction"] for r in rows] == model.predict(x).tolist()
    proba = np.array([[float(r[f"proba_{c}"]) for c in dm.classes_] for r in rows])
    np.testing.assert_allclose(proba, model.predict_proba(x).numpy(), rtol=1e-6, atol=1e-7)
    latent = np.array([[float(r[f"latent_{i}"]) for i in range(3)] for r in rows])
    np.testing.assert_allclose(latent, model.transform(x).numpy(), rtol=1e-6, atol=1e-7)
