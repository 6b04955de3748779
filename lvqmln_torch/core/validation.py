"""One place for the rules that parameters follow, in the spirit of scikit-learn's parameter
constraints: every entry point (the module, the estimator, the data modules, and through them
the CLI) validates its arguments here once, converting NumPy scalars and arrays to plain Python
values, and the layers below trust what they receive.

A constraint is a callable ``constraint(name, value) -> converted value`` that raises a
``ValueError`` naming the parameter and the valid choices. [`validate`][lvqmln_torch.core.validation.validate] applies a table of
them. The domain rules that several entry points share (``freeze``, ``lookahead``,
``n_prototypes_per_class``, the class count, sample weights) are functions here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "FREEZABLE",
    "LOOKAHEAD_DEFAULTS",
    "Boolean",
    "Check",
    "Integer",
    "IntegerList",
    "Keywords",
    "Options",
    "Real",
    "check_freeze",
    "check_lookahead",
    "check_n_classes",
    "check_n_prototypes_per_class",
    "check_sample_weight",
    "needs_minibatches_error",
    "plain",
    "validate",
]

FREEZABLE = ("backbone", "prototypes")
"""The parts whose training can be frozen (the entries of ``freeze``)."""
LOOKAHEAD_DEFAULTS = {"sync_period": 6, "slow_step_size": 0.5}
"""Lookahead's settings when not given (upstream's): every ``sync_period`` steps the slow
weights move ``slow_step_size`` of the way to the fast ones."""


def plain(value: Any, name: str | None = None, strict: bool = False) -> Any:
    """``value`` with NumPy (and JAX) scalars and arrays and tensors turned into Python values,
    recursively through dicts, lists and tuples (tuples become lists).

    Args:
        value: anything.
        name: the parameter's name, for the error of ``strict``.
        strict: raise unless the result is made of ``None``, bools, numbers, strings, lists and
            dicts only (what ``torch.load(weights_only=True)`` and YAML can hold).

    Raises:
        ValueError: with ``strict``, for a value that is not plain (a callable, an object).
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray) or (hasattr(value, "__array__") and hasattr(value, "shape")):
        return np.asarray(value).tolist()
    if isinstance(value, Mapping):
        return {plain(k, name, strict): plain(v, name, strict) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, name, strict) for v in value]
    if strict:
        raise ValueError(
            f"{name} is {value!r} ({type(value).__name__}), but only plain values (names, "
            "numbers, lists, dicts) can be stored; use a name for it, or pickle the object instead"
        )
    return value


def _or_none(text: str, none: bool) -> str:
    return f"{text} or None" if none else text


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


class Integer:
    """An integer ``>= minimum`` (NumPy integers accepted), returned as ``int``.

    Args:
        minimum: the smallest valid value.
        none: ``None`` is valid too.
        text: what the error says a valid value is (default ``"an integer >= minimum"``).
    """

    def __init__(self, minimum: int = 1, none: bool = False, text: str | None = None) -> None:
        self.minimum, self.none = minimum, none
        self.text = text or _or_none(f"an integer >= {minimum}", none)

    def __call__(self, name: str, value: Any) -> int | None:
        if value is None and self.none:
            return None
        if not _is_integer(value) or value < self.minimum:
            raise ValueError(f"{name} must be {self.text}, got {value!r}")
        return int(value)


class Real:
    """A finite real number in an interval (NumPy numbers accepted), returned as ``float``.

    Args:
        low: the interval's lower end (``None``: unbounded).
        high: its upper end (``None``: unbounded).
        low_open: exclude the lower end.
        high_open: exclude the upper end.
        none: ``None`` is valid too.
    """

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
        none: bool = False,
    ) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.none = none
        if low == 0 and low_open and high is None:
            text = "a positive number"
        elif high is None and low is not None:
            text = f"a number >= {low:g}"
        elif low is None and high is None:
            text = "a finite number"
        else:
            text = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        self.text = _or_none(text, none)

    def __call__(self, name: str, value: Any) -> float | None:
        if value is None and self.none:
            return None
        ok = _is_real(value) and math.isfinite(float(value))
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"{name} must be {self.text}, got {value!r}")
        return float(value)


