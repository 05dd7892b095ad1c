"""What every study script does first: its threads and its output folder."""
from __future__ import annotations

from pathlib import Path

import torch


def prepare(args) -> Path:
    """Apply ``args.threads`` (when set) and create ``args.out``; returns it as a Path."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out
