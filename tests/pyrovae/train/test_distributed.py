"""Data-parallel training: 2 CPU processes (gloo on 127.0.0.1) against 1 process.

The two ranks run in a child script (this file, run as ``__main__``, spawning its workers
with ``torch.multiprocessing``), so the workers and the test-only guide below are
importable by the spawned processes whatever pytest's import mode.  Every rank saves
what it ends with; the tests compare those files.
"""
from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.distributed import World
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.models.priors import StandardNormalPrior
from pyrovae.models.vae import VAE
from pyrovae.nets import MLP

N, LATENT = 32, 4


class FixedNoiseNormal(dist.Normal):
    """N(loc, scale) whose reparameterized draw is ``loc + scale * eps`` for a given eps."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        self.eps = eps

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return FixedNoiseNormal(self.loc.expand(shape), self.scale.expand(shape),
                                self.eps.expand(shape))

    def rsample(self, sample_shape=torch.Size()):
        return self.loc + self.scale * self.eps


class FixedNoiseGuide(DiagonalGaussianGuide):
    """The diagonal guide with datapoint ``y``'s noise fixed (``y`` = its index)."""

    def __init__(self, encoder, latent_dim, eps):
        super().__init__(encoder, latent_dim)
        self.register_buffer("eps", eps)

    def forward(self, x, y=None):
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", FixedNoiseNormal(loc, self.scale_of(raw), self.eps[y]).to_event(1))


def make_data(n: int, *, binary: bool) -> ImageData:
    g = torch.Generator().manual_seed(123)
    grey = torch.rand(n + 16, 784, generator=g) ** 3  # mostly dark, like digits
    images = torch.bernoulli(grey, generator=g) if binary else grey
    test = torch.bernoulli(grey[n:], generator=g)
    # labels are the datapoints' indices: FixedNoiseGuide looks its noise up by them
    return ImageData("synthetic", images[:n], torch.arange(n), test, torch.arange(16))


def make_pair(*, fixed_noise: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = VAE(MLP(LATENT, 16, 784), StandardNormalPrior(LATENT))
    encoder = MLP(784, 16, 2 * LATENT)
    if fixed_noise:
        eps = torch.randn(N, LATENT, generator=torch.Generator().manual_seed(7))
        return model, FixedNoiseGuide(encoder, LATENT, eps)
    return model, DiagonalGaussianGuide(encoder, LATENT)


ONE_STEP = TrainConfig(epochs=1, batch_size=N, lr=1e-2, seed=0, device="cpu", eval_batch_size=16)
SEVERAL = TrainConfig(epochs=3, batch_size=16, lr=1e-2, seed=0, device="cpu", eval_batch_size=16)


def one_step(model, guide):
    """Train one step on the whole (binary) set; keep the synchronised gradients."""
    from pyrovae.train.fit import fit

    fit(model, guide, make_data(N, binary=True), ONE_STEP, progress=False)
    return {"grads": [p.grad.clone() for p in _params(model, guide)],
            "params": [p.detach().clone() for p in _params(model, guide)]}


def _params(model, guide):
    return list(model.parameters()) + list(guide.parameters())


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    from pyrovae import distributed
    from pyrovae.train.fit import fit

    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"), init_method=f"tcp://127.0.0.1:{port}",
                     rank=rank, world_size=world_size)
    out = Path(out)
    result = {"step": one_step(*make_pair(fixed_noise=True))}
    data = make_data(2 * N, binary=False)
    model, guide = make_pair(fixed_noise=False)
    history = fit(model, guide, data, SEVERAL, run_dir=out / "straight", progress=False)
    result["straight"] = {"history": history, "params": [p.detach() for p in _params(model, guide)]}
    model, guide = make_pair(fixed_noise=False)
    fit(model, guide, data, dataclasses.replace(SEVERAL, epochs=1),
        run_dir=out / "resumed", progress=False)
    model, guide = make_pair(fixed_noise=False, seed=99)  # weights come from the checkpoint
    history = fit(model, guide, data, SEVERAL, run_dir=out / "resumed", resume=True,
                  progress=False)
    result["resumed"] = {"history": history, "params": [p.detach() for p in _params(model, guide)]}
    torch.save(result, out / f"rank{rank}.pt")
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_every_rank_holds_the_same_parameters(ranks):
    for run in ("step", "straight", "resumed"):
        for a, b in zip(ranks[0][run]["params"], ranks[1][run]["params"]):
            assert torch.equal(a, b), run


def test_two_half_batches_step_like_one_full_batch(ranks):
    """Losses are sums over datapoints and DDP averages gradients: the trainer must scale
    so that 2 ranks x N/2 points give the gradient of 1 process x N points."""
    reference = one_step(*make_pair(fixed_noise=True))
    for got, want in zip(ranks[0]["step"]["grads"], reference["grads"]):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-3), (got - want).abs().max()
    for got, want in zip(ranks[0]["step"]["params"], reference["params"]):
        # Adam's first step is ~lr * sign(g): loose where g is ~0 up to rounding
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)


def test_distributed_loss_decreases(ranks):
    history = ranks[0]["straight"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 1  # decoders start at the data marginal
    assert history == ranks[1]["straight"]["history"]  # every rank returns rank 0's record


def test_resumed_distributed_run_continues_exactly(ranks):
    for rank in ranks:
        for a, b in zip(rank["straight"]["params"], rank["resumed"]["params"]):
            assert torch.equal(a, b)
        drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
        assert drop(rank["straight"]["history"]) == drop(rank["resumed"]["history"])


def test_shards_partition_each_global_batch():
    batch = torch.randperm(103)[:37]
    shards = [World(rank=r, size=3).shard(batch) for r in range(3)]
    assert sorted(torch.cat(shards).tolist()) == sorted(batch.tolist())
    assert [len(s) for s in shards] == [13, 12, 12]
    assert World().shard(batch) is batch
    assert World(rank=0, size=4).seed(5) == 5 and World(rank=1, size=4).seed(5) != 5


if __name__ == "__main__":  # the two ranks, started by the `ranks` fixture
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), sys.argv[1]), nprocs=2, join=True)
