"""Objectives against closed forms on a linear-Gaussian model (float64, fixed seeds).

    z ~ N(0, I_2),   x | z ~ N(W z + b, sigma^2 I_3),   q(z | x) = N(A x + c, diag(s^2))

log p(x) = log N(x; b, W W^T + sigma^2 I); W has orthogonal columns, so the exact posterior
is diagonal and the guide family contains it.  One x is replicated N times: the objective
sums N independent estimates, and zero-valued per-datapoint offsets (``delta``, ``rho`` in
the guide, ``eta`` in the model) turn one backward pass into N per-replicate gradients.
"""
import contextlib
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO
from torch import nn

from pyrovae import registry
from pyrovae.errors import PyroVAEError
from pyrovae.infer.handlers import scale_latents
from pyrovae.infer.objectives import make_objective
from pyrovae.infer.particles import IWAE, RenyiBound

F64 = dict(dtype=torch.float64)
W0 = torch.tensor([[1.5, 0.4], [1.5, -0.4], [0.0, 0.4]], **F64)
B0, SIGMA = torch.tensor([0.3, -0.2, 0.5], **F64), 0.7
X0 = torch.tensor([1.2, 0.4, -0.6], **F64)
ALL = ["elbo", "elbo:3", "meanfield", "tracegraph", "renyi:0.5:4", "renyi:-1:3", "iwae:1",
       "iwae:5", "dreg:5", "dreg:1", "stl", "stl:3"]


class Model(nn.Module):
    def __init__(self, n, *, full_size=None, global_shift=False):
        super().__init__()
        self.W, self.b = nn.Parameter(W0.clone()), nn.Parameter(B0.clone())
        self.log_sigma = nn.Parameter(torch.tensor(math.log(SIGMA), **F64))
        self.eta = nn.Parameter(torch.zeros(n, 3, **F64))
        self.full_size, self.global_shift = full_size, global_shift

    def forward(self, x, y=None):
        shift = 0.0
        if self.global_shift:  # a latent outside the data plate
            shift = pyro.sample("u", dist.Normal(torch.zeros(1, **F64), 1.0).to_event(1))
        n = x.shape[0]
        with pyro.plate("data", self.full_size or n, subsample=torch.arange(n)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, **F64), 1.0).to_event(1))
            loc = z @ self.W.T + self.b + self.eta + shift
            pyro.sample("x", dist.Normal(loc, self.log_sigma.exp()).to_event(1), obs=x)


class Guide(nn.Module):
    def __init__(self, n, *, exact=True, full_size=None, global_shift=False):
        super().__init__()
        prec = 1 + (W0 ** 2).sum(0) / SIGMA ** 2  # W^T W is diagonal
        A = W0.T / SIGMA ** 2 / prec[:, None]
        A, c, s = A, -A @ B0, prec.rsqrt()
        if not exact:
            A, c, s = A + 0.3, c - 0.4, 1.6 * s
        self.A, self.c, self.log_s = nn.Parameter(A), nn.Parameter(c), nn.Parameter(s.log())
        self.delta = nn.Parameter(torch.zeros(n, 2, **F64))
        self.rho = nn.Parameter(torch.zeros(n, 2, **F64))
        self.u = nn.Parameter(torch.tensor([0.1, -1.0], **F64))
        self.full_size, self.global_shift = full_size, global_shift

    def forward(self, x, y=None):
        if self.global_shift:
            pyro.sample("u", dist.Normal(self.u[:1], self.u[1:].exp()).to_event(1))
        n = x.shape[0]
        with pyro.plate("data", self.full_size or n, subsample=torch.arange(n)):
            loc = x @ self.A.T + self.c + self.delta
            pyro.sample("z", dist.Normal(loc, (self.log_s + self.rho).exp()).to_event(1))


def pair(n, exact=True, **kw):
    return Model(n, **kw), Guide(n, exact=exact, **kw)


def log_px(x=X0):
    cov = W0 @ W0.T + SIGMA ** 2 * torch.eye(3, **F64)
    return float(dist.MultivariateNormal(B0, cov).log_prob(x))


