"""Prototype initialisers. They work in latent space, on ``z = untrained_backbone(X_train)``.

Every initialiser returns class-blocked prototypes: all prototypes of class 0 first, then
class 1, and so on; labels are class indices ``0 … k−1``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "INITIALIZERS",
    "SAMPLE_INITIALIZERS",
    "check_initializer",
    "initialize_prototypes",
    "prototype_labels_for",
    "resolve_prototypes_per_class",
]

InitializerFn = Callable[..., Tensor]
PrototypesPerClass = int | Sequence[int] | Mapping[Any, int]


def resolve_prototypes_per_class(
    n_per_class: PrototypesPerClass, n_classes: int, classes: Sequence[Any] | None = None
) -> list[int]:
    """Normalise ``n_prototypes_per_class`` to one count per class index.

    Args:
        n_per_class: an int ≥ 1, a list indexed by class, or a dict class → count. Dict keys are
            original labels when ``classes`` is given (class indices are accepted too).
        n_classes: number of classes ``k``.
        classes: optional original labels, in class-index order.

    Returns:
        ``k`` counts.

    Raises:
        ValueError: for counts < 1, a list of the wrong length or a dict missing a class.
    """

    def check(count: Any, where: str) -> int:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"n_prototypes_per_class{where} must be an integer >= 1, got {count!r}"
            )
        return count

    if isinstance(n_per_class, Mapping):
        known = set(range(n_classes)) | set(classes if classes is not None else ())
        unknown = [k for k in n_per_class if k not in known]
        if unknown:
            valid = list(classes) if classes is not None else list(range(n_classes))
            raise ValueError(
                f"n_prototypes_per_class has entries for unknown classes {unknown}; the classes "
                f"are {valid}"
            )
        counts = []
        for index in range(n_classes):
            label = classes[index] if classes is not None else index
            if label in n_per_class:
                counts.append(check(n_per_class[label], f"[{label!r}]"))
            elif index in n_per_class:
                counts.append(check(n_per_class[index], f"[{index!r}]"))
            else:
                raise ValueError(
                    f"n_prototypes_per_class has no entry for class {label!r}; "
                    f"give a count for every class, got keys {sorted(map(repr, n_per_class))}"
                )
        return counts
    if isinstance(n_per_class, Sequence) and not isinstance(n_per_class, str):
        if len(n_per_class) != n_classes:
            raise ValueError(
                f"n_prototypes_per_class has {len(n_per_class)} entries but there are "
                f"{n_classes} classes"
            )
        return [check(c, f"[{i}]") for i, c in enumerate(n_per_class)]
    return [check(n_per_class, "")] * n_classes


def prototype_labels_for(counts: Sequence[int], device: torch.device | None = None) -> Tensor:
    """Class-blocked labels: ``counts[0]`` zeros, then ``counts[1]`` ones, …"""
    # Built in Python: torch.repeat_interleave costs ~10 ms per call on CPU for these few items.
    labels = [c for c, n in enumerate(counts) for _ in range(int(n))]
    return torch.tensor(labels, dtype=torch.long, device=device)


def _class_indices(y: Tensor, c: int) -> Tensor:
    indices = torch.nonzero(y == c, as_tuple=True)[0]
    if indices.numel() == 0:
        raise ValueError(
            f"class index {c} has no training samples; every class needs at least one sample "
            "to initialise its prototypes from data"
        )
    return indices


def stratified_random(
    z: Tensor, y: Tensor, counts: Sequence[int], generator: torch.Generator | None = None
) -> Tensor:
    """Random training samples per class, without replacement unless the class is smaller than
    its count (then with replacement, and a warning)."""
    chosen = []
    for c, n in enumerate(counts):
        indices = _class_indices(y, c)
        if indices.numel() < n:
            warnings.warn(
                f"class index {c} has {indices.numel()} samples but {n} prototypes; "
                "sampling with replacement, so some prototypes start identical",
                UserWarning,
                stacklevel=3,
            )
            pick = torch.randint(indices.numel(), (n,), generator=generator)
        else:
            pick = torch.randperm(indices.numel(), generator=generator)[:n]
        chosen.append(indices[pick.to(indices.device)])
    return z[torch.cat(chosen)].clone()


def class_mean(z: Tensor, y: Tensor, counts: Sequence[int], generator=None) -> Tensor:
    """The class mean, copied ``counts[c]`` times."""
    means = [z[_class_indices(y, c)].mean(dim=0, keepdim=True) for c in range(len(counts))]
    return torch.cat([m.expand(n, -1) for m, n in zip(means, counts)]).clone()


def stratified_noise(
    z: Tensor,
    y: Tensor,
    counts: Sequence[int],
    generator: torch.Generator | None = None,
    noise_std: float = 0.1,
) -> Tensor:
    """``stratified_random`` plus ``noise_std · N(0, 1)``."""
    prototypes = stratified_random(z, y, counts, generator)
    noise = torch.randn(prototypes.shape, generator=generator, dtype=prototypes.dtype)
    return prototypes + noise_std * noise.to(prototypes.device)


def _shaped(z: Tensor, counts: Sequence[int]) -> tuple[tuple[int, int], dict]:
    return (sum(counts), z.shape[1]), {"dtype": z.dtype}


def random_normal(z, y, counts, generator=None, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Independent ``N(mean, std²)`` entries."""
    shape, kw = _shaped(z, counts)
    return (mean + std * torch.randn(shape, generator=generator, **kw)).to(z.device)


