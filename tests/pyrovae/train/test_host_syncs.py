"""The training loop never waits for the device between log intervals.

On a GPU every tensor -> Python conversion (``.item()``, ``float(t)``, ``bool(t)``, ...)
is a host synchronisation that drains the queue.  There is no GPU in CI, but the loop runs
the same Python on every device, so counting those conversions on CPU is the check: a
training step makes none, and a whole epoch makes a number that does not grow with the
number of steps.  (Timings live in ``scripts/benchmark_training.py``, never in tests.)
"""
from __future__ import annotations

import contextlib

import pyro
import pytest
import torch

from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.models.priors import StandardNormalPrior
from pyrovae.models.vae import VAE
from pyrovae.nets import MLP
from pyrovae.infer.objectives import make_objective
from pyrovae.train.step import VERIFY_EVERY, TrainStep, make_optimizer

CONVERSIONS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_host_syncs():
    """Count tensor -> Python conversions made inside the block."""
    calls = []
    originals = {name: getattr(torch.Tensor, name) for name in CONVERSIONS}

    def spy(name):
        def method(self, *args, **kwargs):
            calls.append(name)
            return originals[name](self, *args, **kwargs)
        return method

    for name in CONVERSIONS:
        setattr(torch.Tensor, name, spy(name))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def small_pair():
    torch.manual_seed(0)
    return VAE(MLP(4, 16, 784), StandardNormalPrior(4)), DiagonalGaussianGuide(MLP(784, 16, 8), 4)


@pytest.mark.parametrize("engine", ["eager", "auto"])
def test_a_training_step_never_syncs(engine):
    model, guide = small_pair()
    params = list(model.parameters()) + list(guide.parameters())
    step = TrainStep(model, guide, make_objective("elbo"), make_optimizer(params, lr=1e-3),
                     engine=engine)
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    with pyro.validation_enabled(False):
        for beta in (1.0, 0.5):  # the optimizer's lazy state; auto: the check of each trace
            step(x, None, beta=beta)
        with count_host_syncs() as calls:
            for _ in range(VERIFY_EVERY + 1):  # including auto's periodic check
                for beta in (1.0, 0.5):
                    step(x, None, beta=beta)
    assert step.engine == ("jit" if engine == "auto" else "eager")
    assert calls == []


def test_host_syncs_per_epoch_do_not_grow_with_steps():
    from pyrovae.train.fit import fit

    g = torch.Generator().manual_seed(0)
    data = ImageData("synthetic", torch.rand(64, 784, generator=g), torch.zeros(64, dtype=torch.long),
                     torch.bernoulli(torch.rand(16, 784, generator=g)), torch.zeros(16, dtype=torch.long))
    counts = []
    for batch_size in (32, 8):  # 2 and 8 steps per epoch
        cfg = TrainConfig(epochs=1, batch_size=batch_size, log_every=10_000, eval_batch_size=16)
        model, guide = small_pair()
        with count_host_syncs() as calls:
            fit(model, guide, data, cfg, progress=False)
        counts.append(len(calls))
    assert counts[0] == counts[1], counts
