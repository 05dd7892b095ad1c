"""The default engine traces the loss only where that is declared and checked to be safe.

A replayed step must be the eager step bit for bit; a pair or objective that did not
declare itself traceable runs eagerly; a declared pair whose loss a replay gets wrong (a
Python side effect, a branch on data values) is caught and trained eagerly from then on.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyrovae import ModelConfig, TrainConfig, build_pair, fit, make_objective
from pyrovae.data import ImageData
from pyrovae.train import step as step_module
from pyrovae.train.step import TrainStep, make_optimizer, owner

X = torch.bernoulli(torch.rand(6, 784, generator=torch.Generator().manual_seed(1)))
Y = torch.arange(6) % 10


def registry_pair(model="vae"):
    torch.manual_seed(0)
    return build_pair(ModelConfig(model=model, latent_dim=3, hidden=8), x_dim=784, num_classes=10)


def make_step(model, guide, objective=None, engine="auto"):
    params = list({id(p): p for fn in (model, guide) for p in owner(fn).parameters()}.values())
    return TrainStep(model, guide, objective or make_objective("elbo"),
                     make_optimizer(params, lr=1e-2), engine=engine), params


@pytest.mark.parametrize("name", ["vae", "cvae"])
def test_auto_traces_the_registrys_pairs_and_takes_the_eager_steps_bit_for_bit(name):
    steps, params = {}, {}
    for engine in ("eager", "auto"):
        steps[engine], params[engine] = make_step(*registry_pair(name), engine=engine)
    batches = [(X, Y, 1.0), (X[:4], Y[:4], 1.0), (X, Y, 0.5)] * 2
    with pyro.validation_enabled(False):
        for i, (x, y, beta) in enumerate(batches):
            losses = {}
            for engine, step in steps.items():
                torch.manual_seed(i)
                losses[engine] = step(x, y if name == "cvae" else None, beta=beta)
            assert torch.equal(losses["auto"], losses["eager"])
    assert steps["auto"].engine == "jit" and len(steps["auto"].traces) == 3
    assert steps["auto"].consistent()
    assert all(torch.equal(a, b) for a, b in zip(params["auto"], params["eager"]))


class TutorialVAE(nn.Module):
    """Pyro's tutorial style: methods calling pyro.module; no traceable declaration."""

    def __init__(self, traceable=False):
        super().__init__()
        self.enc, self.dec = nn.Linear(784, 4), nn.Linear(2, 784)
        self.traceable = traceable
        self.calls = 0

    def model(self, x):
        pyro.module("decoder", self.dec)
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.enc)
        self.calls += 1  # a Python side effect a replay would skip
        h = self.enc(x)
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("latent", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def test_an_undeclared_user_pair_or_objective_runs_eagerly():
    vae = TutorialVAE()
    step, _ = make_step(vae.model, vae.guide, Trace_ELBO())
    with pyro.validation_enabled(False):
        for _ in range(3):
            step(X)
    assert step.engine == "eager" and vae.calls == 3

    class Counting:  # a user's objective: not a Pyro ELBO, may count its calls
        def __init__(self):
            self.elbo, self.calls = Trace_ELBO(), 0

        def differentiable_loss(self, *args):
            self.calls += 1
            return self.elbo.differentiable_loss(*args)

    objective = Counting()
    step, _ = make_step(*registry_pair(), objective)
    with pyro.validation_enabled(False):
        for _ in range(3):
            step(X, None)
    assert step.engine == "eager" and objective.calls == 3


class Branching(TutorialVAE):
    """Declared traceable, but the model's structure depends on the data's values."""

    def model(self, x):
        pyro.module("decoder", self.dec)
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            logits = self.dec(z) if x.mean() > 0.5 else -self.dec(z)
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x)


def test_a_branch_on_data_values_is_caught_by_the_periodic_check(monkeypatch):
    monkeypatch.setattr(step_module, "VERIFY_EVERY", 3)
    vae = Branching(traceable=True)
    step, _ = make_step(vae.model, vae.guide, Trace_ELBO())
    dark, light = torch.zeros(6, 784), torch.ones(6, 784)
    with pyro.validation_enabled(False):
        step(dark)  # traced on the dark branch, checked on the same batch: agrees
        assert step.engine == "jit"
        step(light)
        step(light)  # the third step is checked, without a host sync
        assert step.engine == "jit"
        with pytest.warns(UserWarning, match="differs from the eager one"):
            assert not step.consistent()  # what fit asks at the end of every epoch
    assert step.engine == "eager"


def test_a_side_effect_is_caught_when_the_trace_is_checked():
    class Annealed(TutorialVAE):  # a Python counter, the guide's, changes the loss
        def model(self, x):
            pyro.module("decoder", self.dec)
            with pyro.plate("batch", x.shape[0]), pyro.poutine.scale(scale=1.0 / self.calls):
                z = pyro.sample("latent", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
                pyro.sample("obs", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.enc)
            self.calls += 1
            h = self.enc(x)
            with pyro.plate("batch", x.shape[0]), pyro.poutine.scale(scale=1.0 / self.calls):
                pyro.sample("latent", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))

    vae = Annealed(traceable=True)
    step, _ = make_step(vae.model, vae.guide, Trace_ELBO())
    with pyro.validation_enabled(False), pytest.warns(UserWarning, match="differs from the eager"):
        step(X)
    assert step.engine == "eager"


def test_an_objective_that_cannot_be_traced_runs_eagerly():
    step, _ = make_step(*registry_pair(), make_objective("dreg:2"))  # refuses torch.jit.trace
    with pyro.validation_enabled(False):
        assert torch.isfinite(step(X, None))
    assert step.engine == "eager"
    with pytest.raises(Exception, match="--engine eager"):  # where jit is insisted on
        make_step(*registry_pair(), make_objective("dreg:2"), engine="jit")[0](X, None)


def test_fit_trains_pyro_params_outside_the_modules_eagerly():
    class WithLooseParam(TutorialVAE):
        def model(self, x):
            pyro.module("decoder", self.dec)
            shift = pyro.param("shift", torch.zeros(784))  # not a module parameter
            with pyro.plate("batch", x.shape[0]):
                z = pyro.sample("latent", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
                pyro.sample("obs", dist.Bernoulli(logits=self.dec(z) + shift).to_event(1),
                            obs=x)

    pyro.clear_param_store()
    vae = WithLooseParam(traceable=True)
    g = torch.Generator().manual_seed(0)
    data = ImageData("synthetic", torch.rand(32, 784, generator=g),
                     torch.zeros(32, dtype=torch.long),
                     torch.bernoulli(torch.rand(8, 784, generator=g)),
                     torch.zeros(8, dtype=torch.long))
    fit(vae.model, vae.guide, data, TrainConfig(epochs=2, batch_size=8, eval_batch_size=8),
        progress=False)
    assert pyro.param("shift").abs().sum() > 0  # trained: a trace would have frozen it
