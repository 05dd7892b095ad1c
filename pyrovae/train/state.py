"""What every training loop keeps between epochs: checkpoints, metrics, random streams and
the divergence guard.  ``fit`` and the VQ-VAE plugin's loops share these, so all runs
resume, log and stop the same way.

- The checkpoint holds parameters, optimizer, epoch, RNG states, config and history:
  everything needed to continue bit-for-bit.
- ``metrics.jsonl`` always equals the checkpoint's history: one line is appended after
  each checkpoint, and a resume rewrites the file from the checkpoint (dropping lines a
  crash left behind it).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from pyrovae import checkpoint
from pyrovae.errors import TrainingDiverged


def rng_state(gen: torch.Generator) -> dict:
    """torch's global stream (latent noise), the data generator and every CUDA stream."""
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_finite(value: float, epoch: int, run_dir, what: str = "training loss", *,
                 where: str = "", diagnose=None) -> None:
    """Stop cleanly when ``value`` is NaN or infinite, saying where, what went non-finite
    (``diagnose()`` -> text, called only then) and which checkpoint survives."""
    if not math.isfinite(value):
        kept = (f"the last good checkpoint (end of epoch {epoch}) is kept in {run_dir}"
                if run_dir is not None and epoch > 0 else "no checkpoint was written")
        detail = diagnose() if diagnose is not None else ""
        raise TrainingDiverged(f"{what} became {value} during epoch {epoch + 1}{where}"
                               f"{f' ({detail})' if detail else ''}; {kept}; try a lower --lr")


class MetricsLog:
    """``metrics.jsonl`` (or another name) of a run directory; no file without a directory."""

    def __init__(self, run_dir, name: str = "metrics.jsonl"):
        self.path = Path(run_dir) / name if run_dir is not None else None

    def append(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def rewrite(self, history: list[dict]) -> None:
        if self.path is not None:
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in history)


def save_state(path, weights: dict, optimizer, *, epoch: int, history: list[dict],
               config_json: str, rng_ranks: list, **extra) -> None:
    """One atomic checkpoint of a loop: ``weights`` (key -> state dict), the optimizer, every
    rank's random streams (``rng_ranks``, rank order; one entry in one process) and any
    ``extra`` loop state (e.g. the position inside an interrupted epoch)."""
    checkpoint.save({"config": config_json or "{}", "optimizer": optimizer.state_dict(),
                     "epoch": epoch, "rng": rng_ranks[0], "rng_ranks": rng_ranks,
                     "history": json.dumps(history), **weights, **extra}, path)


def restore_state(path, load_weights, optimizer, *, map_location) -> dict:
    """Load a :func:`save_state` checkpoint: ``load_weights(state, path)`` puts the weights
    back, the optimizer is restored here; returns the state with ``history`` decoded."""
    state = checkpoint.load(path, map_location=map_location)
    load_weights(state, path)
    optimizer.load_state_dict(state["optimizer"])
    return {**state, "history": json.loads(state["history"]),
            "rng_ranks": state.get("rng_ranks", [state["rng"]])}
