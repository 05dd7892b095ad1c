"""Importance-weighted bounds against closed-form log p(x).

Linear-Gaussian models (probabilistic PCA, Tipping & Bishop 1999) have
log p(x) = log N(x; b, W Wᵀ + σ² I); with the exact posterior as guide every log weight
equals log p(x), so every L_K does too.  Float64 throughout.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn

from pyrovae.errors import PyroVAEError
from pyrovae.evaluation.bounds import (elbo_terms, evaluate, iwae_from_log_weights,
                              log_importance_weights, log_likelihood_bound)
from pyrovae.evaluation.report import write_report
from pyrovae.infer.handlers import scale_latents

D, LATENT = 5, 2
f64 = dict(dtype=torch.float64)


def _gaussian_posterior(prior_loc, prior_cov, W, b, noise, x):
    """p(z | x) for z ~ N(m, P), x | z ~ N(W z + b, noise² I)."""
    prec = torch.linalg.inv(prior_cov) + W.T @ W / noise**2
    cov = torch.linalg.inv(prec)
    loc = ((x - b) @ W / noise**2 + prior_loc @ torch.linalg.inv(prior_cov)) @ cov
    return loc, cov


class LinearGaussian(PyroModule):
    """z ~ N(0, I), x | z ~ N(W z + b, σ² I)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W = nn.Parameter(torch.randn(D, LATENT, generator=g, **f64))
        self.b = nn.Parameter(torch.randn(D, generator=g, **f64))
        self.noise = 0.7

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, **f64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.noise).to_event(1), obs=x)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.noise**2 * torch.eye(D, **f64)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)


class PosteriorGuide(PyroModule):
    """The exact posterior, or (``shift``/``inflate``/``diagonal``) a deliberately wrong one."""

    def __init__(self, model, *, shift=0.0, inflate=1.0, diagonal=False):
        super().__init__()
        self.model, self.shift, self.inflate, self.diagonal = model, shift, inflate, diagonal

    def forward(self, x, y=None):
        m = self.model
        loc, cov = _gaussian_posterior(torch.zeros(LATENT, **f64), torch.eye(LATENT, **f64),
                                       m.W.detach(), m.b.detach(), m.noise, x)
        loc, cov = loc + self.shift, cov * self.inflate**2
        q = (dist.Normal(loc, cov.diagonal().sqrt()).to_event(1) if self.diagonal
             else dist.MultivariateNormal(loc, cov))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)


@pytest.fixture
def lg():
    model = LinearGaussian()
    data = dist.MultivariateNormal(model.b.detach(), model.W.detach() @ model.W.detach().T
                                   + torch.eye(D, **f64)).sample((40,))
    return model, data, model.log_marginal(data).detach()


@pytest.mark.parametrize("k", [1, 10, 100, 5000])
def test_exact_posterior_gives_log_marginal_for_every_k(lg, k):
    model, x, exact = lg
    bound = log_likelihood_bound(model, PosteriorGuide(model), x, num_particles=k)
    assert bound.shape == (len(x),)
    assert torch.allclose(bound, exact, atol=1e-4, rtol=0)


def test_mismatched_guide_bound_rises_to_log_marginal(lg):
    model, x, exact = lg
    guide = PosteriorGuide(model, shift=0.2, inflate=1.5)  # shifted and too wide
    log_w = log_importance_weights(model, guide, x, num_particles=4000)
    means = []
    for k in (1, 10, 100, 4000):
        gap = exact - iwae_from_log_weights(log_w, k)
        se = gap.std() / math.sqrt(len(gap))
        assert gap.mean() > -2 * se, f"K={k}: bound above log p(x) by more than 2 SE"
        means.append(gap.mean())
        if k == 1:
            assert gap.mean() > 10 * se  # the test can fail: the ELBO is visibly loose
    assert means[0] > means[1] > means[2] > means[3]  # ELBO <= IWAE_10 <= ... <= log p(x)
    assert abs(means[3]) < 2 * se


