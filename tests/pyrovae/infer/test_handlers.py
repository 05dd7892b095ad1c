"""β and γ handlers against closed forms.

The closed forms use a linear-Gaussian pair,

    p(z) = N(0, I),  p(x | z) = N(W z + b, sigma^2 I),  q(z | x) = N(m(x), diag(s(x)^2)),

whose ELBO terms are known exactly:

    recon = -D/2 log(2 pi sigma^2) - (|x - W m - b|^2 + sum_i |W_:i|^2 s_i^2) / (2 sigma^2)
    KL    = 1/2 sum_i (s_i^2 + m_i^2 - 1 - log s_i^2).

To make Pyro's Monte Carlo ELBO *exact*, the guide draws its 2d samples at the sigma points
z = m ± sqrt(d) s ⊙ e_i (one per copy of each datapoint).  They match q's mean and
covariance, and every term of the ELBO is a quadratic in z, so their average is the exact
expectation: the tests can compare to float64 precision.
"""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.nn import PyroModule
from torch import nn

from pyrovae.config import TrainConfig
from pyrovae.errors import PyroVAEError
from pyrovae.infer.handlers import ScaleSitesMessenger, scale_latents, scale_observed

X_DIM, Z_DIM, N = 5, 3, 4  # N datapoints, each copied 2 * Z_DIM times
SIGMA = 0.7


