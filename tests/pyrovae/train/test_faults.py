"""Faults survived: SIGTERM / Ctrl-C, kill -9 (also during a checkpoint write), a full disk,
an I/O error, and two processes on one run directory."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyrovae import checkpoint
from pyrovae.build import build_pair
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.errors import CheckpointError, TrainingInterrupted
from pyrovae.infer.objectives import make_objective
from pyrovae.train.fit import fit

# eager: the signal is sent from inside the objective, which a traced step would not call
CFG = TrainConfig(epochs=3, batch_size=32, log_every=5, engine="eager")
TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--batch-size", "256",
        "--no-progress"]


def data():
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(160, 784, generator=g) ** 2, generator=g)  # 5 steps/epoch


def pair():
    torch.manual_seed(0)
    return build_pair(ModelConfig(latent_dim=2, hidden=8), x_dim=784)


class CallHook:
    """The ELBO, with ``action()`` run during loss evaluation number ``at`` (1-based)."""

    def __init__(self, at, action):
        self.elbo, self.at, self.action, self.calls = make_objective("elbo"), at, action, 0

    def differentiable_loss(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            self.action()
        return self.elbo.differentiable_loss(*args, **kwargs)


def params(model, guide):
    return [p.detach().clone() for p in (*model.parameters(), *guide.parameters())]


def uninterrupted(tmp_path):
    model, guide = pair()
    history = fit(model, guide, data(), CFG, run_dir=tmp_path / "straight", progress=False)
    return history, params(model, guide)


@pytest.mark.parametrize("signum, at", [(signal.SIGTERM, 8), (signal.SIGINT, 3),
                                        (signal.SIGTERM, 5)])
def test_a_signal_stops_at_a_step_and_resume_is_bit_exact(tmp_path, signum, at):
    """The signal arrives during training step ``at`` (5 steps an epoch: mid-epoch for 8
    and 3, where the checkpoint holds the position inside the epoch; the epoch's last step
    for 5, where the ordinary end-of-epoch checkpoint is the one kept)."""
    want_history, want = uninterrupted(tmp_path)
    model, guide = pair()
    hook = CallHook(at, lambda: os.kill(os.getpid(), signum))
    with pytest.raises(TrainingInterrupted, match="continue with --resume") as info:
        fit(model, guide, data(), CFG, run_dir=tmp_path / "cut", progress=False, objective=hook)
    assert info.value.signum == signum
    model, guide = pair()  # a fresh process would rebuild from scratch, then resume
    history = fit(model, guide, data(), CFG, run_dir=tmp_path / "cut", resume=True,
                  progress=False)
    assert all(torch.equal(a, b) for a, b in zip(params(model, guide), want))
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(history) == drop(want_history)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == CFG.epochs


def test_a_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, guide = pair()
    real, calls = torch.save, []

    def failing_save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: the disk fills half way through
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is "
                                              "intact"):
        fit(model, guide, data(), CFG, run_dir=tmp_path / "r", progress=False)
    assert checkpoint.load(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    assert not list((tmp_path / "r").glob(".*.tmp"))


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        def fill():
            with open(disk / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass

        model, guide = pair()
        with pytest.raises(CheckpointError, match="No space left on device"):
            fit(model, guide, data(), CFG, run_dir=disk / "r", progress=False,
                objective=CallHook(7, fill))  # during epoch 2, after the first checkpoint
        (disk / "filler").unlink()
        assert checkpoint.load(disk / "r" / "checkpoint.pt")["epoch"] == 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def cli_process(run_dir, *flags):
    return subprocess.Popen([sys.executable, "-m", "pyrovae.cli", "train", "--run-dir",
                             str(run_dir), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, timeout=60):
    t0 = time.monotonic()
    while not path.is_file():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


def test_sigterm_through_the_command_line_then_resume(tmp_path):
    flags = TINY[2:] + ["--epochs", "12"]
    straight = cli_process(tmp_path / "a", *flags)
    cut = cli_process(tmp_path / "b", *flags)
    wait_for(tmp_path / "b" / "checkpoint.pt")
    cut.send_signal(signal.SIGTERM)
    _, err = cut.communicate(timeout=120)
    assert cut.returncode == 128 + signal.SIGTERM, err
    assert err.strip().endswith("continue with --resume") and "Traceback" not in err
    resumed = cli_process(tmp_path / "b", "--resume", "--no-progress")
    assert resumed.wait(timeout=120) == 0 and straight.wait(timeout=120) == 0
    a = checkpoint.load(tmp_path / "a" / "checkpoint.pt")
    b = checkpoint.load(tmp_path / "b" / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 12
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_repeated_kill_9_always_leaves_a_loadable_checkpoint(tmp_path):
    run_dir = tmp_path / "r"
    flags = TINY[2:] + ["--epochs", "40"]
    for attempt in range(3):
        proc = cli_process(run_dir, *(flags if attempt == 0 else flags + ["--resume"]))
        wait_for(run_dir / "checkpoint.pt")
        time.sleep(0.3 + 0.4 * attempt)
        proc.kill()  # SIGKILL: no handler runs, possibly in the middle of a write
        proc.wait()
        state = checkpoint.load(run_dir / "checkpoint.pt")
        assert 1 <= state["epoch"] <= 40
    finish = cli_process(run_dir, *flags, "--resume")
    assert finish.wait(timeout=300) == 0, finish.stderr.read()
    assert checkpoint.load(run_dir / "checkpoint.pt")["epoch"] == 40
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 40
    assert not list(run_dir.glob(".*.tmp"))  # a killed write's temporary file is swept


KILL_DURING_WRITE = """
import os, signal, sys, torch
real, calls = torch.save, []
def save(obj, f, *a, **k):
    calls.append(1)
    if len(calls) == 2:  # half of the second checkpoint is on disk, then kill -9
        f.write(b"x" * 1000)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
from pyrovae.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_checkpoint_write(tmp_path):
    run_dir = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_WRITE, "train", "--run-dir",
                           str(run_dir), *TINY[2:], "--epochs", "3"], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert list(run_dir.glob(".checkpoint.pt.*.tmp"))  # the half-written file
    assert checkpoint.load(run_dir / "checkpoint.pt")["epoch"] == 1  # the last complete one
    finish = cli_process(run_dir, "--resume", "--no-progress")
    assert finish.wait(timeout=120) == 0
    assert checkpoint.load(run_dir / "checkpoint.pt")["epoch"] == 3


HOLD_LOCK = """
import sys, time
from pyrovae.runs import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_two_processes_cannot_train_into_one_run_directory(tmp_path, cli):
    run_dir = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for extra in ([], ["--overwrite"]):
            code, _, err = cli("train", "--run-dir", run_dir, *TINY, *extra)
            assert code == 2 and f"in use by process {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
    code, _, _ = cli("train", "--run-dir", run_dir, *TINY)  # released when the holder died
    assert code == 0
