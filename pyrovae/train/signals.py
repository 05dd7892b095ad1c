"""SIGTERM and Ctrl-C as requests to stop at the next step boundary.

While training, the first SIGTERM or SIGINT only sets a flag; the loop sees it between
steps, writes a checkpoint of its exact position and raises
:class:`~pyrovae.errors.TrainingInterrupted`.  A second Ctrl-C interrupts at once (the
last complete checkpoint stays loadable: every write is atomic).  Handlers are installed
only in the main thread and restored on exit.  Under data parallelism the ranks agree on
stopping with one all-reduce every ``sync_every`` steps, so they stop at the same step.
"""
from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist


class StopRequests:
    """Context manager; ``agreed(world, step, sync_every)`` says whether to stop now."""

    def __init__(self):
        self.signum = None
        self._old = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "request"

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def agreed(self, world, *, step: int, sync_every: int) -> bool:
        if world.size == 1:
            return self.signum is not None
        if step % sync_every:
            return False
        flag = torch.tensor(float(self.signum or 0))
        flag = world.sum(flag.to(world_device(world)))
        if float(flag) > 0 and self.signum is None:
            self.signum = signal.SIGTERM  # another rank was asked to stop
        return float(flag) > 0


def world_device(world) -> torch.device:
    """The device collectives of this world run on (NCCL needs CUDA tensors)."""
    return (torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl" else torch.device("cpu"))
