"""DDP correctness: a two-process CPU (gloo) run of ``tests/ddp_script.py`` against
single-process runs of the same configurations, float64 throughout.

One launch fits every case of ``ddp_script.CASES`` in turn (a DDP launch costs seconds of
process start-up); the single-process references run here, in the test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from _ddp import load_script, run_ddp_script
from _paths import TESTS
from torch.utils.data import DistributedSampler

from lvqmln_torch import LVQMLN
from lvqmln_torch.lightning.user_data import initialize_from_sample

SCRIPT = TESTS / "ddp_script.py"
ddp_script = load_script(SCRIPT)

# Cases whose global batches equal a single-process run's (ArrayDataModule shards each global
# batch rank::world_size); with class weights the reference is the mean of the two shard losses.
COMPARABLE = {
    "plain": False,
    "ema_lookahead_bblr": False,
    "freeze_backbone_class_weight": True,
    "memmap": False,
}
ATOL = 1e-8


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Run the DDP script once (2 CPU processes) and load every rank's results."""
    out = tmp_path_factory.mktemp("ddp")
    run_ddp_script(SCRIPT, out, timeout=540)
    results = {}
    for name in ddp_script.CASES:
        ranks = [torch.load(out / f"{name}_rank{r}.pt", weights_only=True) for r in range(2)]
        assert [r["rank"] for r in ranks] == [0, 1]
        assert all(r["world_size"] == 2 for r in ranks)
        results[name] = ranks
    return results


_references: dict[str, dict[str, Any]] = {}


def single_process(name: str) -> dict[str, Any]:
    if name not in _references:
        with tempfile.TemporaryDirectory() as data_dir:
            _references[name] = ddp_script.fit_case(
                name, devices=1, shard_mean=COMPARABLE[name], data_dir=Path(data_dir)
            )
    return _references[name]


def assert_states_equal(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), f"{key} differs by {(a[key] - b[key]).abs().max()}"
        else:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("name", list(ddp_script.CASES))
def test_ranks_start_and_end_identical(ddp_results, name):
    rank0, rank1 = ddp_results[name]
    assert rank0["init"]["prototypes"].dtype == torch.float64
    assert_states_equal(rank0["init"], rank1["init"])
    assert_states_equal(rank0["final"], rank1["final"])
    # training really moved the weights
    assert any(not torch.equal(v, rank0["final"][k]) for k, v in rank0["init"].items())
    assert len(rank0["epoch_metrics"]) == ddp_script.EPOCHS


@pytest.mark.parametrize("name", list(ddp_script.CASES))
def test_metrics_synced_across_ranks(ddp_results, name):
    rank0, rank1 = ddp_results[name]
    assert rank0["epoch_metrics"] == rank1["epoch_metrics"]
    assert set(rank0["epoch_metrics"][-1]) == {"train_loss", "train_acc"}


