"""What ``fit`` trains on: the data as given, cut into minibatches of the pair's arguments.

- a :class:`~pyrovae.data.ImageData`: device-resident tensors, each batch presented as its
  ``train_transform`` says (re-binarized, dequantized or as stored); labels are passed
  when model and guide both take a second argument;
- a tensor ``x`` or a pair ``(x, y)``: device-resident, batches used exactly as given;
- a ``torch.utils.data.DataLoader`` (or a ``Dataset``, loaded with ``cfg.batch_size``)
  yielding ``x`` or ``(x, y)``: each batch moved to the device, nothing else.

Tensor sources draw one permutation per epoch from the fit's own generator, so a resumed
run continues bit-for-bit; under data parallelism each rank takes its strided shard of
every global batch (see :mod:`pyrovae.distributed`).
"""
from __future__ import annotations

import inspect
import math

import torch
from torch.utils.data import DataLoader, Dataset

from pyrovae.data import ImageData
from pyrovae.errors import PyroVAEError


def takes_two_arguments(fn) -> bool:
    """Whether ``fn(x, y)`` binds (``forward`` of a module): such a pair receives labels."""
    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    try:
        inspect.signature(target).bind(None, None)
    except TypeError:
        return False
    except ValueError:  # no signature (a builtin): assume it does
        return True
    return True


def _check_tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise PyroVAEError(f"{what} must be a tensor with datapoints along dim 0, got "
                           f"{type(x).__name__}")
    return x


class TensorBatches:
    """Minibatches of device-resident tensors ``x`` (and ``y``) in a fresh order per epoch."""

    def __init__(self, x, y=None, *, batch_size: int, world, present=None):
        self.x, self.y = _check_tensor(x, "training data x"), y
        if y is not None and (not isinstance(y, torch.Tensor) or len(y) != len(x)):
            raise PyroVAEError(f"got {len(x)} training datapoints but "
                               f"{len(y) if hasattr(y, '__len__') else y!r} labels")
        self.present = present or (lambda idx, gen: self.x[idx])
        self.world = world
        self.n = x.shape[0]
        self.bs = min(batch_size, self.n)
        self.steps = math.ceil(self.n / self.bs)
        if self.n - (self.steps - 1) * self.bs < world.size:  # too small to give every rank one
            self.steps -= 1
        self.seen = min(self.n, self.steps * self.bs)
        self.device = x.device

    def order(self, gen) -> torch.Tensor:
        """The epoch's permutation, the same on every rank."""
        return self.world.same_as_main(torch.randperm(self.n, generator=gen, device=self.device))

    def batch(self, perm, i: int, gen) -> tuple:
        """The pair's arguments for step ``i`` of the epoch ordered by ``perm``."""
        idx = self.world.shard(perm[i * self.bs:(i + 1) * self.bs])
        x = self.present(idx, gen)
        return (x,) if self.y is None else (x, self.y[idx])

    def size(self, i: int) -> int:
        return min(self.bs, self.n - i * self.bs)