def test_chunking_does_not_change_the_result(lg):
    model, x, _ = lg
    x = x[:8]  # 8 datapoints x 2 latent dims: every chunk draws a multiple of 16 normals,
    guide = PosteriorGuide(model, shift=0.5, inflate=2.0)  # so the samples are the same
    results = []
    for chunk in (None, 1, 7, 64, 100):
        torch.manual_seed(3)
        results.append(log_likelihood_bound(model, guide, x, num_particles=100, chunk_size=chunk))
    for r in results[1:]:
        assert torch.allclose(r, results[0], rtol=0, atol=1e-10)


def test_evaluation_is_at_beta_one_whatever_handlers_are_active(lg):
    model, x, exact = lg
    guide = PosteriorGuide(model)
    with scale_latents(0.1):
        inside = log_likelihood_bound(model, guide, x, num_particles=10)
    wrapped = log_likelihood_bound(poutine.scale(model, 0.5), poutine.scale(guide, 0.5), x,
                                   num_particles=10)
    assert torch.allclose(inside, exact, atol=1e-4) and torch.allclose(wrapped, exact, atol=1e-4)


def test_active_units_discount_the_monte_carlo_noise_of_the_particle_mean(lg):
    model, x, _ = lg
    with torch.no_grad():
        model.W[:, 1] = 0.0  # z_2 does not reach x: its posterior is the prior, E_q[z_2|x] = 0
    # 50 particles: the particle mean of z_2 still varies by 1/50 = 0.02 > 0.01 across x
    report = evaluate(model, PosteriorGuide(model), x, num_particles=(1, 50), progress=False)
    assert report["active_units"]["z"] == {"active": 1, "dims": 2, "threshold": 0.01}
    only_one = evaluate(model, PosteriorGuide(model), x, num_particles=1, progress=False)
    assert only_one["active_units"] == {}  # not estimable from a single particle


def test_raw_pyro_functions_with_pyro_module(lg):
    _, x, _ = lg
    decoder = nn.Linear(LATENT, D).double()
    noise = 0.5

    def model(x, y=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(decoder(z), noise).to_event(1), obs=x)

    def guide(x, y=None):
        W, b = decoder.weight.detach(), decoder.bias.detach()
        eye = torch.eye(LATENT, **f64)
        loc, cov = _gaussian_posterior(x.new_zeros(LATENT), eye, W, b, noise, x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, cov))

    W, b = decoder.weight.detach(), decoder.bias.detach()
    exact = dist.MultivariateNormal(b, W @ W.T + noise**2 * torch.eye(D, **f64)).log_prob(x)
    bound = log_likelihood_bound(model, guide, x, num_particles=50)
    assert torch.allclose(bound, exact, atol=1e-4)
    assert set(elbo_terms(model, guide, x)["kl_per_site"]) == {"z"}