def elbo_closed_form(guide, beta=1.0, x=X0):
    """E_q log p(x|z) - beta KL(q || N(0, I)) for one datapoint."""
    mu, s = guide.A.detach() @ x + guide.c.detach(), guide.log_s.detach().exp()
    r = x - W0 @ mu - B0
    recon = (-1.5 * math.log(2 * math.pi * SIGMA ** 2)
             - (r @ r + ((W0 ** 2).sum(0) * s ** 2).sum()) / (2 * SIGMA ** 2))
    kl = 0.5 * (s ** 2 + mu ** 2 - 1 - 2 * s.log()).sum()
    return float(recon - beta * kl)


def reference_log_w(guide, R, K, beta=1.0, seed=123):
    """[R, K] log weights drawn by hand, independent of the objectives' code."""
    g = torch.Generator().manual_seed(seed)
    mu, s = guide.A.detach() @ X0 + guide.c.detach(), guide.log_s.detach().exp()
    z = mu + s * torch.randn(R, K, 2, generator=g, **F64)
    lik = dist.Normal(z @ W0.T + B0, SIGMA).log_prob(X0).sum(-1)
    return lik + beta * (dist.Normal(0.0, 1.0).log_prob(z) - dist.Normal(mu, s).log_prob(z)).sum(-1)


def ref_bound(name, lw):
    """Per-replicate reference value of objective ``name`` from [R, K] log weights."""
    base, *params = name.split(":")
    alpha = float(params[0]) if base == "renyi" else 0.0
    if base in ("renyi", "iwae", "dreg"):
        return (torch.logsumexp((1 - alpha) * lw, 1) - math.log(lw.shape[1])) / (1 - alpha)
    return lw.mean(1)


def K_of(name):
    tail = name.split(":")[-1]
    return int(tail) if ":" in name and tail.lstrip("-").isdigit() else 1


def estimate(name, n, exact=True, seed=0, beta=None, **kw):
    """(value per datapoint, per-replicate objective gradients, model, guide)."""
    model, guide = pair(n, exact=exact, **kw)
    obj = make_objective(name)
    torch.manual_seed(seed)
    with scale_latents(beta) if beta is not None else contextlib.nullcontext():
        loss = obj.differentiable_loss(model, guide, X0.expand(n, 3))
    loss.backward()
    grads = {k: -getattr(mod, k).grad for mod, ks in ((guide, "delta rho"), (model, "eta"))
             for k in ks.split()}
    return -float(loss.detach()) / n, grads, model, guide


# --- names -------------------------------------------------------------------------

def test_names_parse_to_configured_objects():
    assert make_objective("iwae:50").num_particles == 50
    r = make_objective("renyi:0.5:10")
    assert (r.alpha, r.num_particles) == (0.5, 10)
    assert make_objective("renyi:-1").num_particles == 2
    assert make_objective("elbo").num_particles == 1 and make_objective("elbo:4").vectorize_particles
    assert type(make_objective("dreg:3")).__name__ == "DReG_IWAE"
    assert registry.get("objective", "iwae:7")("iwae:7").num_particles == 7
    assert {"elbo", "meanfield", "tracegraph", "renyi", "iwae", "dreg", "stl"} <= set(
        registry.names("objective"))


@pytest.mark.parametrize("bad", ["iwae", "iwae:0", "iwae:2.5", "dreg:x", "renyi:1", "renyi",
                                 "renyi:nan", "elbo:2:3", "stl:-1", "nope", "", " : "])
def test_bad_names_list_valid_syntax(bad):
    with pytest.raises(PyroVAEError) as e:
        make_objective(bad)
    assert "iwae:K (integer K >= 1)" in str(e.value) and "renyi:ALPHA[:K]" in str(e.value)


# --- values --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in ALL if n != "meanfield"])
def test_every_estimate_is_log_px_at_the_exact_posterior(name):
    # log w = log p(x) for every z when q is the posterior: each objective is exact
    value, _, model, guide = estimate(name, 50)
    assert value == pytest.approx(log_px(), abs=1e-9)
    assert -make_objective(name).loss(model, guide, X0.expand(50, 3)) / 50 == pytest.approx(
        log_px(), abs=1e-9)


@pytest.mark.parametrize("name,beta", [(n, 1.0) for n in ALL] + [
    (n, 0.5) for n in ("renyi:0.5:4", "iwae:5", "dreg:5", "stl:3")])
