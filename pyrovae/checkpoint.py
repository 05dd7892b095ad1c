"""Atomic save and safe load of a run's state.

A checkpoint goes through :func:`pyrovae.files.atomic_write`, so a crash mid-write leaves
the previous checkpoint intact.  Loading uses ``torch.load(weights_only=True)``: no
pickled code runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError
from pyrovae.files import atomic_write

FORMAT_VERSION = 1


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, nested dicts/lists) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))


def load(path: str | Path, *, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save`; a :class:`CheckpointError` names the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, disallowed pickle content
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({first[:200]}); "
                              f"delete it to start over, or restore a backup") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a pyrovae checkpoint (format "
                              f"{state.get('format_version') if isinstance(state, dict) else '?'}, "
                              f"expected {FORMAT_VERSION})")
    return state


def load_into(modules: dict, state: dict, path) -> None:
    """``module.load_state_dict(state[key])`` for each ``key: module``; a mismatch (another
    model, other sizes) is a :class:`CheckpointError` naming the file."""
    try:
        for key, module in modules.items():
            module.load_state_dict(state[key])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path} does not match this run's config.json "
                              f"({str(e).splitlines()[0][:200]})") from None
