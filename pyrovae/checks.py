"""Field rules for config dataclasses, checked once where a config is built.

A field declares its rule in ``option(default, help, rule)``; :func:`validate` (called from
``__post_init__``) checks every field and raises one :class:`~pyrovae.errors.PyroVAEError`
that names the config, the field (as its flag), the bad value and the valid range.  The
command line, the Python API and ``--resume`` of an old run all build configs the same way,
so all three get the same checks.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, Iterable

from pyrovae.errors import PyroVAEError


class Rule:
    """``rule.error(value) -> None`` when ``value`` is valid, else the reason."""

    def error(self, value) -> str | None:
        raise NotImplementedError


class Int(Rule):
    """An integer (not a bool) in ``[low, high]``."""

    def __init__(self, low: int | None = None, high: int | None = None):
        self.low, self.high = low, high

    def error(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return "an integer"
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            return f"an integer {_range(self.low, self.high, '[', ']')}"
        return None


class Real(Rule):
    """A finite number in ``low <(=) x <(=) high`` (``strict``: open at ``low``;
    ``below``: open at ``high``)."""

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 strict: bool = False, below: bool = False):
        self.low, self.high, self.strict, self.below = low, high, strict, below

    def error(self, value):
        what = f"a finite number {_range(self.low, self.high, '(' if self.strict else '[', ')' if self.below else ']')}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return what
        if self.low is not None and (value < self.low or (self.strict and value == self.low)):
            return what
        if self.high is not None and (value > self.high or (self.below and value == self.high)):
            return what
        return None


class OneOf(Rule):
    """One of a set of names (given, or computed when checked, e.g. from the registry)."""

    def __init__(self, names: Iterable[str] | Callable[[], Iterable[str]]):
        self.names = names

    def error(self, value):
        names = list(self.names() if callable(self.names) else self.names)
        return None if value in names else f"one of {', '.join(map(str, names))}"


class Check(Rule):
    """``fn(value)`` raises a :class:`PyroVAEError` (e.g. an objective name's parser)."""

    def __init__(self, fn: Callable, what: str):
        self.fn, self.what = fn, what

    def error(self, value):
        if not isinstance(value, str):
            return self.what
        self.fn(value)
        return None


def _range(low, high, open_, close) -> str:
    if low is not None and high is not None:
        return f"in {open_}{low}, {high}{close}"
    if low is not None:
        return f"{'>' if open_ == '(' else '>='} {low}"
    if high is not None:
        return f"{'<' if close == ')' else '<='} {high}"
    return ""


def validate(config) -> None:
    """Check every field of a config dataclass against the rule in its metadata."""
    for f in dataclasses.fields(config):
        rule = f.metadata.get("rule")
        value = getattr(config, f.name)
        if rule is None or (value is None and f.default is None):
            continue
        why = rule.error(value)
        if why is not None:
            flag = "--" + f.name.replace("_", "-")
            raise PyroVAEError(f"{type(config).__name__}.{f.name} ({flag}) = {value!r} is "
                               f"invalid: it must be {why}")
