"""The package's layout: layers import only from the layers below them (never from a sibling),
modules stay small, few modules sit at the top; and lvqmln 0.1's module paths still serve what
names them (pickles, LightningCLI ``class_path`` entries, user imports)."""

from __future__ import annotations

import ast
import importlib
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import lvqmln_torch
from lvqmln_torch._compat import OLD_MODULE_PATHS

PACKAGE = Path(lvqmln_torch.__file__).parent
NAME = "lvqmln_torch"
#: Subpackage → layer; a module imports only from lower layers and its own subpackage.
LAYERS = {"core": 0, "data": 1, "training": 1, "viz": 1, "lightning": 2, "io": 3, "sklearn": 4}
TOP = 5  # the package's own modules: __init__, _compat, the CLIs, the demo
MAX_LINES = 400
MAX_TOP_MODULES = 10


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(dotted: str) -> tuple[int, str]:
    """``(layer, subpackage)`` of a module of the package."""
    parts = dotted.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    return TOP, ""


def _is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or subpackage file of the package."""
    if not dotted.startswith(NAME + "."):
        return False
    relative = PACKAGE.joinpath(*dotted.split(".")[1:])
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import of the package in ``path``, lazy ones in
    functions included; ``from X import name`` counts ``X.name`` when that is a module."""
    dotted = _dotted(path)
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else module))
    return [(line, m) for line, m in found if m == NAME or m.startswith(NAME + ".")]


def test_layers_import_only_from_below():
    violations = []
    for path in _modules():
        source_layer, source_package = _layer(_dotted(path))
        for line, target in _imports(path):
            layer, package = _layer(target)
            upward = layer > source_layer
            sideways = layer == source_layer and package != source_package
            if upward or sideways:
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                violations.append(f"{where} imports {target}")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_the_layer_check_sees_a_violation():
    # The checker itself: a core module importing the LightningModule is caught.
    fake = PACKAGE / "core" / "network.py"
    source = fake.read_text() + "\nfrom ..lightning.model import LVQMLN\n"
    targets = [target for _, target in _imports(fake, source)]
    assert "lvqmln_torch.lightning.model" in targets
    assert _layer("lvqmln_torch.lightning.model")[0] > _layer(_dotted(fake))[0]


def test_modules_are_small_and_few_at_the_top():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


# ---------------------------------------------------------------------------- 0.1's paths
@pytest.mark.parametrize("old", sorted(OLD_MODULE_PATHS))
def test_old_module_path_is_the_new_module(old):
    module = importlib.import_module(f"{NAME}.{old}")
    assert module is importlib.import_module(f"{NAME}.{OLD_MODULE_PATHS[old]}")


def test_old_callback_class_is_the_new_class():
    from lvqmln_torch.callbacks.patience import PatienceStopping as Old

    from lvqmln_torch.lightning.callbacks.patience import PatienceStopping

    assert Old is PatienceStopping


def _with_old_module_paths(data: bytes) -> bytes:
    """A protocol-0 pickle with every module of the package named by its 0.1 path."""
    new_to_old = {f"{NAME}.{new}": f"{NAME}.{old}" for old, new in OLD_MODULE_PATHS.items()}

    def old_name(match: re.Match) -> bytes:
        module = match.group(1).decode()
        return b"c" + new_to_old.get(module, module).encode() + b"\n"

    return re.sub(rb"c(lvqmln_torch(?:\.\w+)+)\n", old_name, data)


def test_a_pickle_naming_the_old_module_paths_loads_and_predicts():
    from sklearn.datasets import load_iris

    from lvqmln_torch import LVQMLNClassifier

    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    fitted = LVQMLNClassifier(max_iter=20, random_seed=1).fit(X, y)
    data = _with_old_module_paths(pickle.dumps(fitted, protocol=0))
    named = set(re.findall(rb"c(lvqmln_torch(?:\.\w+)+)\n", data))
    assert b"lvqmln_torch.estimator" in named and b"lvqmln_torch.network" in named
    assert not any(m.split(b".")[1].decode() in LAYERS for m in named), named
    # The old names resolve through the import finder, not through modules cached by name.
    for old in OLD_MODULE_PATHS:
        sys.modules.pop(f"{NAME}.{old}", None)
    loaded = pickle.loads(data)
    assert type(loaded) is LVQMLNClassifier
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), rtol=1e-6)


