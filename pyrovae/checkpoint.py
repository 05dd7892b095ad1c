"""Atomic save and safe load of a run's state.

A checkpoint is written to a temporary file in the same directory and renamed over the
old one (``os.replace`` is atomic on POSIX), so a crash mid-write leaves the previous
checkpoint intact.  Loading uses ``torch.load(weights_only=True)``: no pickled code runs.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import CheckpointError

FORMAT_VERSION = 1


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, nested dicts/lists) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the checkpoint the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
