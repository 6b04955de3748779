"""PrototypeProjection under two-process CPU DDP (``tests/ddp_projection_script.py``): every
rank ends identical, each projection picks the nearest same-class sample over all ranks'
data, and a run over an ArrayDataModule equals one process."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _ddp import load_script, run_ddp_script
from _paths import TESTS

SCRIPT = TESTS / "ddp_projection_script.py"
script = load_script(SCRIPT)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("ddp_projection")
    run_ddp_script(SCRIPT, out, timeout=300)
    return {
        name: [torch.load(out / f"{name}_rank{r}.pt", weights_only=True) for r in range(2)]
        for name in script.CASES
    }


@pytest.mark.parametrize("name", script.CASES)
def test_ranks_end_identical_on_the_global_nearest_sample(ranks, name):
    rank0, rank1 = ranks[name]
    assert torch.equal(rank0["sources"], rank1["sources"])
    for key, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][key]), key
    # Every projection (4 epochs + the end) chose the brute-force nearest same-class sample
    # over the whole data set, though each rank searched only its share.
    assert len(rank0["expected"]) == script.EPOCHS + 1
    assert torch.equal(rank0["sources"], rank0["expected"][-1])
    _, y = script.make_data()
    assert torch.equal(torch.as_tensor(y)[rank0["sources"]], rank0["final"]["prototype_labels"])


def test_datamodule_run_equals_one_process(ranks):
    rank0, _ = ranks["datamodule"]
    single = script.fit_case("datamodule", devices=1)
    assert torch.equal(single["sources"], rank0["sources"])
    for before_ddp, before_single in zip(rank0["expected"], single["expected"], strict=True):
        assert torch.equal(before_ddp, before_single)
    for key, value in single["final"].items():
        torch.testing.assert_close(rank0["final"][key], value, rtol=0, atol=1e-8, msg=key)