def test_value_matches_closed_form_or_reference(name, beta):
    n, R = 4000, 20000
    value, _, _, guide = estimate(name, n, exact=False, beta=beta)
    ref = ref_bound(name, reference_log_w(guide, R, K_of(name), beta=beta))
    se = float(ref.std()) * math.sqrt(1 / n + 1 / R)
    multi = name.split(":")[0] in ("renyi", "iwae", "dreg")
    target = float(ref.mean()) if multi else elbo_closed_form(guide, beta)
    assert abs(value - target) < 5 * se, (value, target, se)


def test_bounds_are_ordered():
    _, _, _, guide = estimate("elbo", 1, exact=False)
    values = [estimate(f"iwae:{k}", 4000, exact=False)[0] for k in (5, 50)]
    assert elbo_closed_form(guide) < values[0] < values[1] < log_px()


def _equal_seed(a, b, n, **kw):
    model, guide = pair(n, exact=False, **kw)
    x = X0.expand(n, 3)
    out = []
    for obj in (a, b):
        obj.loss(model, guide, x)  # first call guesses max_plate_nesting (and draws)
        torch.manual_seed(1)
        out.append(obj.loss(model, guide, x))
    return out


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_agrees_with_pyro_renyi_when_unsubsampled(alpha):
    for kw in ({}, {"global_shift": True}):  # per-datapoint, and the joint bound
        ours, pyros = _equal_seed(RenyiBound(4, alpha=alpha),
                                  RenyiELBO(alpha, num_particles=4, vectorize_particles=True),
                                  20, **kw)
        assert ours == pytest.approx(pyros, rel=1e-10)


def test_subsampled_plate_scales_outside_the_logsumexp():
    full, sub = _equal_seed(IWAE(4), IWAE(4), 20)[0], _equal_seed(IWAE(4), IWAE(4), 20,
                                                                   full_size=100)[0]
    assert sub == pytest.approx(5 * full, rel=1e-10)  # N/B * sum of per-datapoint bounds
    pyros = _equal_seed(IWAE(4), RenyiELBO(0, num_particles=4, vectorize_particles=True), 20,
                        full_size=100)[1]
    assert abs(pyros - sub) > 1.0  # Pyro puts N/B inside the log-sum-exp


# --- gradients -------------------------------------------------------------------------

def _mean_se(g):
    return g.mean(0), g.std(0) / math.sqrt(g.shape[0])


@pytest.mark.parametrize("a,b", [("iwae:5", "dreg:5"), ("elbo", "stl"), ("elbo:3", "stl:3")])
def test_estimators_of_one_objective_have_the_same_expected_gradient(a, b):
    ga, gb = estimate(a, 4000, exact=False, seed=2)[1], estimate(b, 4000, exact=False, seed=3)[1]
    for k in ga:
        (ma, sa), (mb, sb) = _mean_se(ga[k]), _mean_se(gb[k])
        assert ((ma - mb).abs() < 5 * (sa ** 2 + sb ** 2).sqrt()).all(), (k, ma, mb)


