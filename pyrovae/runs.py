"""Run directories: create, read and bring back to life.

A run directory holds ``config.json`` (a :class:`~pyrovae.config.RunConfig`, plus any
sections a plugin adds), ``checkpoint.pt``, ``metrics.jsonl``, figures and the evaluation
reports.  Every stage that needs "a run on disk" -- training, evaluation, figures, the
VQ-VAE plugin -- comes here; nothing reaches into the command line for it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
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
    """The directory to train into: an existing one only with ``resume`` or ``overwrite``;
    a one-line error when it is a file, cannot be created or is not writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PyroVAEError(f"--run-dir {path} is a file, not a directory; choose another path")
    if resume:
        if not (path / "checkpoint.pt").is_file():
            raise PyroVAEError(f"--resume: no checkpoint in {path}; start a new run without --resume")
    elif path.exists() and any(path.iterdir()):
        if not overwrite:
            raise PyroVAEError(f"run directory {path} already exists; pass --resume to continue it, "
                               f"--overwrite to replace it, or choose another --run-dir")
        try:
            shutil.rmtree(path)
        except OSError as e:
            raise PyroVAEError(f"--overwrite: cannot remove {path} ({e.strerror})") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PyroVAEError(f"cannot create run directory {path} ({e.strerror}); choose another "
                           f"--run-dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PyroVAEError(f"run directory {path} is not writable; fix its permissions or "
                           f"choose another --run-dir")
    return path


_HELD: dict[str, int] = {}  # lock files this process holds -> how many times


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold ``.<name>.lock`` beside ``run_dir`` (an flock, released when the process dies,
    even by kill -9) so two processes never train into, or overwrite, one run at once."""
    run_dir = Path(run_dir).absolute()
    lock = run_dir.parent / f".{run_dir.name}.lock"
    key = str(lock)
    if key in _HELD:  # re-entered by this process (the CLI around fit, then fit)
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
    except OSError as e:
        raise PyroVAEError(f"cannot lock run directory {run_dir} ({e.strerror}); choose another "
                           f"--run-dir") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise PyroVAEError(f"run directory {run_dir} is in use by {holder}; wait for it to "
                               f"finish or choose another --run-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}")
        f.flush()
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


def read_raw_config(run_dir) -> dict:
    """``config.json`` of a run as a dict; a one-line error when it is missing, truncated
    or not a JSON object."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise PyroVAEError(f"{run_dir} is not a pyrovae run directory (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PyroVAEError(f"{path} is not valid JSON (truncated or corrupt: {e}); restore it "
                           f"or start a new run") from None
    if not isinstance(raw, dict):
        raise PyroVAEError(f"{path} holds a JSON {type(raw).__name__}, not a run configuration")
    return raw


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
