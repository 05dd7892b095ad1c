"""The one atomic file writer: checkpoints, configs and reports all go through it.

A file is written to a temporary name in its own directory, flushed and fsync'ed, then
renamed over the old one (``os.replace`` is atomic on POSIX) and the directory entry
fsync'ed.  A crash, a ``kill -9``, a full disk or an I/O error at any point leaves either
the complete old file or the complete new one, never a mixture; the temporary file is
removed when the write fails in-process.  Files get the permissions a plain ``open()``
would give them (``mkstemp`` alone makes them owner-only).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

Content = Union[bytes, str, Callable[[BinaryIO], None]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, content: Content) -> Path:
    """Replace ``path`` with ``content`` (bytes, text, or ``write(binary_file)``) atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not every filesystem supports it
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path, obj: Any) -> Path:
    """``obj`` as indented, key-sorted JSON, written atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete temporary files an interrupted :func:`atomic_write` left (``kill -9`` between
    creating and renaming one); call it only while holding the folder's run lock."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