def uniform(z, y, counts, generator=None, low: float = 0.0, high: float = 1.0) -> Tensor:
    """Independent ``U(low, high)`` entries."""
    shape, kw = _shaped(z, counts)
    return (low + (high - low) * torch.rand(shape, generator=generator, **kw)).to(z.device)


def fill_value(z, y, counts, generator=None, value: float = 0.0) -> Tensor:
    """Every entry equal to ``value``."""
    shape, kw = _shaped(z, counts)
    return torch.full(shape, float(value), device=z.device, **kw)


def zeros(z, y, counts, generator=None) -> Tensor:
    """All zeros."""
    return fill_value(z, y, counts, value=0.0)


def ones(z, y, counts, generator=None) -> Tensor:
    """All ones."""
    return fill_value(z, y, counts, value=1.0)


INITIALIZERS: dict[str, InitializerFn] = {
    "stratified_random": stratified_random,
    "class_mean": class_mean,
    "class_conditional_mean": class_mean,
    "stratified_noise": stratified_noise,
    "random_normal": random_normal,
    "uniform": uniform,
    "zeros": zeros,
    "ones": ones,
    "fill_value": fill_value,
}
"""Initializer name → its function ``f(z, y, counts, generator)`` returning the
prototypes, shape ``(sum(counts), latent_dim)``."""

SAMPLE_INITIALIZERS = frozenset(
    {"stratified_random", "class_mean", "class_conditional_mean", "stratified_noise"}
)
"""The initializers that draw on each class's samples (every class must occur in the
data)."""


def check_initializer(method: str | Callable, kwargs: Mapping[str, Any] | None = None) -> None:
    """Fail fast on an unknown initializer name or keyword arguments it does not take.

    Raises:
        ValueError: naming the valid initializers or the accepted keywords.
    """
    kwargs = dict(kwargs or {})
    if callable(method):
        return
    if method not in INITIALIZERS:
        raise ValueError(
            f"Unknown prototypes_initializer {method!r}. Valid initializers: "
            f"{', '.join(INITIALIZERS)}, or a callable (z, y, n_per_class, generator)"
        )
    accepted = list(inspect.signature(INITIALIZERS[method]).parameters)[4:]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"prototypes_initializer {method!r} got unknown prototypes_initializer_kwargs "
            f"{unknown}; valid keys: {accepted or 'none'}"
        )


def initialize_prototypes(
    z: Tensor,
    y: Tensor,
    counts: Sequence[int],
    method: str | Callable = "stratified_random",
    generator: torch.Generator | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Initial prototypes in latent space.

    Args:
        z: ``(n, d)`` latent codes of the training samples.
        y: ``(n,)`` class indices.
        counts: prototypes per class index (see [`resolve_prototypes_per_class`][lvqmln_torch.core.initializers.resolve_prototypes_per_class]).
        method: a name from [`INITIALIZERS`][lvqmln_torch.core.initializers.INITIALIZERS] or a callable
            ``(z, y, n_per_class, generator) -> (prototypes, labels)``.
        generator: random generator (the model seeds it).
        **kwargs: keyword arguments of the initialiser (``noise_std``, ``mean``, ``std``,
            ``low``, ``high``, ``value``); passed on to a callable as keywords.

    Returns:
        ``(P, d)`` prototypes and ``(P,)`` class-blocked labels, ``P = sum(counts)``.

    Raises:
        ValueError: for an unknown name or a keyword the initialiser does not take.
    """
    if callable(method):
        prototypes, labels = method(z, y, list(counts), generator, **kwargs)
        prototypes = torch.as_tensor(prototypes, dtype=z.dtype, device=z.device)
        labels = torch.as_tensor(labels, dtype=torch.long, device=z.device)
        if prototypes.dim() != 2 or prototypes.shape[1] != z.shape[1]:
            raise ValueError(
                f"custom initializer returned prototypes of shape {tuple(prototypes.shape)}; "
                f"expected (P, {z.shape[1]})"
            )
        if labels.shape != (prototypes.shape[0],):
            raise ValueError(
                f"custom initializer returned {labels.shape} labels for "
                f"{prototypes.shape[0]} prototypes"
            )
        return prototypes, labels
    check_initializer(method, kwargs)
    try:
        prototypes = INITIALIZERS[method](z, y, counts, generator, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"prototypes_initializer {method!r}: bad keyword arguments ({err})"
        ) from err
    return prototypes, prototype_labels_for(counts, device=z.device)
