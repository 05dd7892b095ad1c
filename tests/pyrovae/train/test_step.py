"""The trainer's step: the savings in pyrovae/step.py must not change the loss or gradient."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule, PyroSample

from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.infer.handlers import scale_latents
from pyrovae.models.priors import StandardNormalPrior
from pyrovae.models.vae import VAE
from pyrovae.nets import MLP
from pyrovae.train.step import PairLoss, SyncFreeTrace_ELBO, TrainStep, lean_objective, make_optimizer


def small_pair():
    torch.manual_seed(0)
    return VAE(MLP(3, 8, 784), StandardNormalPrior(3)), DiagonalGaussianGuide(MLP(784, 8, 6), 3)


X = torch.bernoulli(torch.rand(5, 784, generator=torch.Generator().manual_seed(1)))


def loss_and_grads(loss_fn, params, *, beta=1.0):
    for p in params:
        p.grad = None
    torch.manual_seed(2)  # same latent noise for every estimator compared
    with scale_latents(beta):
        loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in params]


def assert_same(a, b):
    assert torch.allclose(a[0], b[0], rtol=1e-6), (a[0], b[0])
    for g, h in zip(a[1], b[1]):
        assert torch.allclose(g, h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("particles,vectorize,beta", [(1, False, 1.0), (1, False, 0.3),
                                                      (3, True, 1.0), (2, False, 0.5)])
def test_sync_free_elbo_equals_pyros(particles, vectorize, beta):
    model, guide = small_pair()
    params = list(model.parameters()) + list(guide.parameters())
    settings = {"num_particles": particles, "vectorize_particles": vectorize}
    with pyro.validation_enabled(False):
        want = loss_and_grads(lambda: Trace_ELBO(**settings).differentiable_loss(
            model, guide, X, None), params, beta=beta)
        got = loss_and_grads(lambda: SyncFreeTrace_ELBO(**settings).differentiable_loss(
            model, guide, X, None), params, beta=beta)
        via_module = loss_and_grads(lambda: PairLoss(model, guide, Trace_ELBO(**settings))(X),
                                    params, beta=beta)
    assert_same(got, want)
    assert_same(via_module, want)


def test_score_function_sites_fall_back_to_pyros_surrogate():
    """A Bernoulli latent has no reparameterization: Pyro's Rao-Blackwellized surrogate."""
    logit = torch.nn.Parameter(torch.tensor([0.3, -0.2]))
    loc = torch.nn.Parameter(torch.tensor(0.5))

    def model(x):
        with pyro.plate("data", 2):
            b = pyro.sample("b", dist.Bernoulli(logits=torch.zeros(2)))
            pyro.sample("x", dist.Normal(loc * b, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 2):
            pyro.sample("b", dist.Bernoulli(logits=logit))

    x = torch.tensor([1.0, -1.0])
    want = loss_and_grads(lambda: Trace_ELBO().differentiable_loss(model, guide, x), [logit, loc])
    got = loss_and_grads(lambda: SyncFreeTrace_ELBO().differentiable_loss(model, guide, x),
                         [logit, loc])
    assert_same(got, want)
    assert got[1][0].abs().sum() > 0


def test_only_plain_trace_elbo_is_swapped():
    assert type(lean_objective(Trace_ELBO(num_particles=4))) is SyncFreeTrace_ELBO
    assert lean_objective(Trace_ELBO(num_particles=4)).num_particles == 4
    meanfield = TraceMeanField_ELBO()
    assert lean_objective(meanfield) is meanfield


class SampledWeight(PyroModule):
    """A PyroSample attribute is cached per ``__call__``: it must keep the call."""

    def __init__(self):
        super().__init__()
        self.w = PyroSample(dist.Normal(0.0, 1.0))

    def forward(self, x, y=None):
        return self.w


def test_pyromodule_call_is_skipped_only_where_safe():
    model, guide = small_pair()
    loss = PairLoss(model, guide, Trace_ELBO())
    assert loss._calls == (model.forward, guide.forward)
    sampled = SampledWeight()
    assert PairLoss(sampled, guide, Trace_ELBO())._calls[0] is sampled
    assert PairLoss(model, guide, Trace_ELBO()).state_dict().keys() == \
        {**{f"model.{k}": 0 for k in model.state_dict()},
         **{f"guide.{k}": 0 for k in guide.state_dict()}}.keys()


def test_train_step_applies_beta_and_updates_parameters():
    model, guide = small_pair()
    params = list(model.parameters()) + list(guide.parameters())
    before = [p.detach().clone() for p in params]
    step = TrainStep(model, guide, Trace_ELBO(), make_optimizer(params, lr=1e-2))
    with pyro.validation_enabled(False):
        losses = {}
        for beta in (1.0, 0.25):
            torch.manual_seed(3)
            with scale_latents(beta):
                losses[beta] = Trace_ELBO().differentiable_loss(model, guide, X, None).detach()
        torch.manual_seed(3)
        got = step(X, None, beta=0.25)
    assert not got.requires_grad
    assert torch.allclose(got, losses[0.25], rtol=1e-6)
    assert not torch.allclose(losses[1.0], losses[0.25], rtol=1e-3)
    assert all(not torch.equal(a, p) for a, p in zip(before, params))


def test_jit_engine_takes_the_same_steps_as_eager():
    steps, params = {}, {}
    for engine in ("eager", "jit"):
        model, guide = small_pair()
        params[engine] = list(model.parameters()) + list(guide.parameters())
        steps[engine] = TrainStep(model, guide, Trace_ELBO(), make_optimizer(params[engine], lr=1e-2),
                                  engine=engine)
    y = torch.zeros(5, dtype=torch.long)
    with pyro.validation_enabled(False):
        for i, (x, yy, beta) in enumerate([(X, None, 1.0), (X, y, 1.0), (X[:3], y[:3], 0.5)] * 2):
            losses = {}
            for engine, step in steps.items():
                torch.manual_seed(i)  # the traced graph draws the same noise as eager
                losses[engine] = step(x, yy, beta=beta)
            assert torch.allclose(losses["jit"], losses["eager"], rtol=1e-5)
    assert len(steps["jit"].traces) == 3  # one per (β, shapes), replayed afterwards
    for a, b in zip(params["jit"], params["eager"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_jit_engine_falls_back_to_eager_when_beta_keeps_changing():
    model, guide = small_pair()
    params = list(model.parameters()) + list(guide.parameters())
    step = TrainStep(model, guide, Trace_ELBO(), make_optimizer(params, lr=1e-3), engine="jit")
    with pyro.validation_enabled(False), pytest.warns(UserWarning, match="falls back"):
        for beta in torch.linspace(0.1, 1.0, 6).tolist():
            assert torch.isfinite(step(X, None, beta=beta))
    assert step.traces is None


def test_bad_engine_and_jit_under_data_parallelism_are_refused():
    from pyrovae.distributed import World
    from pyrovae.errors import PyroVAEError

    model, guide = small_pair()
    opt = make_optimizer(list(model.parameters()), lr=1e-3)
    with pytest.raises(PyroVAEError, match="valid: auto, eager, jit"):
        TrainStep(model, guide, Trace_ELBO(), opt, engine="fast")
    with pytest.raises(PyroVAEError, match="one process"):
        TrainStep(model, guide, Trace_ELBO(), opt, engine="jit", world=World(rank=0, size=2))
