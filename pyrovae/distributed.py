"""Several processes with ``torch.distributed`` (one per device): data-parallel training, and
evaluation sharded by datapoints (:mod:`pyrovae.evaluation.bounds` and ``marginal``).

Launch the ordinary CLI under ``torchrun`` (or ``python -m torch.distributed.run``)::

    torchrun --nproc_per_node 4 -m pyrovae.cli train --dataset mnist --data-dir DIR ...

How the work is split (:func:`pyrovae.train.fit.fit` does this whenever a process group is
initialised):

* every rank holds the whole dataset on its own device (MNIST-sized data fits anywhere);
* each epoch rank 0's permutation is broadcast, and global batch ``b`` --
  ``perm[b*B:(b+1)*B]`` with ``B = --batch-size`` -- is split into disjoint strided
  shards ``[rank::world]``: ``DistributedSampler``'s rule, applied per batch, so that
  ``--batch-size`` means the same global batch for any number of processes;
* the pair's ELBO module (:class:`pyrovae.train.step.PairLoss`, Pyro's ``objective(model,
  guide)``) is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  all-reduces gradients during backward.  The loss is a *sum* over datapoints while DDP
  *averages* over ranks, so :class:`~pyrovae.train.step.TrainStep` scales the backward pass by
  the world size: each update is exactly the single-process update on the global batch
  (up to float summation order);
* ranks draw independent latent noise and binarizations (seeds offset by rank; rank 0
  uses the single-process seeds), and only rank 0 evaluates, checkpoints (with every
  rank's RNG state, so ``--resume`` continues each rank's streams), writes metrics and
  figures.

Backends: NCCL for CUDA devices (rank ``r`` on local GPU ``LOCAL_RANK``), gloo on CPU.
"""
from __future__ import annotations

import atexit
import inspect
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from pyrovae.errors import PyroVAEError

# rank r seeds its generators with seed + r * RANK_SEED_STRIDE: disjoint from any seed < 2**32
RANK_SEED_STRIDE = 2 ** 32


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` data-parallel processes (size 1: no group)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's seed for the run seed ``seed`` (rank 0 keeps ``seed``)."""
        return seed + self.rank * RANK_SEED_STRIDE

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's disjoint part of a global batch of indices."""
        return batch if self.size == 1 else batch[self.rank::self.size]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` under DDP (gradients all-reduced in buckets during backward).

        Buffers are not re-broadcast every step: pyrovae's buffers are constants (prior
        locations and scales) and the initial broadcast already makes them equal.
        """
        if self.size == 1:
            return module
        device = next(module.parameters()).device
        # the option's name changed in torch 2.14; both keep the initial broadcast
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                   inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            **{no_sync: False})

    def same_as_main(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` in place with rank 0's copy."""
        if self.size > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over ranks (a new tensor; the input is left alone)."""
        if self.size == 1:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def my_batches(self, n: int, batch_size: int) -> range:
        """Start indices of this rank's batches of ``n`` datapoints: global batch ``b``
        (datapoints ``[b*B, (b+1)*B)``) belongs to rank ``b % size``."""
        return range(self.rank * batch_size, n, batch_size * self.size)

    def gather_batches(self, items: list) -> list:
        """Every rank's per-batch ``items`` (one per batch of :meth:`my_batches`, picklable)
        in global batch order, on every rank."""
        if self.size == 1:
            return items
        parts = self.gather(items)
        return [parts[b % self.size][b // self.size] for b in range(sum(map(len, parts)))]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def from_main(self, obj):
        """Rank 0's ``obj`` (picklable) on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current() -> World:
    """The world of the initialised default process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(rank=dist.get_rank(), size=dist.get_world_size())
    return World()


def launched(environ) -> bool:
    """Whether ``environ`` says this process was started by torchrun with several ranks."""
    return int(environ.get("WORLD_SIZE", "1")) > 1


def setup(environ, device: torch.device) -> tuple[World, torch.device]:
    """For the CLI: join torchrun's process group when ``environ`` (``os.environ``) says
    it started several ranks, else stay a single process; returns ``(world, device)``."""
    if not launched(environ):
        return World(), device
    world, device = init(device, local_rank=int(environ.get("LOCAL_RANK", "0")))
    atexit.register(shutdown)
    return world, device


def init(device: torch.device, *, local_rank: int = 0, init_method: str = "env://",
         rank: int | None = None, world_size: int | None = None) -> tuple[World, torch.device]:
    """Join the process group; returns ``(world, this rank's device)``.

    ``device`` is the resolved ``--device``: on CUDA each rank takes GPU ``local_rank``
    and NCCL; on CPU gloo.  With ``init_method="env://"`` (torchrun) the rank and world
    size come from the environment; pass them (and a ``tcp://host:port`` method) to start
    processes yourself.
    """
    if not dist.is_available():
        raise PyroVAEError("this torch build has no torch.distributed; train in one process")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise PyroVAEError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} "
                               f"visible); use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {} if rank is None else {"rank": rank, "world_size": world_size}
    dist.init_process_group(backend, init_method=init_method, **kwargs)
    return current(), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
