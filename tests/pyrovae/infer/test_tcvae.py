"""β-TCVAE: β = 1 is the ELBO; the minibatch-weighted TC estimate on known aggregates."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae import PyroVAEError, make_objective

F64 = dict(dtype=torch.float64)


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2, **F64), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)


def guide_of(loc_fn, scale=0.05):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc_fn(x), scale).to_event(1))
    return guide


X = torch.linspace(-2, 2, 16, **F64)[:, None]


def test_beta_one_is_the_elbo():
    guide = guide_of(lambda x: x.expand(-1, 2) / 2, scale=0.5)
    torch.manual_seed(0)
    ours = make_objective("tcvae:1").differentiable_loss(model, guide, X)
    torch.manual_seed(0)
    theirs = Trace_ELBO(vectorize_particles=True).differentiable_loss(model, guide, X)
    assert torch.allclose(ours, theirs)


def test_total_correlation_of_known_aggregates():
    tcvae = make_objective("tcvae:4:1000")
    same = pyro.poutine.trace(guide_of(lambda x: torch.zeros(len(x), 2, **F64))).get_trace(X)
    # every q(z | x_m) equal: q(z) factorizes; the estimate is its constant offset (L-1) log N
    assert torch.allclose(tcvae.total_correlation(same), torch.full((16,), math.log(1000), **F64))
    # overlapping posteriors along a line (z1 = z2) versus the same marginals shuffled apart
    many = torch.linspace(-2, 2, 400, **F64)[:, None]
    tied = pyro.poutine.trace(guide_of(lambda x: x.expand(-1, 2), 0.1)).get_trace(many)
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    free = pyro.poutine.trace(guide_of(lambda x: torch.cat([x, x[perm]], 1), 0.1)).get_trace(many)
    gap = tcvae.total_correlation(tied).mean() - tcvae.total_correlation(free).mean()
    assert gap > 1.0, gap  # TC(z1 = z2, z1 ~ U(-2, 2)) is large; an independent pairing ~0


def test_a_larger_beta_penalizes_the_correlated_code_more():
    tied = guide_of(lambda x: x.expand(-1, 2))
    torch.manual_seed(1)
    low = make_objective("tcvae:1").differentiable_loss(model, tied, X)
    torch.manual_seed(1)
    high = make_objective("tcvae:6").differentiable_loss(model, tied, X)
    assert high > low
    full = lambda x: pyro.sample("z", dist.MultivariateNormal(torch.zeros(len(x), 2, **F64),  # noqa: E731
                                                            torch.eye(2, **F64)))
    with pytest.raises(PyroVAEError, match="needs a diagonal Gaussian guide"):
        make_objective("tcvae:2").differentiable_loss(model, lambda x: _plated(full, x), X)


def _plated(fn, x):
    with pyro.plate("data", x.shape[0]):
        fn(x)