class Boolean:
    """``True`` or ``False`` (NumPy bools accepted), returned as ``bool``.

    Args:
        none: ``None`` is valid too.
    """

    def __init__(self, none: bool = False) -> None:
        self.none = none

    def __call__(self, name: str, value: Any) -> bool | None:
        if value is None and self.none:
            return None
        if not isinstance(value, bool | np.bool_):
            also = ", or None" if self.none else ""
            raise ValueError(f"{name} must be True or False{also}, got {value!r}")
        return bool(value)


class Options:
    """One of a fixed set of names.

    Args:
        options: the valid names.
        none: ``None`` is valid too.
        noun: the plural the error uses (``"Valid activations: …"``; default ``name`` values).
        also: more valid choices the error names (``"or an nn.Module"``).
    """

    def __init__(
        self, options: Iterable[str], none: bool = False, noun: str | None = None, also: str = ""
    ) -> None:
        self.options, self.none, self.noun, self.also = tuple(options), none, noun, also

    def __call__(self, name: str, value: Any) -> str | None:
        if value is None and self.none:
            return None
        if not isinstance(value, str) or value not in self.options:
            valid = ", ".join(self.options) + (" or None" if self.none else "")
            raise ValueError(
                f"Unknown {name} {value!r}. Valid {self.noun or name + ' values'}: {valid}"
                + (f" {self.also}" if self.also else "")
            )
        return value


class IntegerList:
    """A sequence of integers ``>= minimum`` (a list, tuple or NumPy array), returned as a list.

    Args:
        minimum: the smallest valid entry.
        length: the required length (``None``: any, empty included).
        none: ``None`` is valid too.
    """

    def __init__(self, minimum: int = 1, length: int | None = None, none: bool = False) -> None:
        self.minimum, self.length, self.none = minimum, length, none

    def __call__(self, name: str, value: Any) -> list[int] | None:
        if value is None and self.none:
            return None
        entries = plain(value)
        ok = isinstance(entries, list) and all(
            _is_integer(v) and v >= self.minimum for v in entries
        )
        if ok and self.length is not None:
            ok = len(entries) == self.length
        if not ok:
            size = f"{self.length} " if self.length is not None else ""
            text = _or_none(f"a list of {size}integers >= {self.minimum}", self.none)
            raise ValueError(f"{name} must be {text}, got {value!r}")
        return [int(v) for v in entries]


class Keywords:
    """A dict of keyword arguments, with string keys from ``keys`` (any string when ``None``),
    returned as a plain dict.

    Args:
        keys: the valid keys (``None``: any).
        none: ``None`` is valid too.
    """

    def __init__(self, keys: Iterable[str] | None = None, none: bool = True) -> None:
        self.keys = None if keys is None else tuple(keys)
        self.none = none

    def __call__(self, name: str, value: Any) -> dict[str, Any] | None:
        if value is None and self.none:
            return None
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            valid = f" with keys {', '.join(self.keys)}" if self.keys else ""
            raise ValueError(
                f"{name} must be {_or_none('a dict', self.none)}{valid} (string keys), got "
                f"{value!r}"
            )
        if self.keys is not None:
            unknown = sorted(set(value) - set(self.keys))
            if unknown:
                raise ValueError(
                    f"Unknown {name} keys {unknown}. Valid keys: {', '.join(self.keys)}"
                )
        return {k: plain(v) for k, v in value.items()}


class Check:
    """A constraint from a function ``check(name, value) -> converted value``."""

    def __init__(self, check: Callable[[str, Any], Any]) -> None:
        self.check = check

    def __call__(self, name: str, value: Any) -> Any:
        return self.check(name, value)


Constraint = Callable[[str, Any], Any]


