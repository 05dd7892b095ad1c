"""VQ-VAE and code-prior training: the nats bound improves, resume is exact."""
import json
import math

import pytest
import torch

from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.models.vqvae.prior import PriorConfig, build_prior
from pyrovae.models.vqvae.model import VQVAEConfig, build_vqvae
from pyrovae.models.vqvae.run import evaluate_vq, nats_bound
from pyrovae.models.vqvae.train import train_prior, train_vqvae

SMALL = VQVAEConfig(num_codes=16, code_dim=4, channels=16)
TINY_PRIOR = PriorConfig(d_model=16, layers=1, heads=2, dropout=0.0)




@pytest.fixture(scope="module")
def small_data(sample_data):
    d = sample_data
    return ImageData("mnist-sample", d.train_x[:500], d.train_y[:500], d.test_x[:200],
                     d.test_y[:200])


def _prior(model, conditional=False):
    cfg = PriorConfig(**{**TINY_PRIOR.__dict__, "conditional": conditional})
    return build_prior(cfg, num_codes=model.num_codes, grid_shape=model.grid_shape,
                       num_classes=10)


def test_nats_bound_is_finite_and_improves_with_training(small_data):
    torch.manual_seed(0)
    model, x = build_vqvae(SMALL), small_data.test_x
    prior = _prior(model)
    recon0, logp0 = nats_bound(model, prior, x)
    before = float((recon0 + logp0).mean())
    assert math.isfinite(before)
    history = train_vqvae(model, small_data, TrainConfig(epochs=2, batch_size=50, lr=3e-3),
                          progress=False)
    assert history[-1]["test_nats"] < history[0]["test_nats"]
    train_prior(prior, model, small_data, epochs=2, batch_size=50, lr=3e-3, progress=False)
    recon1, logp1 = nats_bound(model, prior, x)
    after = recon1 + logp1
    assert torch.isfinite(after).all() and (after < 0).all()
    assert float(after.mean()) > before + 100
    assert float(logp1.mean()) > float(logp0.mean())  # the prior learned the codes
    report = evaluate_vq(model, prior, x)
    assert report["bounds"][0]["K"] == 1
    assert report["bounds"][0]["mean"] == pytest.approx(float(after.mean()), rel=1e-6)
    assert report["kl"]["mean"] == pytest.approx(-float(logp1.mean()), rel=1e-6)
    assert 0 < report["codebook"]["codes_used"] <= 1


def test_vqvae_resume_continues_bit_for_bit(small_data, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=100, seed=3)
    full = build_vqvae(SMALL)
    torch.manual_seed(1)
    ref = build_vqvae(SMALL).state_dict()
    full.load_state_dict(ref)
    h_full = train_vqvae(full, small_data, cfg, restart_every=3, progress=False)
    part = build_vqvae(SMALL)
    part.load_state_dict(ref)
    train_vqvae(part, small_data, TrainConfig(epochs=1, batch_size=100, seed=3), restart_every=3,
                run_dir=tmp_path, progress=False)
    h_part = train_vqvae(part, small_data, cfg, restart_every=3, run_dir=tmp_path,
                         resume=True, progress=False)
    for k, v in full.state_dict().items():
        assert torch.equal(v, part.state_dict()[k]), k
    assert [r["train_loss"] for r in h_part] == [r["train_loss"] for r in h_full]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]


def test_conditional_prior_trains_and_marginalizes(small_data):
    torch.manual_seed(2)
    model = build_vqvae(SMALL)
    prior = _prior(model, conditional=True)
    train_prior(prior, model, small_data, epochs=1, batch_size=128, lr=3e-3, progress=False)
    prior.eval()
    codes = model.encode(small_data.test_x[:50])
    per_class = torch.stack([prior.log_prob(codes, torch.full((50,), c)) for c in range(10)])
    marginal = prior.marginal_log_prob(codes)
    assert torch.allclose(marginal, per_class.logsumexp(0) - math.log(10), atol=1e-5)
    assert (marginal <= per_class.max(0).values + 1e-5).all()
