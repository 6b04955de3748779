"""One optimizer group when the prototypes and the backbone train alike, and saved optimizer
states matched to the grouping of the run that resumes them.

torch's optimizers loop over their parameter groups in Python and run their update once per
group (for Adam on the CPU: ``_single_tensor_adam`` per group, its bookkeeping each time). The
module's two groups (``prototypes``, ``backbone``) differ only when ``bb_lr`` differs from
``lr``; with equal settings an element-wise optimizer updates every element of both groups
the same way, so one group (``"all"``) computes the same step with one call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MERGED", "merge_equal_groups", "regroup_checkpoint", "regroup_optimizer_state"]

MERGED = "all"  # the name of the one group over the prototypes and the backbone
_PARTS = ("prototypes", "backbone")


def merge_equal_groups(groups: list[dict[str, Any]], elementwise: bool) -> list[dict[str, Any]]:
    """``groups`` (the module's ``prototypes`` then ``backbone`` groups), as one group named
    ``"all"`` over the parameters of both, in the same
    order, when both exist, their settings (``lr`` and any other key) are equal and the
    optimizer is ``elementwise`` (it updates every element independently, as all of
    ``OPTIMIZERS`` do); otherwise ``groups``
    unchanged."""
    if not elementwise or [g.get("name") for g in groups] != list(_PARTS):
        return groups
    settings = [{k: v for k, v in g.items() if k not in ("params", "name")} for g in groups]
    if settings[0] != settings[1]:
        return groups
    params = [p for g in groups for p in g["params"]]
    return [{**groups[0], "params": params, "name": MERGED}]


def regroup_optimizer_state(
    state: Mapping[str, Any], names: Sequence[str], sizes: Sequence[int]
) -> dict[str, Any]:
    """A saved optimizer state dict with its parameter groups matched to the groups ``names``
    of ``sizes`` parameters each: the two groups ``prototypes`` and ``backbone`` merged into
    ``all``, or ``all`` split into those two. A state already grouped so is returned as is.

    torch numbers the parameters of a state dict consecutively across its groups, and the
    merged group lists the two groups' parameters in their order, so the per-parameter state
    (Adam's moments, step counts) keeps its keys; only ``param_groups`` changes. The settings
    of the merged group are those of its first part (equal by construction: the run merges only
    groups with equal settings, and a split group's parts both take its settings).

    Raises:
        ValueError: when the saved groups hold a different number of parameters than
            ``sizes``, so the state does not belong to this model.
    """
    groups = state["param_groups"]
    saved = [g.get("name") for g in groups]
    names = list(names)
    if saved == names:
        return dict(state)
    total = sum(len(g["params"]) for g in groups)
    if total != sum(sizes):
        raise ValueError(
            f"the saved optimizer state has {total} parameters in groups {saved}, but the model "
            f"trains {sum(sizes)} in groups {names}"
        )
    if saved == list(_PARTS) and names == [MERGED]:
        params = [i for g in groups for i in g["params"]]
        new_groups = [{**groups[0], "params": params, "name": MERGED}]
    elif saved == [MERGED] and names == list(_PARTS):
        params = list(groups[0]["params"])
        new_groups = [
            {**groups[0], "params": params[: sizes[0]], "name": _PARTS[0]},
            {**groups[0], "params": params[sizes[0] :], "name": _PARTS[1]},
        ]
    else:
        return dict(state)  # another grouping: torch's own checks report a mismatch
    return {**state, "param_groups": new_groups}


def _regroup_lists(state: dict[str, Any], saved: int, wanted: int) -> dict[str, Any]:
    """A scheduler's state with its per-group lists (``base_lrs``, ``_last_lr``) cut to or
    repeated for ``wanted`` groups (their entries are equal when groups merge or split)."""
    return {
        k: (v[:1] * wanted if isinstance(v, list) and len(v) == saved and saved != wanted else v)
        for k, v in state.items()
    }


def regroup_checkpoint(
    checkpoint: dict[str, Any], names: Sequence[str], sizes: Sequence[int]
) -> None:
    """Match a Lightning checkpoint's optimizer and scheduler states to the groups ``names``
    of ``sizes`` parameters each, in place (see
    [`regroup_optimizer_state`][lvqmln_torch.training.groups.regroup_optimizer_state]): a
    checkpoint saved with two groups resumes a run that trains with one, and the other way
    round. A checkpoint without optimizer states (weights only) is left alone."""
    states = checkpoint.get("optimizer_states")
    if not states or len(states) != 1:
        return
    saved = len(states[0]["param_groups"])
    states[0] = regroup_optimizer_state(states[0], names, sizes)
    schedulers = checkpoint.get("lr_schedulers")
    if schedulers and len(schedulers) == 1 and saved != len(names):
        schedulers[0] = _regroup_lists(schedulers[0], saved, len(names))