def validate(params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> dict[str, Any]:
    """``params`` checked and converted by their constraints (names without one pass unchanged).

    Raises:
        ValueError: for the first invalid parameter, naming it and the valid choices.
    """
    return {
        name: constraints[name](name, value) if name in constraints else value
        for name, value in params.items()
    }


# ---------------------------------------------------------------------------- domain rules
def check_freeze(name: str, value: Any) -> list[str]:
    """``freeze`` entries: a name or a list of names from [`FREEZABLE`][lvqmln_torch.core.validation.FREEZABLE] (``None``: none)."""
    if value is None:
        return []
    entries = [value] if isinstance(value, str) else plain(value)
    if not isinstance(entries, list):
        raise ValueError(f"{name} must be a list of {', '.join(FREEZABLE)}, got {value!r}")
    unknown = [f for f in entries if f not in FREEZABLE]
    if unknown:
        raise ValueError(f"Unknown {name} entries {unknown}. Valid entries: {', '.join(FREEZABLE)}")
    return entries


_LOOKAHEAD_KEYS = Keywords(LOOKAHEAD_DEFAULTS, none=True)
_SYNC_PERIOD = Integer(1)
_SLOW_STEP_SIZE = Real(0.0, 1.0, low_open=True)


def check_lookahead(name: str, value: Any) -> dict[str, Any] | None:
    """``lookahead``: ``None`` or a dict with keys ``sync_period`` (integer >= 1) and
    ``slow_step_size`` (in (0, 1]); missing keys take [`LOOKAHEAD_DEFAULTS`][lvqmln_torch.core.validation.LOOKAHEAD_DEFAULTS]."""
    settings = _LOOKAHEAD_KEYS(name, value)
    if settings is None:
        return None
    settings = {**LOOKAHEAD_DEFAULTS, **settings}
    return {
        "sync_period": _SYNC_PERIOD(f"{name} sync_period", settings["sync_period"]),
        "slow_step_size": _SLOW_STEP_SIZE(f"{name} slow_step_size", settings["slow_step_size"]),
    }


def check_n_prototypes_per_class(name: str, value: Any) -> int | list[int] | dict[Any, int]:
    """``n_prototypes_per_class``: an integer >= 1, a list of them indexed by class, or a dict
    class label → integer >= 1 (whether the dict covers exactly the classes is checked when the
    classes are known, by [`resolve_prototypes_per_class`][lvqmln_torch.core.initializers.resolve_prototypes_per_class])."""
    value = plain(value)

    def count(entry: Any, where: str) -> int:
        if not _is_integer(entry) or entry < 1:
            raise ValueError(f"{name}{where} must be an integer >= 1, got {entry!r}")
        return int(entry)

    if isinstance(value, Mapping):
        return {k: count(v, f"[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [count(v, f"[{i}]") for i, v in enumerate(value)]
    return count(value, "")


def check_n_classes(n_classes: int, where: str = "the training data") -> None:
    """LVQ needs at least two classes.

    Raises:
        ValueError: naming ``where`` the classes came from.
    """
    if n_classes < 2:
        raise ValueError(
            f"LVQMLN needs at least 2 classes, got {n_classes} class"
            f"{'' if n_classes == 1 else 'es'} in {where}"
        )


def check_sample_weight(weights: Any, n_samples: int, name: str = "sample_weight") -> np.ndarray:
    """``(n_samples,)`` finite, non-negative weights with a positive sum, as float64.

    Raises:
        ValueError: for a wrong shape, negative, non-finite or all-zero weights.
    """
    try:
        weights = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from err
    if weights.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},), got {weights.shape}")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)) or not weights.sum() > 0:
        raise ValueError(f"{name} must be finite and non-negative with a positive sum")
    return weights


def needs_minibatches_error(detail: str) -> ValueError:
    """The error for gradient accumulation over data that come as one full batch per epoch."""
    return ValueError(
        "gradient accumulation needs mini-batches, but the data come as one full batch per "
        f"epoch{detail}: set a (smaller) batch_size or drop the accumulation"
    )