@pytest.mark.parametrize(
    ("class_path", "base", "init_args"),
    [
        ("lvqmln_torch.datasets.BuiltinDataModule", "datamodule", {"name": "wine"}),
        ("lvqmln_torch.data.ArrayDataModule", "datamodule", {"X": [[0.0], [1.0]], "y": [0, 1]}),
        ("lvqmln_torch.callbacks.StallDetection", "callback", {"after": 7}),
    ],
)
def test_old_class_paths_resolve(class_path, base, init_args):
    from jsonargparse import ArgumentParser
    from lightning.pytorch import Callback, LightningDataModule

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--part", type=LightningDataModule if base == "datamodule" else Callback)
    config = parser.parse_object({"part": {"class_path": class_path, "init_args": init_args}})
    part = parser.instantiate(config).part
    assert type(part) is cls
    key, value = next(iter(init_args.items()))
    if key == "after":
        assert part.rule.after == value
    elif key == "name":
        assert part.name == value and part.n_classes == 3
    else:
        assert part.n_classes == 2


def test_every_public_name_imports():
    for name in lvqmln_torch.__all__:
        namespace: dict = {}
        exec(f"from lvqmln_torch import {name}", namespace)
        assert namespace[name] is getattr(lvqmln_torch, name)


def test_every_public_module_has_an_api_page_in_the_nav() -> None:
    """A new module is documented where its layer is: ``docs/api/<subpackage>/<module>.md``
    (``docs/api/cli/`` for the top-level ones; a nested package such as ``lightning.callbacks``
    on its package's page) renders it, and ``mkdocs.yml`` lists the page."""
    docs = PACKAGE.parent / "docs" / "api"
    nav = (PACKAGE.parent / "mkdocs.yml").read_text()
    missing = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        if path.name == "__init__.py" or any(part.startswith("_") for part in rel):
            continue
        shown = rel[:2] if len(rel) > 2 else rel if len(rel) > 1 else ("cli", *rel)
        page = Path("api", *shown).with_suffix(".md")
        target = ".".join([NAME, *rel[:2]]) if len(rel) > 2 else _dotted(path)
        renders = (docs.parent / page).is_file() and target in (docs.parent / page).read_text()
        if not renders or page.as_posix() not in nav:
            missing.append(f"{_dotted(path)} -> docs/{page.as_posix()}")
    assert not missing, "modules without an API page in the nav:\n" + "\n".join(missing)


def test_an_old_path_leaves_the_module_its_own_spec() -> None:
    """Importing a 0.1 path must not relabel the module: its ``__spec__`` stays its own, so
    the relative imports inside its functions raise no ``ImportWarning``."""
    for old, new in OLD_MODULE_PATHS.items():
        sys.modules.pop(f"{NAME}.{old}", None)
        module = importlib.import_module(f"{NAME}.{old}")
        assert module.__spec__.name == f"{NAME}.{new}"
        assert module.__spec__.parent == module.__package__


def test_the_scripts_outside_the_package_import_names_that_exist() -> None:
    """Benchmarks, docs scripts and examples are not run by the suite: a name they import from
    the package that moved or vanished would only show when someone runs them."""
    root = PACKAGE.parent
    scripts = [*root.glob("benchmarks/*.py"), *root.glob("docs/*.py"), *root.glob("examples/*.py")]
    missing = []
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text())):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith(NAME)):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{script.relative_to(root)}: {node.module}.{alias.name}")
    assert scripts and not missing, "\n".join(missing)
