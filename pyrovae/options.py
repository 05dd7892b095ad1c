"""Config dataclasses <-> command-line flags: one ``--flag`` per field, written once.

Each field's flag is its name with dashes, typed by its default, with the help line of
``metadata["help"]`` (see :func:`pyrovae.config.option`) and the default appended.  Flags
default to ``None`` so that "not given" is visible: :func:`config_from_args` overlays only
the given ones on a base config (the defaults, or a resumed run's own config).
"""
from __future__ import annotations

import argparse
import dataclasses
import math


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=`` for spans and scales: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser, cls, *, skip=()) -> None:
    """Add one flag per field of the dataclass ``cls`` to ``parser`` (or an argument group)."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        text = f.metadata.get("help", f.name.replace("_", " "))
        if isinstance(f.default, bool):
            parser.add_argument(flag(f.name), dest=f.name, action="store_true", default=None,
                                help=f"{text} (default: off)")
            continue
        parser.add_argument(flag(f.name), dest=f.name, type=type(f.default), default=None,
                            metavar=f.name.upper(), help=f"{text} (default: {f.default})")


def given(args, cls, *, skip=()) -> dict:
    """The fields of ``cls`` that were given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def config_from_args(args, cls, base=None, **fixed):
    """``base`` (default ``cls()``) with the given flags and ``fixed`` values applied."""
    return dataclasses.replace(base if base is not None else cls(),
                               **{**given(args, cls, skip=tuple(fixed)), **fixed})
