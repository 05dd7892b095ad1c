"""The model/guide contract, checked once for every registered Pyro model and guide."""
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyrovae import registry
from pyrovae.build import build_pair, registered_pairs
from pyrovae.config import ModelConfig


def pyro_models():
    return registry.names("model")


@pytest.mark.parametrize("model_name, guide_name", registered_pairs())
def test_pair_follows_contract(model_name, guide_name):
    cfg = ModelConfig(model=model_name, guide=guide_name, latent_dim=3, hidden=16)
    model, guide = build_pair(cfg, x_dim=784, num_classes=10)
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    y = torch.arange(5)
    guide_tr = poutine.trace(guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, y)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()

    observed = [n for n, s in model_tr.nodes.items()
                if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s)]
    assert "x" in observed and set(observed) <= {"x", "y"}, "x observed (and a given label)"
    assert "z" in guide_tr.nodes and "z" in model_tr.nodes
    for tr in (model_tr, guide_tr):
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            frames = {f.name: f for f in site["cond_indep_stack"]}
            assert "data" in frames, f"site {name!r} is outside the 'data' plate"
            assert frames["data"].dim == -1 and frames["data"].size == 5
            assert site["log_prob"].shape == (5,), f"site {name!r}: per-datapoint log-density"
    assert model_tr.nodes["z"]["value"].shape == (5, 3)
    assert model_tr.nodes["z"]["fn"].event_shape == (3,)
    assert model_tr.nodes["x"]["fn"].event_shape == (784,)
    # latents the guide does not sample would make the ELBO wrong
    def latents(tr):
        return {n for n, s in tr.nodes.items()
                if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)}

    model_latents, guide_latents = latents(model_tr), latents(guide_tr)
    assert model_latents == guide_latents


@pytest.mark.parametrize("model_name", pyro_models())
def test_decoder_starts_at_the_pixel_frequencies(model_name):
    """With the default ``output_bias="data"`` an untrained decoder's output bias is the
    pixels' logit marginal once ``init_from_data`` ran (``fit`` calls it, once)."""
    x = torch.bernoulli(torch.rand(1, 784).expand(200, 784))
    guide_name = next(g for m, g in registered_pairs() if m == model_name)
    cfg = ModelConfig(model=model_name, guide=guide_name, latent_dim=3, hidden=16)
    model, _ = build_pair(cfg, x_dim=784, num_classes=10)
    model.init_from_data(x)
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    p = x.mean(0).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(last.bias, torch.log(p) - torch.log1p(-p), atol=1e-5)
    model.init_from_data(1 - x)  # once only: a second call (more training) changes nothing
    assert torch.allclose(last.bias, torch.log(p) - torch.log1p(-p), atol=1e-5)
    plain, _ = build_pair(ModelConfig(model=model_name, guide=guide_name, latent_dim=3,
                                      hidden=16, output_bias="default"), x_dim=784,
                          num_classes=10)
    plain.init_from_data(x)
    last = [m for m in plain.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert last.bias.abs().max() < 1  # PyTorch's init
    with pytest.raises(Exception, match="output_bias.*one of data, default"):
        build_pair(ModelConfig(output_bias="mean"), x_dim=784, num_classes=10)