def _hierarchical(dependent: bool):
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + c, s² I), x | z1 ~ N(W z1 + b, σ² I).

    Exact guide: q(z1 | x) = p(z1 | x) and q(z2 | z1) = p(z2 | z1) (x ⊥ z2 | z1).
    """
    g = torch.Generator().manual_seed(2)
    A, c = torch.randn(3, 2, generator=g, **f64), torch.randn(3, generator=g, **f64)
    W, b = torch.randn(D, 3, generator=g, **f64), torch.randn(D, generator=g, **f64)
    s, sigma = 0.6, 0.8
    P1 = A @ A.T + s**2 * torch.eye(3, **f64)

    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ A.T + c, s).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ W.T + b, sigma).to_event(1), obs=x)

    def guide(x, y=None):
        loc1, cov1 = _gaussian_posterior(c, P1, W, b, sigma, x)
        with pyro.plate("data", x.shape[0]):
            if dependent:
                z1 = pyro.sample("z1", dist.MultivariateNormal(loc1, cov1))
            else:  # mean-field and too wide: a mismatched guide
                z1 = pyro.sample("z1", dist.Normal(loc1, 1.3 * cov1.diagonal().sqrt()).to_event(1))
            loc2, cov2 = _gaussian_posterior(x.new_zeros(2), torch.eye(2, **f64), A, c, s, z1)
            pyro.sample("z2", dist.MultivariateNormal(loc2, cov2 * (1 if dependent else 1.5)))

    def log_marginal(x):
        return dist.MultivariateNormal(W @ c + b, W @ P1 @ W.T + sigma**2 * torch.eye(D, **f64)
                                       ).log_prob(x)
    return model, guide, log_marginal


def test_two_latent_hierarchical_pair():
    model, guide, log_marginal = _hierarchical(dependent=True)
    x = torch.randn(30, D, **f64) * 2
    exact = log_marginal(x)
    assert torch.allclose(log_likelihood_bound(model, guide, x, num_particles=20), exact, atol=1e-4)
    _, wrong, _ = _hierarchical(dependent=False)
    report = evaluate(model, wrong, x, num_particles=(1, 100, 3000), progress=False)
    gaps = [float(exact.mean()) - r["mean"] for r in report["bounds"]]
    assert gaps[0] > gaps[1] > gaps[2] > -0.05 and gaps[2] < 0.05
    assert set(report["kl_per_site"]) == {"z1", "z2"}
    assert report["active_units"]["z1"]["dims"] == 3


def test_discrete_non_reparameterizable_latent():
    """A Gaussian mixture with the component c as latent: log p(x) = logsumexp_c."""
    probs, means = torch.tensor([0.2, 0.5, 0.3], **f64), torch.tensor([-2.0, 0.0, 3.0], **f64)

    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(probs))
            pyro.sample("x", dist.Normal(means[c], 1.0), obs=x)

    def guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(3, **f64)))  # uniform proposal

    x = torch.linspace(-4, 5, 25, **f64)
    exact = torch.logsumexp(probs.log() + dist.Normal(means, 1.0).log_prob(x[:, None]), -1)
    bound = log_likelihood_bound(model, guide, x, num_particles=4000)
    assert (bound - exact).abs().max() < 0.05


def test_decoder_that_flattens_its_input_is_evaluated_by_folding_particles(lg):
    model, x, exact = lg

    class Flat(PyroModule):  # reshapes with x.shape[0]: cannot broadcast over particles
        def forward(self, x, y=None):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(LATENT, **f64), 1.0).to_event(1))
                loc = (z.reshape(x.shape[0], LATENT) @ model.W.T + model.b)
                pyro.sample("x", dist.Normal(loc, model.noise).to_event(1), obs=x)

    bound = log_likelihood_bound(Flat(), PosteriorGuide(model), x, num_particles=30)
    assert torch.allclose(bound, exact, atol=1e-4)


def test_bernoulli_vae_shapes_and_report(tmp_path):
    from pyrovae.build import build_pair
    from pyrovae.config import ModelConfig

    model, guide = build_pair(ModelConfig(latent_dim=4, hidden=16), x_dim=12, num_classes=10)
    x = (torch.rand(7, 12) < 0.4).float()
    terms = elbo_terms(model, guide, x, num_particles=3)
    assert terms["elbo"].shape == terms["recon"].shape == terms["kl"].shape == (7,)
    assert torch.allclose(terms["elbo"], terms["recon"] - terms["kl"])
    report = evaluate(model, guide, x, num_particles=(1, 8, 64), batch_size=3, progress=False)
    means = [r["mean"] for r in report["bounds"]]
    assert means[0] <= means[1] <= means[2] < 0  # grouped estimates are monotone by Jensen
    assert 0 < report["ess"]["normalized_median"] <= 1
    assert report["active_units"]["z"]["dims"] == 4 and "psis" in report
    paths = write_report(report, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def _no_plate_model(x, y=None):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(z, 1.0).expand(x.shape).to_event(2), obs=x)


def _no_plate_guide(x, y=None):
    pyro.sample("z", dist.Normal(0.0, 1.0))


def _unobserved_model(x, y=None):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def _scalar_guide(x, y=None):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.0, 1.0))


def _misnamed_guide(x, y=None):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("w", dist.Normal(torch.zeros(LATENT, **f64), 1.0).to_event(1))


@pytest.mark.parametrize("model, guide, x, k, match", [
    (None, None, torch.zeros(3, D, **f64), 0, "positive integer"),
    (None, None, torch.zeros(3, D, **f64), 2.5, "positive integer"),
    (None, None, torch.tensor([[0.0] * D, [math.nan] * D], **f64), 5, "NaN"),
    (_no_plate_model, _no_plate_guide, torch.zeros(3, 2), 5, "plate"),
    (_unobserved_model, _scalar_guide, torch.zeros(3), 5, "observed"),
    (None, _misnamed_guide, torch.zeros(3, D, **f64), 5, "latent sites differ"),
])
def test_bad_input_raises_a_clear_error(lg, model, guide, x, k, match):
    lg_model = lg[0]
    with pytest.raises(PyroVAEError, match=match):
        log_likelihood_bound(model or lg_model, guide or PosteriorGuide(lg_model), x,
                             num_particles=k)


def _registered_pairs():
    from pyrovae import registry
    from pyrovae.build import registered_pairs

    return [(m, g, p) for m, g in registered_pairs() for p in registry.names("prior")]


@pytest.mark.parametrize("model_name, guide_name, prior_name", _registered_pairs())
def test_every_registered_pair_is_vectorized_over_particles_exactly(model_name, guide_name,
                                                                    prior_name):
    """Each particle's weight from the particle plate equals the weight of a plain trace
    with the guide conditioned on that particle's z (no particle dim anywhere)."""
    from pyrovae.build import build_pair
    from pyrovae.config import ModelConfig
    from pyrovae.evaluation.weights import evaluating, make_plan, particle_terms

    cfg = ModelConfig(model=model_name, guide=guide_name, prior=prior_name, latent_dim=3,
                      hidden=8, num_components=3, num_pseudo_inputs=4, flow_layers=1)
    model, guide = build_pair(cfg, x_dim=12, num_classes=10)
    x, y = torch.bernoulli(torch.full((4, 12), 0.3)), torch.arange(4)
    with evaluating(model, guide):
        plan = make_plan(model, guide, (x, y))
        assert not plan.folded, "the pair does not broadcast over a particle plate"
        terms = particle_terms(model, guide, (x, y), {}, plan, 2)
        for j in range(2):
            g = poutine.trace(poutine.condition(guide, data={"z": terms.latents["z"][j]})
                              ).get_trace(x, y)
            g.nodes["z"]["is_observed"] = False  # conditioned only to fix its value; replay it
            m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x, y)
            log_p = sum(s["fn"].log_prob(s["value"]) for s in m.nodes.values()
                        if s["type"] == "sample" and s["name"] != "data")
            log_q = g.nodes["z"]["fn"].log_prob(g.nodes["z"]["value"])
            assert torch.allclose(terms.log_w[j], log_p - log_q, atol=1e-4, rtol=1e-5)


def test_cli_particle_ladder_and_clean_errors(tmp_path, capsys):
    from pyrovae.cli import main
    from pyrovae.evaluation.bounds import particle_ladder

    assert particle_ladder(5000) == (1, 10, 100, 1000, 5000)
    assert particle_ladder(1) == (1,) and particle_ladder(64) == (1, 10, 64)
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert main(["evaluate", str(tmp_path), "--num-particles", "0"]) == 2
    assert capsys.readouterr().err.count("pyrovae: error:") == 2
