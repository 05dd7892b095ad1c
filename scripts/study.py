"""What every study script does first: its threads and its output folder."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pyrovae import machine_info


def prepare(args) -> Path:
    """Apply ``args.threads`` (when set) and create ``args.out``; returns it as a Path."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_jsonl(path) -> list[dict]:
    """The records of a JSON-lines file (one run per line; blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_results(stem, payload: dict, lines: list[str]) -> str:
    """``STEM.json`` (``payload`` plus the machine) and ``STEM.md`` (``lines`` plus the
    machine); returns the Markdown."""
    info = machine_info()
    lines = [*lines, "", f"{info['cpu']} ({info['cpu_count']} cores), torch {info['torch']}."]
    out = Path(stem)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**payload, "machine": info}, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
