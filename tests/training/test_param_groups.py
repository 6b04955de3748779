"""One optimizer group when the prototypes and the backbone train alike; checkpoints saved
with either grouping resume with the other."""

from __future__ import annotations

import copy

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lvqmln_torch.lightning.model as model_module
from lvqmln_torch import LVQMLN, ArrayDataModule, load_builtin
from lvqmln_torch.training.groups import (
    MERGED,
    merge_equal_groups,
    regroup_checkpoint,
    regroup_optimizer_state,
)


def _groups(lr=0.1, bb_lr=0.1):
    torch.manual_seed(0)
    protos = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    backbone = [torch.nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in [(2, 4), (2,)]]
    return [
        {"params": [protos], "lr": lr, "name": "prototypes"},
        {"params": backbone, "lr": bb_lr, "name": "backbone"},
    ]


def test_equal_groups_merge_in_order_and_others_stay():
    groups = _groups()
    merged = merge_equal_groups(groups, elementwise=True)
    assert [g["name"] for g in merged] == [MERGED]
    assert merged[0]["params"] == groups[0]["params"] + groups[1]["params"]
    assert merged[0]["lr"] == 0.1
    different = _groups(bb_lr=0.01)
    assert merge_equal_groups(different, elementwise=True) is different
    assert len(merge_equal_groups(groups, elementwise=False)) == 2  # e.g. a line search
    assert len(merge_equal_groups(groups[1:], elementwise=True)) == 1  # prototypes frozen
    assert merge_equal_groups(groups[1:], elementwise=True)[0]["name"] == "backbone"


def _step(optimizer, params, seed):
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=generator)
    optimizer.step()


@pytest.mark.parametrize("direction", ["merge", "split"])
@pytest.mark.parametrize(
    ("optimizer", "kwargs"),
    [(torch.optim.Adam, {"amsgrad": True}), (torch.optim.SGD, {"momentum": 0.9})],
)
def test_a_regrouped_state_continues_the_same_steps(direction, optimizer, kwargs):
    saved_groups = _groups()
    if direction == "split":
        saved_groups = merge_equal_groups(saved_groups, elementwise=True)
    params = [p for g in saved_groups for p in g["params"]]
    first = optimizer(saved_groups, **kwargs)
    for seed in range(3):
        _step(first, params, seed)
    state = copy.deepcopy(first.state_dict())  # as read from a file: no shared tensors

    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    new_groups = [{"params": [copies[0]], "lr": 0.1, "name": "prototypes"}]
    new_groups.append({"params": copies[1:], "lr": 0.1, "name": "backbone"})
    if direction == "merge":
        new_groups = merge_equal_groups(new_groups, elementwise=True)
    second = optimizer(new_groups, **kwargs)
    names = [g["name"] for g in new_groups]
    sizes = [len(g["params"]) for g in new_groups]
    with pytest.raises(ValueError, match="different number of parameter groups"):
        second.load_state_dict(state)  # what a resume did without regrouping
    second.load_state_dict(regroup_optimizer_state(state, names, sizes))
    assert [g["name"] for g in second.param_groups] == names
    for seed in range(3, 6):
        _step(first, params, seed)
        _step(second, copies, seed)
    for p, q in zip(params, copies):
        torch.testing.assert_close(q, p, rtol=1e-14, atol=0)


def test_a_state_of_another_model_is_refused():
    state = torch.optim.Adam(_groups()).state_dict()
    with pytest.raises(ValueError, match="has 3 parameters in groups .* but the model trains 4"):
        regroup_optimizer_state(state, [MERGED], [4])


def test_scheduler_lists_follow_the_groups():
    optimizer = torch.optim.Adam(_groups())
    checkpoint = {
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [{"base_lrs": [0.1, 0.1], "_last_lr": [0.1, 0.1], "last_epoch": 4}],
    }
    regroup_checkpoint(checkpoint, [MERGED], [3])
    assert [g["name"] for g in checkpoint["optimizer_states"][0]["param_groups"]] == [MERGED]
    assert checkpoint["lr_schedulers"][0] == {"base_lrs": [0.1], "_last_lr": [0.1], "last_epoch": 4}
    regroup_checkpoint(checkpoint, ["prototypes", "backbone"], [1, 2])
    assert checkpoint["lr_schedulers"][0]["base_lrs"] == [0.1, 0.1]


def _trainer(callbacks=(), **kw):
    return L.Trainer(
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def _dm():
    X, y = load_builtin("iris")
    return ArrayDataModule(X, y, test_size=0.3, batch_size=32, seed=3, standardize=True)


@pytest.mark.parametrize("saved_with", ["two groups", "one group"])
def test_a_checkpoint_resumes_across_groupings(saved_with, tmp_path, monkeypatch):
    # lr == bb_lr: this version trains one group; 0.1 saved two (simulated by not merging).
    kwargs = {"lr": 0.05, "seed": 0, "lr_scheduler": "cosine_decay"}
    unmerged = lambda groups, elementwise: groups  # noqa: E731
    if saved_with == "two groups":
        monkeypatch.setattr(model_module, "merge_equal_groups", unmerged)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    full = LVQMLN(**kwargs)
    _trainer([checkpoints], max_epochs=4).fit(full, _dm())
    saved = torch.load(tmp_path / "epoch=1.ckpt", weights_only=True)
    assert len(saved["optimizer_states"][0]["param_groups"]) == (2 if "two" in saved_with else 1)
    monkeypatch.undo()
    if saved_with == "one group":
        monkeypatch.setattr(model_module, "merge_equal_groups", unmerged)

    resumed = LVQMLN(**kwargs)
    trainer = _trainer(max_epochs=4, enable_checkpointing=False)
    trainer.fit(resumed, _dm(), ckpt_path=tmp_path / "epoch=1.ckpt", weights_only=True)
    assert len(trainer.optimizers[0].param_groups) == (1 if "two" in saved_with else 2)
    assert trainer.global_step == 16
    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7, msg=name)
    # the resumed half moved the weights (the comparison is not between two saved states)
    assert not torch.equal(saved["state_dict"]["prototypes"], resumed.prototypes.detach())
