"""Guides: valid full-covariance factors, the IAF density against change of variables,
the local (non-amortized) guide, and a pair composed by hand the way a user would."""
import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyrovae.build import build_pair
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.data import ImageData
from pyrovae.evaluation.bounds import elbo_terms, log_likelihood_bound
from pyrovae.guides import FullCovarianceGuide, IAFGuide, LocalGuide
from pyrovae.guides.fullcov import BroadcastMultivariateNormal, num_features
from pyrovae.guides.local import optimize_local
from pyrovae.nets import MLP
from pyrovae.train.fit import fit


def test_fullcov_scale_tril_is_valid_even_for_extreme_encoder_outputs():
    d = 4
    guide = FullCovarianceGuide(MLP(6, 8, num_features(d)), d)
    h = torch.cat([torch.randn(3, num_features(d)),
                   torch.full((1, num_features(d)), -60.0),   # softplus underflow region
                   torch.full((1, num_features(d)), 60.0)])
    L = guide.scale_tril(h)
    assert L.shape == (5, d, d)
    assert torch.equal(L, L.tril()), "scale_tril must be lower triangular"
    assert (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    # the strictly lower entries are the encoder's outputs, in tril_indices order
    rows, cols = torch.tril_indices(d, d, offset=-1)
    assert torch.equal(L[0, rows, cols], h[0, 2 * d:])
    q = guide.posterior_from_features(h[:3])
    assert torch.allclose(q.covariance_matrix, L[:3] @ L[:3].transpose(-1, -2), atol=1e-5)


def test_broadcast_mvn_rsample_equals_loc_plus_scale_tril_times_noise():
    n, d, k = 3, 4, 5
    loc = torch.randn(n, d)
    L = torch.randn(n, d, d).tril(-1) + torch.diag_embed(torch.rand(n, d) + 0.5)
    q = BroadcastMultivariateNormal(loc, scale_tril=L).expand((k, n))
    torch.manual_seed(1)
    z = q.rsample((2,))
    torch.manual_seed(1)
    eps = torch.randn(2, k, n, d)
    assert z.shape == (2, k, n, d)
    assert torch.allclose(z, loc + (L @ eps.unsqueeze(-1)).squeeze(-1), atol=1e-5)


def _iaf_guide(d=3, ctx=5):
    torch.manual_seed(0)
    guide = IAFGuide(MLP(6, 8, ctx), d, context_dim=ctx, num_flows=2, hidden_dims=[12])
    with torch.no_grad():  # a flow far from the identity
        for p in guide.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return guide


def test_iaf_log_density_matches_change_of_variables():
    d = 3
    guide = _iaf_guide(d)
    x = torch.rand(1, 6)
    h = guide.features(x)
    base = guide.base_from_features(h)
    transforms = [f.condition(h) for f in guide.flows]

    def flow(z0):
        for t in transforms:
            z0 = t(z0)
        return z0

    z0 = base.sample()
    z = flow(z0)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.unsqueeze(0)).squeeze(0), z0[0])
    expected = base.log_prob(z0) - torch.linalg.slogdet(jac).logabsdet
    q = guide.posterior(x)
    # a fresh tensor defeats Pyro's cache: log_prob must invert the flow itself
    z_fresh = z.detach().clone()
    assert torch.allclose(q.log_prob(z_fresh), expected, atol=1e-4)
    # and a sample scored right after drawing (the cached path training uses) agrees too
    zs = q.rsample()
    zs_fresh = zs.detach().clone()
    assert torch.allclose(q.log_prob(zs), guide.posterior(x).log_prob(zs_fresh), atol=1e-4)


def test_iaf_samples_broadcast_under_a_particle_plate():
    guide = _iaf_guide()
    x = torch.rand(4, 6)
    with pyro.plate("particles", 7, dim=-2):
        tr = poutine.trace(guide).get_trace(x)
    tr.compute_log_prob()
    assert tr.nodes["z"]["value"].shape == (7, 4, 3)
    assert tr.nodes["z"]["log_prob"].shape == (7, 4)


def small_data(sample_data, n_train=128, n_test=20) -> ImageData:
    return ImageData("small", sample_data.train_x[:n_train], sample_data.train_y[:n_train],
                     sample_data.test_x[::50][:n_test], sample_data.test_y[::50][:n_test])


@pytest.mark.parametrize("model_name,guide_name", [
    ("vae", "diagonal"), ("vae", "fullcov"), ("vae", "iaf"), ("cvae", "diagonal"), ("cvae", "iaf")])
def test_local_guide_starts_at_the_amortized_posterior_and_improves_the_elbo(
        sample_data, model_name, guide_name):
    data = small_data(sample_data)
    cfg = ModelConfig(model=model_name, guide=guide_name, latent_dim=4, hidden=32, flow_layers=1)
    model, guide = build_pair(cfg, x_dim=784, num_classes=10)
    fit(model, guide, data, TrainConfig(epochs=1, batch_size=64), progress=False)
    x, y = data.test_x, data.test_y
    local = LocalGuide(guide, x, y)
    z = guide.posterior(x, y).sample()
    assert torch.allclose(local.posterior(x, y).log_prob(z), guide.posterior(x, y).log_prob(z),
                          atol=1e-4)
    perm = torch.randperm(len(x))
    assert torch.equal(local.rows(x[perm], y[perm]), perm)  # rows found by content
    with pytest.raises(ValueError, match="holds parameters only"):
        local.rows(torch.zeros(1, 784).fill_(0.5))

    torch.manual_seed(0)
    before = elbo_terms(model, local, x, y, num_particles=100)["elbo"].mean()
    amortized_params = [p.detach().clone() for p in guide.parameters()]
    optimize_local(model, local, x, y, steps=50, lr=5e-2, num_particles=4, progress=False)
    torch.manual_seed(0)
    after = elbo_terms(model, local, x, y, num_particles=100)["elbo"].mean()
    assert after > before + 0.25  # cvae-iaf gains least (+0.38 nats on these 20 digits)
    assert all(torch.equal(p, q) for p, q in zip(guide.parameters(), amortized_params))


def test_a_user_composes_a_pair_by_hand(sample_data):
    """The README's five lines: any prior with any guide, trained and evaluated."""
    from pyrovae.guides import IAFGuide
    from pyrovae.models import VAE, VampPrior

    guide = IAFGuide(MLP(784, 64, 16), latent_dim=8, context_dim=16)
    model = VAE(MLP(8, 64, 784), VampPrior(guide, x_dim=784, num_pseudo_inputs=20))
    hist = fit(model, guide, small_data(sample_data), TrainConfig(epochs=1, batch_size=64),
               progress=False)
    bound = log_likelihood_bound(model, guide, sample_data.test_x[:10], num_particles=50)
    assert math.isfinite(hist[-1]["test_elbo"]) and torch.isfinite(bound).all()
    # the same pair through Pyro's own ELBO, as a user might train it without pyrovae.fit
    assert torch.isfinite(Trace_ELBO().differentiable_loss(model, guide, sample_data.test_x[:4]))
