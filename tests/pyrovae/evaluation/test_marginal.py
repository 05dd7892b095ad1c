"""AIS and BDMC on pairs, against closed-form log p(x).

Linear-Gaussian pairs (plate "batch", site "obs", one-argument functions), a two-level
hierarchy with its exact posterior, and a Gamma-Poisson model whose latent is positive
(moved in unconstrained space) all have log p(x) in closed form.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovae
from pyrovae import PyroVAEError
from pyrovae.evaluation.marginal import ais_log_likelihood, bdmc

F64 = dict(dtype=torch.float64)
D, L, NOISE = 5, 2, 0.5
G = torch.Generator().manual_seed(11)
W, B = torch.randn(D, L, generator=G, **F64), torch.randn(D, generator=G, **F64)


def model(x):
    with pyro.plate("batch", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(L, **F64), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z @ W.T + B, NOISE).to_event(1), obs=x)


def poor_guide(x):
    with pyro.plate("batch", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.full((L,), 1.0, **F64), 0.25).to_event(1))


def exact(x):
    return dist.MultivariateNormal(B, W @ W.T + NOISE**2 * torch.eye(D, **F64)).log_prob(x)


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(3)
    return torch.randn(24, L, generator=g, **F64) @ W.T + B + NOISE * torch.randn(
        24, D, generator=g, **F64)


def test_ais_converges_to_log_px_and_never_sits_above_it(x):
    torch.manual_seed(0)
    few = ais_log_likelihood(model, poor_guide, x, num_steps=5, num_chains=16)
    many = ais_log_likelihood(model, poor_guide, x, num_steps=300, num_chains=16)
    err_few, err_many = (few.log_px - exact(x)).mean(), (many.log_px - exact(x)).mean()
    se = many.mc_se.square().sum().sqrt() / len(x)
    assert err_few < -0.15  # a short anneal from a poor guide is far below
    assert abs(err_many) < 4 * se + 0.02 and err_many < 3 * se
    assert 0.5 < float(many.acceptance.mean()) < 0.85  # adapted toward 0.65
    assert many.evaluations == 16 * 300 * 11


def test_ais_from_the_prior_and_tighter_than_iwae_at_equal_cost(x):
    torch.manual_seed(1)
    est = ais_log_likelihood(model, poor_guide, x, num_steps=200, num_chains=8, init="prior")
    iwae = pyrovae.log_likelihood_bound(model, poor_guide, x, num_particles=est.evaluations)
    gap_ais, gap_iwae = (exact(x) - est.log_px).mean(), (exact(x) - iwae).mean()
    assert gap_ais < 0.5 * gap_iwae and gap_iwae > 0.2


def test_bdmc_sandwiches_log_px():
    torch.manual_seed(2)
    res = bdmc(model, poor_guide, torch.zeros(30, D, **F64), num_steps=100, num_chains=8)
    truth = exact(res["x"])
    lo_se = res["lower_se"].square().sum().sqrt() / 30
    hi_se = res["upper_se"].square().sum().sqrt() / 30
    assert (res["lower"] - truth).mean() < 3 * lo_se
    assert (res["upper"] - truth).mean() > -3 * hi_se
    assert float((res["upper"] - res["lower"]).mean()) < 0.5


def test_a_datapoint_is_estimated_alike_alone_or_in_a_batch(x):
    torch.manual_seed(4)
    alone = ais_log_likelihood(model, poor_guide, x[:1], num_steps=100, num_chains=64)
    batch = ais_log_likelihood(model, poor_guide, x[:12], num_steps=100, num_chains=64)
    diff = float(alone.log_px[0] - batch.log_px[0])
    assert abs(diff) < 4 * math.hypot(float(alone.mc_se[0]), float(batch.mc_se[0])) + 0.02


A = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], **F64)
B2 = torch.randn(4, 2, generator=G, **F64)


def h_model(x):
    with pyro.plate("N", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros(2, **F64), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(z1 @ A.T, 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z2 @ B2.T, 0.5).to_event(1), obs=x)


def h_guide(x):  # the exact posterior, factorized q(z1 | x) q(z2 | z1, x)
    i2 = torch.eye(2, **F64)
    prior_cov = torch.cat([torch.cat([i2, A.T], 1), torch.cat([A, A @ A.T + i2], 1)], 0)
    obs = torch.cat([torch.zeros(4, 2, **F64), B2], 1)
    cov = torch.linalg.inv(torch.linalg.inv(prior_cov) + obs.T @ obs / 0.25)
    mean = (x @ obs / 0.25) @ cov
    gain = cov[2:, :2] @ torch.linalg.inv(cov[:2, :2])
    with pyro.plate("N", x.shape[0]):
        z1 = pyro.sample("z1", dist.MultivariateNormal(mean[:, :2], cov[:2, :2]))
        pyro.sample("z2", dist.MultivariateNormal(mean[:, 2:] + (z1 - mean[:, :2]) @ gain.T,
                                                  cov[2:, 2:] - gain @ cov[:2, 2:]))


def test_several_latent_sites_with_the_exact_posterior_are_exact():
    x = torch.randn(10, 4, **F64) * 2
    truth = dist.MultivariateNormal(torch.zeros(4, **F64), B2 @ (A @ A.T + torch.eye(2, **F64))
                                    @ B2.T + 0.25 * torch.eye(4, **F64)).log_prob(x)
    est = ais_log_likelihood(h_model, h_guide, x, num_steps=20, num_chains=4)
    assert torch.allclose(est.log_px, truth, atol=1e-6)


def gp_model(x):  # z ~ Gamma(2, 1) per datapoint, 3 counts ~ Poisson(z)
    with pyro.plate("N", x.shape[0]):
        z = pyro.sample("rate", dist.Gamma(torch.tensor(2.0, **F64), 1.0))
        pyro.sample("counts", dist.Poisson(z.unsqueeze(-1).expand(*z.shape, 3)).to_event(1),
                    obs=x)


def gp_guide(x):
    with pyro.plate("N", x.shape[0]):
        pyro.sample("rate", dist.Gamma(1.0 + x.sum(-1), torch.tensor(2.0, **F64)))


def test_a_positive_latent_moves_in_unconstrained_space():
    x = torch.tensor([[0.0, 1.0, 2.0], [4.0, 3.0, 6.0], [1.0, 1.0, 0.0]], **F64)
    a, b, s, n = 2.0, 1.0, x.sum(-1), 3
    truth = (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + s) - (a + s) * math.log(b + n)
             - torch.lgamma(x + 1).sum(-1))
    torch.manual_seed(5)
    est = ais_log_likelihood(gp_model, gp_guide, x, num_steps=300, num_chains=32)
    assert torch.all((est.log_px - truth).abs() < 4 * est.mc_se + 0.01), (est.log_px, truth)


def test_discrete_latents_and_bad_budgets_are_one_line_errors():
    def mix(x):
        with pyro.plate("N", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(torch.tensor(0.5, **F64)))
            pyro.sample("obs", dist.Normal(c, 1.0), obs=x)

    def mix_guide(x):
        with pyro.plate("N", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(torch.tensor(0.5, **F64)))

    with pytest.raises(PyroVAEError, match=r"site\(s\) \['c'\] are discrete"):
        ais_log_likelihood(mix, mix_guide, torch.zeros(3, **F64), num_steps=2)
    with pytest.raises(PyroVAEError, match="num_steps must be a positive integer"):
        ais_log_likelihood(model, poor_guide, torch.zeros(3, D, **F64), num_steps=0)
    with pytest.raises(PyroVAEError, match="unknown AIS init"):
        ais_log_likelihood(model, poor_guide, torch.zeros(3, D, **F64), num_steps=2, init="q")