@pytest.mark.parametrize("name", list(COMPARABLE))
def test_equals_single_process_run(ddp_results, name):
    rank0, _ = ddp_results[name]
    reference = single_process(name)
    # Another process computes the initial codes: equal up to rounding, not bitwise.
    assert_states_equal(rank0["init"], reference["init"], atol=1e-12)
    assert_states_equal(rank0["final"], reference["final"], atol=ATOL)
    # The metric states are float32 (torchmetrics), so the synced epoch values agree to that.
    for ddp_epoch, ref_epoch in zip(
        rank0["epoch_metrics"], reference["epoch_metrics"], strict=True
    ):
        for key, value in ref_epoch.items():
            assert ddp_epoch[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_memory_mapped_run_equals_the_in_memory_run(ddp_results):
    """The same DDP run from a memory-mapped .npy file and from memory: the same global
    batches, so the same weights (up to the summation order within a batch)."""
    for mapped, memory in zip(ddp_results["memmap"], ddp_results["plain"], strict=True):
        assert_states_equal(mapped["init"], memory["init"], atol=1e-12)
        assert_states_equal(mapped["final"], memory["final"], atol=ATOL)


def test_frozen_parts_bit_identical(ddp_results):
    for rank in ddp_results["freeze_backbone_class_weight"]:
        for key, value in rank["init"].items():
            if key.startswith("backbone."):
                assert torch.equal(value, rank["final"][key]), key
        assert not torch.equal(rank["init"]["prototypes"], rank["final"]["prototypes"])
    for rank in ddp_results["loader_freeze_prototypes"]:
        assert torch.equal(rank["init"]["prototypes"], rank["final"]["prototypes"])
        key = "backbone.layers.0.weight"
        assert not torch.equal(rank["init"][key], rank["final"][key])


def test_class_weights_follow_per_rank_normalisation(ddp_results):
    """With sample/class weights every rank normalises by its own weight sum and DDP averages
    the gradients: the run equals the shard-mean reference (checked above), not the global
    weighted mean of a plain single-process run (the shards' weight sums differ here)."""
    rank0, _ = ddp_results["freeze_backbone_class_weight"]
    global_mean = ddp_script.fit_case("freeze_backbone_class_weight", devices=1)
    shard_mean = single_process("freeze_backbone_class_weight")
    gap = (global_mean["final"]["prototypes"] - rank0["final"]["prototypes"]).abs().max()
    assert gap > 1e-6
    assert_states_equal(rank0["final"], shard_mean["final"], atol=ATOL)


def test_on_train_start_initialisation_is_rank0_broadcast(ddp_results):
    """A plain DataLoader gets a DistributedSampler: each rank sees other samples when the
    prototypes are initialised in on_train_start; both ranks must end up with rank 0's."""
    rank0, _ = ddp_results["loader_freeze_prototypes"]
    X, y = ddp_script.make_data()
    spec = ddp_script.CASES["loader_freeze_prototypes"]["model"]

    def local_init(rank: int) -> torch.Tensor:
        # Lightning's training sampler under DDP: shuffled, seed 0, epoch 0.
        sampler = DistributedSampler(range(len(X)), num_replicas=2, rank=rank, shuffle=True, seed=0)
        shard = list(sampler)
        model = LVQMLN(**ddp_script.COMMON, **spec).double()
        x, y_shard = torch.as_tensor(X[shard]), torch.as_tensor(y[shard])
        initialize_from_sample(model, model._initializer, lambda: (x, y_shard), "the shard")
        return model.prototypes.detach()

    torch.testing.assert_close(rank0["init"]["prototypes"], local_init(0), rtol=0, atol=1e-12)
    assert (local_init(1) - rank0["init"]["prototypes"]).abs().max() > 1e-3


@pytest.mark.slow
def test_cli_ddp_preset_matches_a_single_process_cli_run(tmp_path):
    """``lvqmln fit`` with ``configs/trainer/ddp.yaml`` on two CPU processes (a third launch,
    so marked slow) ends on the weights of the same command on one process."""
    from lvqmln_torch.cli import main as cli_main
    from lvqmln_torch.io.checkpoint import read_checkpoint

    root = SCRIPT.parent.parent
    common = [
        "fit",
        "--config",
        str(root / "configs" / "iris_mlp.yaml"),
        "--trainer.max_epochs",
        "30",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--data.batch_size",
        "20",  # 120 training samples: 6 global batches of 20 per epoch, 10 per rank
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    ddp = [
        "--config",
        str(root / "configs" / "trainer" / "ddp.yaml"),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "lvqmln_torch.cli", *common, *ddp],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    cli_main(
        [*common, "--trainer.accelerator", "cpu", "--trainer.devices", "1"]
        + ["--trainer.default_root_dir", str(tmp_path / "single")]
    )
    (ddp_ckpt,) = (tmp_path / "ddp").rglob("*.ckpt")
    (single_ckpt,) = (tmp_path / "single").rglob("*.ckpt")
    ddp_state = read_checkpoint(ddp_ckpt)["state_dict"]
    single_state = read_checkpoint(single_ckpt)["state_dict"]
    for key, value in single_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_cnn_input_statistics_are_rank0s_and_broadcast(ddp_results):
    """A CNN fitted from a plain DataLoader measures its input statistics on rank 0's sample in
    on_train_start; both ranks start with those (the ranks-identical test checks rank 1)."""
    rank0, rank1 = ddp_results["loader_cnn"]
    X, _ = ddp_script.make_data()
    images = ddp_script.as_images(X)
    sampler = DistributedSampler(range(len(X)), num_replicas=2, rank=0, shuffle=True, seed=0)
    shard = images[list(sampler)]
    for rank in (rank0, rank1):
        assert rank["init"]["backbone.input_mean"].item() == pytest.approx(shard.mean(), rel=1e-9)
        assert rank["init"]["backbone.input_std"].item() == pytest.approx(shard.std(), rel=1e-9)
    other = images[list(DistributedSampler(range(len(X)), 2, rank=1, shuffle=True, seed=0))]
    assert abs(other.mean() - shard.mean()) > 1e-6  # the shards differ: the broadcast matters


def test_temperature_calibrated_on_the_shards_of_every_rank(ddp_results):
    """Both ranks end on one temperature, fitted on all validation samples: the NLL summed
    over the two shards (the single-process fit of the whole split, up to the search's
    tolerance)."""
    rank0, rank1 = ddp_results["calibrated"]
    t = rank0["final"]["head.temperature"]
    assert torch.equal(t, rank1["final"]["head.temperature"]) and float(t) != 1.0
    reference = ddp_script.fit_case("calibrated", devices=1)["final"]["head.temperature"]
    assert float(t) == pytest.approx(float(reference), rel=1e-3)
