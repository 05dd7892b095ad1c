"""Run directories: create, read and bring back to life.

A run directory holds ``config.json`` (a :class:`~pyrovae.config.RunConfig`, plus any
sections a plugin adds), ``checkpoint.pt``, ``metrics.jsonl``, figures and the evaluation
reports.  Every stage that needs "a run on disk" -- training, evaluation, figures, the
VQ-VAE plugin -- comes here; nothing reaches into the command line for it.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from pyrovae import checkpoint, registry
from pyrovae.build import build_pair
from pyrovae.config import RunConfig
from pyrovae.data import load_dataset
from pyrovae.errors import PyroVAEError
from pyrovae.files import write_json


@dataclass
class Run:
    """A run directory brought back to life on ``device``: config, data and (for a Pyro pair,
    :func:`load_run`) model and guide with the checkpoint's weights, in eval mode."""

    dir: Path
    config: RunConfig
    raw: dict  # config.json as written, plugin sections included
    data: object
    device: torch.device
    model: object = None
    guide: object = None
    state: dict = field(default_factory=dict)


class ModelRunner(Protocol):
    """What a model trained by its own loop (registry kind ``runner``) offers the CLI."""

    def add_train_flags(self, parser) -> None: ...

    def train(self, args, cfg: RunConfig, run_dir: Path) -> int: ...

    def sample(self, args) -> int: ...

    def evaluate(self, args) -> int: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PyroVAEError(f"--device {name} requested but torch sees no CUDA device; "
                           f"use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PyroVAEError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None


def prepare_run_dir(path, *, resume: bool, overwrite: bool) -> Path:
    """The directory to train into: an existing one only with ``resume`` or ``overwrite``."""
    path = Path(path)
    if resume:
        if not (path / "checkpoint.pt").is_file():
            raise PyroVAEError(f"--resume: no checkpoint in {path}; start a new run without --resume")
        return path
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise PyroVAEError(f"run directory {path} already exists; pass --resume to continue it, "
                               f"--overwrite to replace it, or choose another --run-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_raw_config(run_dir) -> dict:
    """``config.json`` of a run as a dict; a one-line error when it is missing or not JSON."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise PyroVAEError(f"{run_dir} is not a pyrovae run directory (no config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PyroVAEError(f"{path} is not valid JSON: {e}") from None


def read_config(run_dir) -> RunConfig:
    return RunConfig.from_dict(read_raw_config(run_dir))


def write_config(run_dir, raw: dict) -> Path:
    return write_json(Path(run_dir) / "config.json", raw)


def open_run(run_dir, *, device: str = "auto") -> Run:
    """A run's configuration and dataset on ``device``, without any model."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PyroVAEError(f"run directory {run_dir} does not exist")
    raw = read_raw_config(run_dir)
    cfg = RunConfig.from_dict(raw)
    dev = resolve_device(device)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=dev,
                        likelihood=cfg.model.likelihood)
    return Run(run_dir, cfg, raw, data, dev)


def load_modules(run: Run, modules: dict, filename: str = "checkpoint.pt") -> dict:
    """Load ``run.dir/filename`` into ``modules`` (key -> nn.Module), move them to the run's
    device in eval mode; returns the checkpoint state."""
    path = run.dir / filename
    state = checkpoint.load(path, map_location=run.device)
    checkpoint.load_into(modules, state, path)
    for module in modules.values():
        module.to(run.device).eval()
    return state


def load_run(run_dir, *, device: str = "auto") -> Run:
    """Rebuild a trained Pyro-pair run: its dataset, model and guide with the checkpoint's
    weights (the VQ-VAE plugin has a loader of its own built on :func:`open_run`)."""
    run = open_run(run_dir, device=device)
    run.model, run.guide = build_pair(run.config.model, x_dim=run.data.x_dim,
                                      num_classes=run.data.num_classes)
    run.state = load_modules(run, {"model": run.model, "guide": run.guide})
    return run


def runner_of(run_dir):
    """The :class:`ModelRunner` registered for the model of the run in ``run_dir``, or None
    (a Pyro pair, or not a run directory: the caller's own loader says what is wrong)."""
    if not (Path(run_dir) / "config.json").is_file():
        return None
    return registry.find("runner", read_config(run_dir).model.model)