class SigmaPointNormal(dist.Normal):
    """N(loc, scale) whose reparameterized draw is ``loc + scale * eps`` for a given eps."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        self.eps = eps

    def rsample(self, sample_shape=torch.Size()):
        assert sample_shape == torch.Size()
        return self.loc + self.scale * self.eps

    def expand(self, batch_shape, _instance=None):
        # plates (data, or an evaluator's particles) broadcast; every particle is the same
        # sigma point, so particle averages stay exact
        shape = torch.Size(batch_shape)
        return SigmaPointNormal(self.loc.expand(shape), self.scale.expand(shape),
                                self.eps.expand(shape))


def sigma_points(n_copies_of: int) -> torch.Tensor:
    """[n * 2d, d]: ±sqrt(d) e_i for each of n datapoints; mean 0, covariance I."""
    eye = math.sqrt(Z_DIM) * torch.eye(Z_DIM, dtype=torch.float64)
    return torch.cat([eye, -eye]).repeat(n_copies_of, 1)


class LinearGaussian(PyroModule):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(X_DIM, Z_DIM, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(X_DIM, dtype=torch.float64))

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(self.b[:Z_DIM]), 1.).expand([Z_DIM])
                            .to_event(1))
            return pyro.sample("x", dist.Normal(z @ self.W.T + self.b, SIGMA).to_event(1), obs=x)


class SigmaPointGuide(PyroModule):
    """q(z | x) = N(x A + c, softplus(x B + d)^2), sampled at sigma points."""

    def __init__(self):
        super().__init__()
        self.A = nn.Parameter(0.5 * torch.randn(X_DIM, Z_DIM, dtype=torch.float64))
        self.B = nn.Parameter(0.5 * torch.randn(X_DIM, Z_DIM, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(Z_DIM, dtype=torch.float64))

    def loc_scale(self, x):
        return x @ self.A + self.c, nn.functional.softplus(x @ self.B) + 0.1

    def forward(self, x, y=None):
        loc, scale = self.loc_scale(x)
        eps = sigma_points(x.shape[0] // (2 * Z_DIM))
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", SigmaPointNormal(loc, scale, eps).to_event(1))


def closed_form(model, guide, x):
    """Exact per-datapoint (recon, KL), each [n]."""
    m, s = guide.loc_scale(x)
    resid = x - m @ model.W.T - model.b
    recon = (-0.5 * X_DIM * math.log(2 * math.pi * SIGMA ** 2)
             - ((resid ** 2).sum(-1) + (s ** 2 @ (model.W ** 2).T).sum(-1)) / (2 * SIGMA ** 2))
    kl = 0.5 * (s ** 2 + m ** 2 - 1 - torch.log(s ** 2)).sum(-1)
    return recon, kl


@pytest.fixture
def pair_and_data():
    torch.manual_seed(0)
    x = torch.rand(N, X_DIM, dtype=torch.float64).repeat_interleave(2 * Z_DIM, dim=0)
    return LinearGaussian(), SigmaPointGuide(), x


def per_datapoint(loss):  # the loss sums over the 2d sigma-point copies of each datapoint
    return loss / (2 * Z_DIM)


@pytest.mark.parametrize("elbo", [Trace_ELBO(), TraceMeanField_ELBO()], ids=["trace", "meanfield"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_scale_latents_gives_recon_minus_beta_kl(pair_and_data, elbo, beta):
    model, guide, x = pair_and_data
    with scale_latents(beta):
        loss = elbo.differentiable_loss(model, guide, x)
    recon, kl = closed_form(model, guide, x[::2 * Z_DIM])
    expected = -(recon - beta * kl).sum()
    assert per_datapoint(loss).item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-10)
    # the gradient is that of the beta-ELBO too
    grads = torch.autograd.grad(loss, list(guide.parameters()))
    want = torch.autograd.grad(expected * 2 * Z_DIM, list(guide.parameters()))
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("gamma", [0.0, 0.25])
def test_scale_observed_gives_gamma_recon_minus_kl(pair_and_data, gamma):
    model, guide, x = pair_and_data
    with scale_observed(gamma):
        loss = Trace_ELBO().differentiable_loss(model, guide, x)
    recon, kl = closed_form(model, guide, x[::2 * Z_DIM])
    assert per_datapoint(loss).item() == pytest.approx(-(gamma * recon - kl).sum().item(),
                                                       rel=1e-12, abs=1e-10)


def test_beta_one_is_the_unscaled_loss_bit_for_bit():
    from pyrovae.build import build_pair
    from pyrovae.config import ModelConfig

    model, guide = build_pair(ModelConfig(latent_dim=4, hidden=16), x_dim=784, num_classes=10)
    x = torch.bernoulli(torch.full((8, 784), 0.4))
    torch.manual_seed(3)
    plain = Trace_ELBO().differentiable_loss(model, guide, x)
    torch.manual_seed(3)
    with scale_latents(1.0):
        scaled = Trace_ELBO().differentiable_loss(model, guide, x)
    assert torch.equal(plain, scaled)


def test_factors_are_validated():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(PyroVAEError, match="finite and >= 0"):
            ScaleSitesMessenger(latent=bad)
        with pytest.raises(PyroVAEError, match="finite and >= 0"):
            scale_observed(bad)


def test_evaluation_is_at_beta_one_whatever_the_training_beta(pair_and_data):
    """The trainer's test metrics come from the β = 1 ELBO even when training at β = 4."""
    from pyrovae.data import ImageData
    from pyrovae.evaluation.bounds import elbo_terms
    from pyrovae.train.fit import fit

    model, guide, x = pair_and_data
    y = torch.zeros(len(x), dtype=torch.long)
    data = ImageData("lg", x, y, x, y, image_shape=(X_DIM,))
    cfg = TrainConfig(epochs=3, batch_size=len(x), eval_batch_size=len(x), beta=4.0,
                      beta_schedule="linear", warmup_epochs=2)
    hist = fit(model, guide, data, cfg, progress=False)
    assert [r["beta"] for r in hist] == pytest.approx([2.0, 4.0, 4.0], abs=1e-6)
    recon, kl = closed_form(model, guide, x[::2 * Z_DIM])
    with torch.no_grad():
        assert hist[-1]["test_elbo"] == pytest.approx((recon - kl).mean().item(), rel=1e-9)
        assert hist[-1]["test_kl"] == pytest.approx(kl.mean().item(), rel=1e-9)
        terms = elbo_terms(model, guide, x)  # outside any handler: the β = 1 terms
        with scale_latents(4.0), scale_observed(0.5):  # and a handler left open cannot leak in
            inside = elbo_terms(model, guide, x)
    for t in (terms, inside):
        assert per_datapoint(t["recon"].sum()).item() == pytest.approx(recon.sum().item(), rel=1e-9)
        assert per_datapoint(t["kl"].sum()).item() == pytest.approx(kl.sum().item(), rel=1e-9)


def test_fit_opens_extra_handlers_around_the_loss(pair_and_data):
    """``fit(handlers=(scale_observed(0),))`` trains on the KL term alone."""
    from pyrovae.data import ImageData
    from pyrovae.train.fit import fit

    model, guide, x = pair_and_data
    y = torch.zeros(len(x), dtype=torch.long)
    data = ImageData("lg", x, y, x, y, image_shape=(X_DIM,))
    w0 = model.W.detach().clone()
    hist = fit(model, guide, data, TrainConfig(epochs=20, batch_size=len(x), lr=0.05),
               progress=False, handlers=(scale_observed(0.0),))
    assert torch.equal(model.W, w0)  # a KL-only loss gives the decoder zero gradient
    assert hist[-1]["test_kl"] < 0.3 * hist[0]["test_kl"]