class SemiSupervisedBatches:
    """An epoch of a partly labelled :class:`~pyrovae.data.ImageData`: every unlabelled
    batch ``(x,)`` once and every labelled batch ``(x, y)`` ``label_passes`` times (a fresh
    order per pass), the labelled ones spread evenly among the unlabelled (as Kingma et al.
    2014 and Pyro's M2 example interleave them; the example makes one pass)."""

    def __init__(self, data: ImageData, *, batch_size: int, world, label_passes: int = 1):
        if world.size > 1:
            raise PyroVAEError("semi-supervised training runs in one process")
        mask = torch.zeros(len(data.train_x), dtype=torch.bool, device=data.train_x.device)
        mask[data.labelled] = True
        self.labelled, self.unlabelled = data.labelled, torch.nonzero(~mask).flatten()
        self.x, self.y, self.present = data.train_x, data.train_y, data.train_batch
        self.passes = label_passes
        self.bs = min(batch_size, len(self.unlabelled))
        self.bs_l = min(batch_size, len(self.labelled))
        self.nu = math.ceil(len(self.unlabelled) / self.bs)
        self.per_pass = math.ceil(len(self.labelled) / self.bs_l)
        self.nl = self.per_pass * label_passes
        self.steps, self.device = self.nu + self.nl, self.x.device
        self.seen = len(self.unlabelled) + label_passes * len(self.labelled)  # per epoch
        # step i is labelled when it is one of the nl evenly spaced positions
        self.is_labelled = torch.zeros(self.steps, dtype=torch.bool)
        self.is_labelled[(torch.arange(self.nl) * self.steps) // self.nl] = True
        self.index = torch.cumsum(self.is_labelled, 0) - self.is_labelled.long()

    def order(self, gen):
        n = len(self.labelled)
        return (self.unlabelled[torch.randperm(len(self.unlabelled), generator=gen,
                                               device=self.device)],
                torch.cat([self.labelled[torch.randperm(n, generator=gen, device=self.device)]
                           for _ in range(self.passes)]))

    def batch(self, perm, i: int, gen) -> tuple:
        if self.is_labelled[i]:
            p, j = divmod(int(self.index[i]), self.per_pass)
            start, end = p * len(self.labelled), (p + 1) * len(self.labelled)
            idx = perm[1][start + j * self.bs_l:min(start + (j + 1) * self.bs_l, end)]
            return self.present(idx, gen), self.y[idx]
        j = i - int(self.index[i])  # unlabelled batches before step i
        return (self.present(perm[0][j * self.bs:(j + 1) * self.bs], gen),)

    def size(self, i: int) -> int:
        return 0  # counted from the batch


class LoaderBatches:
    """A user's DataLoader, batch by batch, moved to ``device``."""

    def __init__(self, loader: DataLoader, device, world):
        if world.size > 1:
            raise PyroVAEError("under torchrun pass tensors or a pyrovae dataset: fit shards "
                               "those itself, a DataLoader it cannot")
        self.loader, self.device = loader, device
        self.steps = len(loader)
        self.seen = len(loader.dataset) if hasattr(loader.dataset, "__len__") else None
        self._iter = None

    def order(self, gen):
        self._iter = iter(self.loader)
        return None

    def batch(self, perm, i: int, gen) -> tuple:
        item = next(self._iter)
        items = tuple(item) if isinstance(item, (tuple, list)) else (item,)
        return tuple(t.to(self.device) if isinstance(t, torch.Tensor) else t for t in items)

    def size(self, i: int) -> int:
        return 0  # counted from the batches themselves


def make_batches(data, *, batch_size: int, world, labels: bool, generator, device,
                 label_passes: int = 1):
    """The batch source for ``data`` (see the module docstring) and its test tensors."""
    if isinstance(data, ImageData) and data.labelled is not None:
        return (SemiSupervisedBatches(data, batch_size=batch_size, world=world,
                                      label_passes=label_passes),
                (data.test_x, None))  # the test ELBO of a semi-supervised model sums y out
    if label_passes != 1:
        raise PyroVAEError(f"label_passes={label_passes} (--label-passes) repeats the labelled "
                           f"images of a partly labelled dataset: give --labels N "
                           f"(pyrovae.with_labels), or leave it at 1")
    if isinstance(data, ImageData):
        return (TensorBatches(data.train_x, data.train_y if labels else None,
                              batch_size=batch_size, world=world, present=data.train_batch),
                (data.test_x, data.test_y if labels else None))
    if isinstance(data, torch.Tensor):
        return TensorBatches(data, batch_size=batch_size, world=world), None
    if isinstance(data, (tuple, list)) and len(data) == 1 and isinstance(data[0], torch.Tensor):
        return TensorBatches(data[0], batch_size=batch_size, world=world), None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return TensorBatches(data[0], data[1], batch_size=batch_size, world=world), None
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)
    if isinstance(data, DataLoader):
        return LoaderBatches(data, device, world), None
    raise PyroVAEError(f"fit takes a pyrovae dataset, a tensor x, a pair (x, y), or a torch "
                       f"Dataset/DataLoader; got {type(data).__name__}")
