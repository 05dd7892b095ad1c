"""Pairs written the way Pyro users write them, through every use of pyrovae.

Each pair below is in the style of Pyro's tutorials and examples, not of this package:
a class with ``model``/``guide`` methods and ``pyro.module`` (the layout of Pyro's
``examples/vae/vae.py``), plain one-argument functions with ``pyro.param``, plates called
``"batch"`` or ``"N"``, observed sites called ``"obs"``.  Each goes through the evaluator
(against closed-form log p(x) where one exists), an objective, ``pyro.infer.SVI`` and
``pyrovae.fit``.
"""
import functools
import importlib.util
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from torch import nn

import pyrovae
from pyrovae import PyroVAEError, TrainConfig, evaluate, fit, log_likelihood_bound, make_objective

F64 = dict(dtype=torch.float64)


# --- 1. Pyro's VAE example layout (scripts/pyro_example_pair.py): nn.Module with
#        model/guide methods, pyro.module, sites latent/obs ------------------------------

def _example_vae_class():
    spec = importlib.util.spec_from_file_location("pyro_example_pair", SCRIPTS / "pyro_example_pair.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ExampleVAE


SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
ExampleVAE = functools.partial(_example_vae_class(), z_dim=4, hidden=32)


@pytest.fixture
def digits(sample_data):
    return sample_data.test_x[:64], sample_data.train_x[:256]


def test_example_vae_layout_evaluates_trains_and_runs_under_svi(digits):
    x, train = digits
    vae = ExampleVAE()
    lb1 = log_likelihood_bound(vae.model, vae.guide, x, num_particles=1).mean()
    lb100 = log_likelihood_bound(vae.model, vae.guide, x, num_particles=100).mean()
    assert lb100 > lb1  # called as vae.guide(x): one argument, sites latent/obs
    report = evaluate(vae.model, vae.guide, x[:8], num_particles=(1, 10), progress=False)
    assert report["bounds"][0]["bits_per_dim"] > 0 and report["active_units"]["latent"]
    for name in ("elbo", "iwae:3", "dreg:3", "stl", "renyi:0.5:2", "meanfield", "tracegraph"):
        assert torch.isfinite(make_objective(name).differentiable_loss(vae.model, vae.guide, x))
    hist = fit(vae.model, vae.guide, torch.bernoulli(train), TrainConfig(epochs=3, batch_size=64,
                                                                            lr=1e-2), progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(p.device.type == "cpu" for p in vae.parameters())


def test_svi_with_every_objective_after_import(digits):
    """import pyrovae changes no global Pyro setting: SVI trains its pairs and users'."""
    assert pyro.settings.get("module_local_params") is False
    x = torch.bernoulli(digits[1][:64])
    for name in ["elbo", "meanfield", "tracegraph", "iwae:2", "dreg:2", "stl", "renyi:0.5:2"]:
        pyro.clear_param_store()
        torch.manual_seed(0)
        vae = ExampleVAE()
        model, guide = pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=4, hidden=32),
                                          x_dim=784)
        for m, g in ((vae.model, vae.guide), (model, guide)):
            svi = SVI(m, g, pyro.optim.Adam({"lr": 1e-2}), make_objective(name))
            losses = [svi.step(x) for _ in range(15)]
            assert sum(losses[-3:]) < sum(losses[:3]), name


