"""Priors: exact densities (they integrate to one), shapes under plates, and every
prior x guide x model combination training and evaluating through the public API."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyrovae.build import build_pair, registered_pairs
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.data import ImageData, with_labels
from pyrovae.evaluation.bounds import log_likelihood_bound
from pyrovae.guides import DiagonalGaussianGuide, FullCovarianceGuide
from pyrovae.guides.fullcov import num_features
from pyrovae.models.priors import (FlowPrior, GaussianMixture, MixtureOfGaussiansPrior,
                                   StandardNormalPrior, VampPrior)
from pyrovae.nets import MLP
from pyrovae.train.fit import fit


def _jitter(module, scale=0.3):
    """Move every parameter off its initial value so a density test is not a special case."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def make_prior(name: str, d: int):
    if name == "standard":
        return StandardNormalPrior(d)
    if name == "mog":
        return _jitter(MixtureOfGaussiansPrior(d, 3))
    if name == "vamp":  # diagonal components: the GaussianMixture path
        guide = DiagonalGaussianGuide(_jitter(MLP(5, 8, 2 * d)), d)
        return _jitter(VampPrior(guide, x_dim=5, num_pseudo_inputs=4), 1.0)
    if name == "vamp-fullcov":  # full-covariance components: the MixtureSameFamily path
        guide = FullCovarianceGuide(_jitter(MLP(5, 8, num_features(d))), d)
        return _jitter(VampPrior(guide, x_dim=5, num_pseudo_inputs=4), 1.0)
    if name == "flow":
        return _jitter(FlowPrior(d, num_layers=2), 0.2)
    raise ValueError(name)


PRIORS_1D = ["standard", "mog", "vamp", "vamp-fullcov"]  # a 1-D autoregressive flow is refused
PRIORS_2D = PRIORS_1D + ["flow"]


@pytest.mark.parametrize("name", PRIORS_1D)
def test_prior_density_integrates_to_one_1d(name):
    p = make_prior(name, 1)()
    z = torch.linspace(-15, 15, 30001).unsqueeze(-1)
    with torch.no_grad():
        mass = torch.trapezoid(p.log_prob(z).double().exp(), z.squeeze(-1).double())
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", PRIORS_2D)
def test_prior_density_integrates_to_one_2d(name):
    p = make_prior(name, 2)()
    g = torch.linspace(-12, 12, 801)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1)  # [801, 801, 2]
    with torch.no_grad():
        dens = p.log_prob(z).double().exp()
    assert dens.shape == (801, 801)
    mass = torch.trapezoid(torch.trapezoid(dens, g.double(), dim=-1), g.double())
    assert float(mass) == pytest.approx(1.0, abs=5e-3)


@pytest.mark.parametrize("name", PRIORS_2D)
def test_prior_sample_shapes_and_plates(name):
    d = 2
    prior = make_prior(name, d)
    p = prior()
    assert p.batch_shape == () and p.event_shape == (d,)
    assert p.sample((7,)).shape == (7, d)

    def model(n):
        with pyro.plate("particles", 3, dim=-2), pyro.plate("data", n):
            return pyro.sample("z", prior())

    tr = poutine.trace(model).get_trace(5)
    tr.compute_log_prob()
    assert tr.nodes["z"]["value"].shape == (3, 5, d)
    assert tr.nodes["z"]["log_prob"].shape == (3, 5)
    assert torch.isfinite(tr.nodes["z"]["log_prob"]).all()


def test_gaussian_mixture_matches_mixture_same_family():
    k, d = 6, 4
    logits, loc = torch.randn(k), 3 * torch.randn(k, d)
    scale = torch.rand(k, d) * 2 + 0.01  # includes narrow components far from the origin
    ref = dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                 dist.Normal(loc.double(), scale.double()).to_event(1))
    z = torch.cat([5 * torch.randn(50, d), loc + 0.01 * torch.randn(k, d)])
    got = GaussianMixture(logits, loc, scale).log_prob(z)
    assert torch.allclose(got.double(), ref.log_prob(z.double()), atol=1e-4, rtol=1e-5)
    assert GaussianMixture(logits, loc, scale).mean.shape == (d,)


def test_vamp_prior_is_not_a_second_owner_of_the_encoder():
    """The encoder is trained and saved as part of the guide only (no duplicate parameters)."""
    model, guide = build_pair(ModelConfig(prior="vamp", latent_dim=3, hidden=8,
                                          num_pseudo_inputs=5), x_dim=784, num_classes=10)
    model_ids = {id(p) for p in model.parameters()}
    assert model_ids.isdisjoint(id(p) for p in guide.parameters())
    assert model.prior.pseudo_logits.shape == (5, 784)
    assert not any(k.startswith("prior._guide") for k in model.state_dict())




def tiny_data(n_train=32, n_test=8) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(n_train, 784, generator=gen) * 0.5
    test = torch.bernoulli(torch.rand(n_test, 784, generator=gen) * 0.5, generator=gen)
    return ImageData("tiny", train, torch.arange(n_train) % 10, test, torch.arange(n_test) % 10)


@pytest.mark.parametrize("prior_name", ["standard", "mog", "vamp", "flow"])
@pytest.mark.parametrize("model_name, guide_name", registered_pairs())
def test_every_prior_guide_model_trains_and_evaluates(model_name, prior_name, guide_name):
    cfg = ModelConfig(model=model_name, prior=prior_name, guide=guide_name, latent_dim=3,
                      hidden=16, num_components=3, num_pseudo_inputs=4, flow_layers=1)
    data, train = tiny_data(), TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    if model_name == "ssvae":  # semi-supervised: half the labels, y summed on the rest
        data, train = with_labels(data, 16), TrainConfig(epochs=1, batch_size=16, lr=1e-2,
                                                          objective="enum")
    model, guide = build_pair(cfg, x_dim=784, num_classes=10)
    before = {n: p.detach().clone() for n, p in
              list(model.named_parameters("model.")) + list(guide.named_parameters("guide."))}
    hist = fit(model, guide, data, train, progress=False)
    assert math.isfinite(hist[-1]["test_elbo"])
    after = dict(list(model.named_parameters("model.")) + list(guide.named_parameters("guide.")))
    frozen = [n for n, p in after.items() if torch.equal(p.detach(), before[n])]
    assert not frozen, f"parameters that received no update: {frozen}"
    bound = log_likelihood_bound(model, guide, data.test_x, data.test_y, num_particles=20)
    assert bound.shape == (8,) and torch.isfinite(bound).all()