def test_dreg_model_gradient_is_iwae_model_gradient_sample_by_sample():
    ga, gb = estimate("iwae:5", 200, exact=False, seed=4)[1], estimate("dreg:5", 200, exact=False,
                                                                        seed=4)[1]
    torch.testing.assert_close(ga["eta"], gb["eta"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("K", [5, 20])
def test_dreg_encoder_variance_below_iwae(K):
    gi, gd = estimate(f"iwae:{K}", 4000, exact=False, seed=5)[1], \
        estimate(f"dreg:{K}", 4000, exact=False, seed=6)[1]
    for k in ("delta", "rho"):
        assert (gd[k].var(0) < 0.5 * gi[k].var(0)).all(), (k, gd[k].var(0), gi[k].var(0))


def test_path_estimators_vanish_at_the_exact_posterior():
    ge = estimate("elbo", 2000, seed=7)[1]
    assert (ge["delta"].var(0) > 1e-2).all() and (ge["rho"].var(0) > 1e-2).all()
    for name in ("stl", "stl:3", "dreg:5"):
        g = estimate(name, 2000, seed=7)[1]
        assert g["delta"].abs().max() < 1e-9 and g["rho"].abs().max() < 1e-9, name


# --- hierarchical guides, β, errors, the real VAE ----------------------------------------

class Chain(nn.Module):
    """z1 ~ N(0, 1), z2 | z1 ~ N(a z1, tau^2), x | z2 ~ N(z2, sigma^2), 1-D each; the guide
    q(z1|x) q(z2|z1,x) holds the exact posterior, reached only through z1's path into q(z2|.)."""

    a, tau, sigma = 1.5, 0.8, 0.6

    def __init__(self, guide):
        super().__init__()
        a, t2, s2 = self.a, self.tau ** 2, self.sigma ** 2
        p1 = 1 + a * a / (t2 + s2)
        p2 = 1 / t2 + 1 / s2
        init = [a / (t2 + s2) / p1, -0.5 * math.log(p1), a / t2 / p2, 1 / s2 / p2,
                -0.5 * math.log(p2)]
        self.theta = nn.Parameter(torch.tensor(init, **F64)) if guide else None

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            if self.theta is None:
                z1 = pyro.sample("z1", dist.Normal(torch.zeros((), **F64), 1.0))
                z2 = pyro.sample("z2", dist.Normal(self.a * z1, self.tau))
                pyro.sample("x", dist.Normal(z2, self.sigma), obs=x)
            else:
                c1, ls1, g, h, ls2 = self.theta
                z1 = pyro.sample("z1", dist.Normal(c1 * x, ls1.exp()))
                pyro.sample("z2", dist.Normal(g * z1 + h * x, ls2.exp()))


@pytest.mark.parametrize("name", ["stl", "dreg:4"])
def test_path_estimators_keep_the_path_through_earlier_latents(name):
    model, guide = Chain(False), Chain(True)
    x = torch.linspace(-2, 2, 64, **F64)
    torch.manual_seed(8)
    make_objective(name).differentiable_loss(model, guide, x).backward()
    assert guide.theta.grad.abs().max() < 1e-9  # exact posterior: zero, sample by sample
    torch.manual_seed(8)
    guide.theta.grad = None
    make_objective("elbo").differentiable_loss(model, guide, x).backward()
    assert guide.theta.grad.abs().max() > 1e-2


@pytest.mark.parametrize("beta", [0.0, 4.0])
@pytest.mark.parametrize("name", ["elbo", "stl", "iwae:1", "meanfield"])
def test_beta_handler_scales_the_latent_terms(name, beta):
    value, _, _, guide = estimate(name, 4000, exact=False, beta=beta)
    se = float(reference_log_w(guide, 4000, 1, beta=beta).std()) / math.sqrt(4000)
    assert abs(value - elbo_closed_form(guide, beta)) < 5 * se + 1e-9


def test_unsupported_pairs_are_clear_errors():
    def model(x, y=None):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(torch.tensor(0.5, **F64)))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(torch.tensor(0.3, **F64)))

    x = torch.zeros(4, **F64)
    with pytest.raises(PyroVAEError, match="reparameterizable.*use tracegraph"):
        make_objective("iwae:2").differentiable_loss(model, guide, x)
    with pytest.raises(PyroVAEError, match="the guide must sample every model latent"):
        make_objective("iwae:2").loss(model, lambda x, y=None: None, x)
    make_objective("tracegraph").differentiable_loss(model, guide, x)  # score function: fine


@pytest.mark.parametrize("name", ALL)
def test_trains_the_package_vae_through_plain_nn_modules(name):
    # the trainer's call: nn.Module networks inside PyroModules, β handler, validation off
    from pyrovae.build import build_pair
    from pyrovae.config import ModelConfig

    torch.manual_seed(0)
    model, guide = build_pair(ModelConfig(latent_dim=3, hidden=8), x_dim=20, num_classes=10)
    x, y = torch.bernoulli(torch.full((6, 20), 0.3)), torch.zeros(6, dtype=torch.long)
    with pyro.validation_enabled(False), scale_latents(0.5):
        loss = make_objective(name).differentiable_loss(model, guide, x, y)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    for net in (model.decoder, guide.encoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.filterwarnings("ignore")  # the tracer's notes on Pyro's shape checks
def test_dreg_refuses_jit_tracing_which_would_drop_its_hooks():
    model, guide = pair(4, exact=False)
    module = make_objective("dreg:2")(model, guide)  # Pyro's ELBO module, as the trainer uses
    with pytest.raises(PyroVAEError, match="--engine eager"):
        torch.jit.trace(module, (X0.expand(4, 3),), check_trace=False)
