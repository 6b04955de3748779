"""CSV at scale: pyarrow's reader gives the line-by-line reader's tables (and leaves every odd
file to it, so the errors stay theirs), and csv_to_npy converts a file once for memory-mapped
training, writing nothing partial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _trainers import quiet_trainer

from lvqmln_torch import LVQMLN, ArrayDataModule, csv_read
from lvqmln_torch.data.csv_read import csv_to_npy, read_csv_table

CLEAN = {
    "string-labels": "a,b,label\n1,2.5,x\n3,-4e-3,y\n5,6,x\n",
    "integer-labels": "a,b,label\n1,2,0\n3,4,1\n5,6,1\n",
    "float-labels": "a,b,label\n1,2,0.5\n3,4,1.5\n5,6,1\n",
    "bom-padded-header-blank-line": "\ufeff a ,b ,label\n1,2,x\n\n3,4,y\n",
    "quoted": 'a,b,label\n"1","2","x y"\n3,4," z "\n',
    "semicolons": "a;b;label\n1;2;x\n3;4;y\n",
    "padded-integer-labels": "a,b,label\n1,2, 7\n3,4,8\n",
    "padded-values": "a,b,label\n 1 , 2 ,x\n3,4,y\n",
}
ODD = {  # read by the line-by-line reader, as before
    "whitespace-row": "a,b,label\n1,2,x\n   \n3,4,y\n",
    "underscores": "a,b,label\n1_000,2,x\n3,4,y\n",
    "bool-labels": "a,b,label\n1,2,true\n3,4,false\n",
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _line_by_line(monkeypatch: pytest.MonkeyPatch, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(csv_read, "_read_arrow", lambda *a: None)
        return read_csv_table(*args, **kwargs)


def _assert_tables_equal(a, b) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].dtype == b[0].dtype == np.float64
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1].dtype == b[1].dtype
    assert a[2] == b[2]


@pytest.mark.parametrize("name", list(CLEAN))
def test_pyarrow_reads_clean_files_as_the_line_by_line_reader(monkeypatch, tmp_path, name):
    path = _write(tmp_path, CLEAN[name])
    delimiter = ";" if name == "semicolons" else ","
    fast = csv_read._read_arrow(path, "label", None, delimiter, True)
    assert fast is not None, "a clean file must take the fast path"
    _assert_tables_equal(fast, _line_by_line(monkeypatch, path, delimiter=delimiter))


@pytest.mark.parametrize("name", list(ODD))
def test_odd_files_go_to_the_line_by_line_reader(monkeypatch, tmp_path, name):
    path = _write(tmp_path, ODD[name])
    assert csv_read._read_arrow(path, "label", None, ",", True) is None
    _assert_tables_equal(read_csv_table(path), _line_by_line(monkeypatch, path))


def test_feature_subset_and_file_without_target(tmp_path):
    path = _write(tmp_path, "a,b,c,label\n1,2,3,x\n4,5,6,y\n")
    X, y, names = read_csv_table(path, features=["c", "a"])
    np.testing.assert_array_equal(X, [[3, 1], [6, 4]])
    assert names == ["c", "a"] and y.tolist() == ["x", "y"]
    X, y, _ = read_csv_table(path, target="other", features=["b"], require_target=False)
    assert y is None and X.tolist() == [[2], [5]]


def test_csv_to_npy_then_memory_mapped_training(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(["cat", "dog"], 40)
    features = rng.normal(size=(80, 3)) + 3.0 * (labels == "dog")[:, None]
    lines = ["f0,f1,f2,animal"] + [
        f"{a!r},{b!r},{c!r},{label}" for (a, b, c), label in zip(features.tolist(), labels)
    ]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    x_path, y_path = csv_to_npy(path, tmp_path / "npy", target="animal")
    X, y = np.load(x_path, mmap_mode="r"), np.load(y_path)
    assert X.dtype == np.float32 and X.shape == (80, 3) and y.tolist() == labels.tolist()
    np.testing.assert_allclose(X, features, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "npy").iterdir()) == ["X.npy", "y.npy"]
    dm = ArrayDataModule(x_path, y_path, batch_size=16, standardize=True)
    assert dm.memory_mapped and dm.classes_.tolist() == ["cat", "dog"]
    model = LVQMLN(lr=0.05, seed=0)
    quiet_trainer(max_epochs=5).fit(model, dm)
    assert np.mean(model.predict(dm.transform_inputs(features)) == labels) >= 0.9


def test_failed_conversion_writes_nothing_and_keeps_earlier_outputs(tmp_path):
    out = tmp_path / "npy"
    good = _write(tmp_path, "a,label\n1,x\n2,y\n")
    x_path, y_path = csv_to_npy(good, out)
    before = x_path.read_bytes(), y_path.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,label\n1,x\nq,y\n")
    with pytest.raises(ValueError, match=r"non-numeric feature columns .*'a' \(line 3: 'q'\)"):
        csv_to_npy(bad, out)
    with pytest.raises(ValueError, match="dtype must be a floating type"):
        csv_to_npy(good, out, dtype=np.int32)
    with pytest.raises(FileNotFoundError, match="CSV file not found"):
        csv_to_npy(tmp_path / "none.csv", tmp_path / "elsewhere")
    assert (x_path.read_bytes(), y_path.read_bytes()) == before
    assert sorted(p.name for p in out.iterdir()) == ["X.npy", "y.npy"]
    assert not (tmp_path / "elsewhere").exists()