def test_two_pyrovae_models_never_share_parameters_under_svi(digits):
    x = torch.bernoulli(digits[1][:32])
    cfg = pyrovae.ModelConfig(latent_dim=4, hidden=16)
    (m1, g1), (m2, g2) = (pyrovae.build_pair(cfg, x_dim=784) for _ in range(2))
    before = m2.decoder[0].weight.detach().clone()
    svi = SVI(m1, g1, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi.step(x)
    svi2 = SVI(m2, g2, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi2.step(x)
    assert not torch.equal(m2.decoder[0].weight, before)  # m2's own weights were trained
    assert not torch.equal(m1.decoder[0].weight, m2.decoder[0].weight)


# --- 2. plain functions with pyro.param, plate "batch", site "obs": linear-Gaussian --------

D, L, NOISE = 5, 2, 0.6
W0 = torch.randn(D, L, generator=torch.Generator().manual_seed(3), **F64)


def lg_model(x):
    w = pyro.param("W", W0.clone())
    with pyro.plate("batch", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(L, **F64), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z @ w.T, NOISE).to_event(1), obs=x)


def lg_guide(x):
    a = pyro.param("A", torch.zeros(D, L, **F64))
    s = pyro.param("s", torch.ones(L, **F64), constraint=dist.constraints.positive)
    with pyro.plate("batch", x.shape[0]):
        pyro.sample("z", dist.Normal(x @ a, s).to_event(1))


def lg_exact(x, w):
    return dist.MultivariateNormal(torch.zeros(D, **F64), w @ w.T + NOISE**2 * torch.eye(D, **F64)
                                   ).log_prob(x)


def lg_data(n=200):
    z = torch.randn(n, L, generator=torch.Generator().manual_seed(4), **F64)
    return z @ W0.T + NOISE * torch.randn(n, D, generator=torch.Generator().manual_seed(5), **F64)


def test_plain_function_pair_with_batch_plate_against_the_closed_form():
    x = lg_data()
    lg_model(x), lg_guide(x)  # create the params
    lb = log_likelihood_bound(lg_model, lg_guide, x, num_particles=2000)
    exact = lg_exact(x, pyro.param("W").detach())
    gap1 = (exact - log_likelihood_bound(lg_model, lg_guide, x, num_particles=1)).mean()
    assert (exact - lb).mean() < 0.25 * gap1 and (exact - lb).mean() > -0.05
    report = evaluate(lg_model, lg_guide, x, num_particles=(1, 100), progress=False)
    assert report["bounds"][1]["bits_per_dim"] is None  # a density on continuous data
    assert report["bounds"][1]["mc_se"] > 0
    hist = fit(lg_model, lg_guide, x, TrainConfig(epochs=30, batch_size=50, lr=0.05),
               progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # pyro.param sites found and trained
    assert not torch.equal(pyro.param("A").detach(), torch.zeros(D, L, **F64))
    svi = SVI(lg_model, lg_guide, pyro.optim.Adam({"lr": 0.05}), make_objective("iwae:4"))
    assert math.isfinite(svi.step(x))


def test_exact_posterior_makes_every_bound_exact_and_khat_not_applicable():
    x = lg_data(40)

    def exact_guide(x):
        w = pyro.param("W").detach()
        cov = torch.linalg.inv(torch.eye(L, **F64) + w.T @ w / NOISE**2)
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(x @ w @ cov / NOISE**2, cov))

    lg_model(x)
    exact = lg_exact(x, pyro.param("W").detach())
    report = evaluate(lg_model, exact_guide, x, num_particles=(1, 10, 200), progress=False)
    for row in report["bounds"]:
        assert row["mean"] == pytest.approx(float(exact.mean()), abs=1e-6)
        assert row["mc_se"] == pytest.approx(0, abs=1e-6)
    assert report["psis"]["applicable"] == 0 and report["psis"]["khat_max"] is None
    assert report["ess"]["normalized_min"] == pytest.approx(1.0)
    md = pyrovae.markdown_table(report)
    assert "not applicable" in md and "inf" not in md


# --- 3. a discrete latent, trained with tracegraph -------------------------------------

class Mixture(PyroModule):
    """c ~ Categorical(pi), x | c ~ N(mu_c, 1): log p(x) = logsumexp_c log pi_c N(x; mu_c, 1)."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([-2.0, 0.0, 3.0], **F64))
        self.logits = nn.Parameter(torch.zeros(3, **F64))

    def forward(self, x):
        with pyro.plate("N", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.logits))
            pyro.sample("obs", dist.Normal(self.mu[c], 1.0), obs=x)

    def log_marginal(self, x):
        comp = dist.Normal(self.mu, 1.0).log_prob(x[:, None]) + self.logits.log_softmax(-1)
        return comp.logsumexp(-1)


class MixtureGuide(PyroModule):
    def __init__(self, model, exact=False):
        super().__init__()
        self.net = nn.Linear(1, 3).double()
        object.__setattr__(self, "ref", model)
        self.exact = exact

    def forward(self, x):
        if self.exact:
            m = self.ref
            logits = (dist.Normal(m.mu, 1.0).log_prob(x[:, None]) + m.logits.log_softmax(-1))
        else:
            logits = self.net(x[:, None])
        with pyro.plate("N", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=logits.detach() if self.exact else logits))


def test_discrete_latent_exact_bound_and_tracegraph_training():
    model = Mixture()
    x = torch.cat([torch.randn(30, **F64) - 2, torch.randn(30, **F64) + 3])
    exact = model.log_marginal(x).detach()
    with torch.no_grad():
        lb = log_likelihood_bound(model, MixtureGuide(model, exact=True), x, num_particles=5)
    assert torch.allclose(lb, exact, atol=1e-9)
    guide = MixtureGuide(model)
    report = evaluate(model, guide, x, num_particles=(1, 300), progress=False)
    assert report["active_units"] == {}  # a discrete latent has no active units
    with pytest.raises(PyroVAEError, match="use tracegraph"):
        make_objective("iwae:2").differentiable_loss(model, guide, x)
    with pytest.raises(PyroVAEError, match="meanfield needs an analytic KL.*tracegraph"):
        make_objective("meanfield").differentiable_loss(model, guide, x)
    before = log_likelihood_bound(model, guide, x, num_particles=1).mean()
    fit(model, guide, x, TrainConfig(epochs=60, batch_size=60, lr=0.05, objective="tracegraph"),
        progress=False)
    after = log_likelihood_bound(model, guide, x, num_particles=1).mean()
    assert after > before + 0.1
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), make_objective("tracegraph"))
    assert math.isfinite(svi.step(x))


# --- 4. a two-level hierarchy, exact posterior factorized q(z1|x) q(z2|z1,x) -----------

A = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], **F64)
B = torch.randn(4, 2, generator=torch.Generator().manual_seed(8), **F64)


def h_model(x):
    with pyro.plate("N", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros(2, **F64), 1.0).to_event(1))
        z2 = pyro.sample("z2", dist.Normal(z1 @ A.T, 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z2 @ B.T, 0.5).to_event(1), obs=x)


def h_posterior(x):
    """Joint Gaussian posterior of (z1, z2) given x."""
    i2 = torch.eye(2, **F64)
    prior_cov = torch.cat([torch.cat([i2, A.T], 1), torch.cat([A, A @ A.T + i2], 1)], 0)
    obs = torch.cat([torch.zeros(4, 2, **F64), B], 1)  # x = obs @ [z1; z2] + noise
    prec = torch.linalg.inv(prior_cov) + obs.T @ obs / 0.25
    cov = torch.linalg.inv(prec)
    return (x @ obs / 0.25) @ cov, cov


def h_guide(x):
    mean, cov = h_posterior(x)
    s11, s21, s22 = cov[:2, :2], cov[2:, :2], cov[2:, 2:]
    gain = s21 @ torch.linalg.inv(s11)
    with pyro.plate("N", x.shape[0]):
        z1 = pyro.sample("z1", dist.MultivariateNormal(mean[:, :2], s11))
        pyro.sample("z2", dist.MultivariateNormal(mean[:, 2:] + (z1 - mean[:, :2]) @ gain.T,
                                                  s22 - gain @ cov[:2, 2:]))


def test_hierarchy_exact_for_every_k_and_trainable_with_a_poor_guide():
    x = torch.randn(30, 4, **F64) * 2
    cov = B @ (A @ A.T + torch.eye(2, **F64)) @ B.T + 0.25 * torch.eye(4, **F64)
    exact = dist.MultivariateNormal(torch.zeros(4, **F64), cov).log_prob(x)
    for k in (1, 7, 50):
        assert torch.allclose(log_likelihood_bound(h_model, h_guide, x, num_particles=k), exact,
                              atol=1e-8)
    terms = pyrovae.elbo_terms(h_model, h_guide, x, num_particles=20)
    assert set(terms["kl_per_site"]) == {"z1", "z2"}

    def poor_guide(x):  # mean-field, linear in x, starting at the prior's scale
        g = pyro.param("G", torch.zeros(4, 4, **F64))
        s = pyro.param("s", torch.ones(4, **F64), constraint=dist.constraints.positive)
        with pyro.plate("N", x.shape[0]):
            pyro.sample("z1", dist.Normal((x @ g)[:, :2], s[:2]).to_event(1))
            pyro.sample("z2", dist.Normal((x @ g)[:, 2:], s[2:]).to_event(1))

    poor_guide(x)
    hist = fit(h_model, poor_guide, x, TrainConfig(epochs=40, batch_size=30, lr=0.05),
               progress=False)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert (exact - log_likelihood_bound(h_model, poor_guide, x, num_particles=500)).mean() > 0


# --- 5. errors from users' pairs say what to change -----------------------------------

def test_batch_shaped_prior_names_the_fix():
    def model(x):
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0))  # no .to_event(1)
            pyro.sample("obs", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("batch", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(3), 1.0))

    with pytest.raises(PyroVAEError, match=r"site 'z' does not fit pyro.plate\('batch'\).*to_event"):
        log_likelihood_bound(model, guide, torch.zeros(5, 1), num_particles=2)


def test_plates_that_hold_no_datapoint_are_named():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))  # a global latent
        with pyro.plate("obs_plate", x.shape[0]):
            pyro.sample("obs", dist.Normal(g, 1.0), obs=x)

    def guide(x):
        pyro.sample("g", dist.Normal(0.0, 1.0))

    with pytest.raises(PyroVAEError, match="plates found: 'obs_plate'.*sites outside: \\['g'\\]"):
        log_likelihood_bound(model, guide, torch.zeros(5), num_particles=2)


def test_bernoulli_likelihood_on_standardized_data_is_one_line():
    model, guide = pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=2, hidden=8), x_dim=784)
    x = torch.randn(16, 784)
    with pytest.raises(PyroVAEError, match="outside the support.*likelihood gaussian"):
        fit(model, guide, x, TrainConfig(epochs=1), progress=False)
    with pytest.raises(PyroVAEError, match="outside the support"):
        log_likelihood_bound(model, guide, x, num_particles=2)


def test_gaussian_vae_trains_on_standardized_data():
    model, guide = pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=2, hidden=16,
                                                          likelihood="gaussian"), x_dim=20)
    x = torch.randn(128, 20) @ torch.randn(20, 20) * 0.3
    hist = fit(model, guide, x, TrainConfig(epochs=15, batch_size=32, lr=3e-3),
               test_data=x[:32], progress=False)
    assert hist[-1]["test_elbo"] > hist[0]["test_elbo"]
    assert evaluate(model, guide, x[:16], num_particles=(1, 8), progress=False
                    )["bounds"][0]["bits_per_dim"] is None
