"""VQ-VAE: quantizer, EMA codebook, dead-code restart, causal prior and the nats bound."""

import pytest
import torch

from pyrovae.errors import PyroVAEError
from pyrovae.models.vqvae.quantizer import VectorQuantizer, perplexity
from pyrovae.models.vqvae.prior import CodePrior
from pyrovae.models.vqvae.model import VQVAEConfig, build_vqvae


def test_quantizer_returns_the_true_nearest_code():
    torch.manual_seed(0)
    q = VectorQuantizer(37, 5, ema=False)
    q.codebook.data.normal_()
    z = 1.5 * torch.randn(2, 5, 6, 7)
    _, codes, _, counts = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(flat.double(), q.codebook.double()).argmin(1)
    assert torch.equal(codes.flatten(), brute)
    assert counts.sum() == flat.shape[0]


def test_straight_through_gradient_is_the_identity():
    torch.manual_seed(1)
    q = VectorQuantizer(8, 3, ema=False)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, codes, _, _ = q(z)
    assert torch.allclose(z_q, q.lookup(codes))  # the value is the code ...
    g = torch.randn_like(z)
    (z_q * g).sum().backward()
    assert torch.equal(z.grad, g)  # ... the gradient passes straight through


def test_losses_reach_encoder_and_codebook_as_documented():
    torch.manual_seed(2)
    q = VectorQuantizer(4, 2, ema=False, commitment=0.25)
    z = torch.randn(1, 2, 1, 1, requires_grad=True)
    _, codes, loss, _ = q(z)
    e = q.codebook[codes.flatten()[0]].detach()
    zf = z.detach().flatten()
    assert torch.allclose(loss, 1.25 * ((zf - e) ** 2).sum())
    loss.sum().backward()
    assert torch.allclose(z.grad.flatten(), 0.25 * 2 * (zf - e))
    assert torch.allclose(q.codebook.grad[codes.flatten()[0]], 2 * (e - zf))


def test_ema_update_matches_hand_computed_toy():
    q = VectorQuantizer(2, 1, ema=True, decay=0.5, eps=0.0)
    q.codebook.copy_(torch.tensor([[0.0], [10.0]]))
    q.embed_sum.copy_(q.codebook)
    q.train()
    z = torch.tensor([1.0, 2.0, 9.0]).view(3, 1, 1, 1)  # batch of three 1x1 maps
    q(z)
    # code 0 gets {1, 2}, code 1 gets {9}; statistics start at N = 1, m = e
    n0, n1 = 0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 1
    m0, m1 = 0.5 * 0 + 0.5 * 3, 0.5 * 10 + 0.5 * 9
    assert torch.allclose(q.cluster_size, torch.tensor([n0, n1]))
    assert torch.allclose(q.codebook.flatten(), torch.tensor([m0 / n0, m1 / n1]))
    assert torch.allclose(q.usage, torch.tensor([0.5 * 2, 0.5 * 1]))


def test_ema_laplace_smoothing_keeps_unused_codes_finite():
    q = VectorQuantizer(3, 2, ema=True, decay=0.99)
    q.train()
    for _ in range(2000):  # code usage decays to ~1e-9 of a vector
        q(torch.full((4, 2, 1, 1), 5.0))
    assert torch.isfinite(q.codebook).all()


def test_perplexity_of_uniform_usage_is_codebook_size():
    assert perplexity(torch.full((64,), 3.0)).item() == pytest.approx(64)
    assert perplexity(torch.tensor([5.0, 0, 0, 0])).item() == pytest.approx(1)


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(3)
    q = VectorQuantizer(16, 2, ema=True)
    q.codebook.copy_(torch.randn(16, 2) + 100.0)  # far from every encoder output ...
    q.codebook[0] = 0.0  # ... but one code
    q.embed_sum.copy_(q.codebook)
    q.train()
    z = torch.randn(8, 2, 4, 4)
    _, codes, _, _ = q(z)
    assert codes.unique().tolist() == [0]
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    assert q.restart_dead_codes(flat, threshold=1.0) == 15
    _, codes, _, counts = q(z)
    assert codes.unique().numel() > 8
    assert q.restart_dead_codes(flat, threshold=1e-3) == 0


def test_prior_is_causal():
    torch.manual_seed(4)
    prior = CodePrior(11, (3, 3), d_model=16, layers=2, heads=2, dropout=0.0, num_classes=3)
    codes = torch.randint(11, (2, 3, 3))
    emb = prior.embed(codes).detach().requires_grad_()
    logits = prior.logits_from_embeddings(emb, torch.tensor([0, 2]))
    for i in range(9):
        (grad,) = torch.autograd.grad(logits[:, i].sum(), emb, retain_graph=True)
        assert grad[:, i:].abs().max() == 0, f"position {i} sees positions >= {i}"
        if i > 0:
            assert grad[:, :i].abs().max() > 0  # and it does see the past


def test_prior_is_a_normalised_density():
    torch.manual_seed(5)
    prior = CodePrior(3, (1, 3), d_model=8, layers=1, heads=2, dropout=0.0).eval()
    grids = torch.cartesian_prod(*[torch.arange(3)] * 3).view(27, 1, 3)
    assert torch.logsumexp(prior.log_prob(grids), 0).item() == pytest.approx(0, abs=1e-5)
    cond = CodePrior(3, (1, 3), d_model=8, layers=1, heads=2, dropout=0.0, num_classes=2).eval()
    assert torch.logsumexp(cond.marginal_log_prob(grids), 0).item() == pytest.approx(0, abs=1e-5)
    with pytest.raises(PyroVAEError):
        cond.log_prob(grids)
    assert prior.sample(4).shape == (4, 1, 3)


def test_vqvae_shapes_and_code_grid():
    model = build_vqvae(VQVAEConfig(num_codes=8, code_dim=4, channels=8)).eval()
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    out = model(x)
    assert model.grid_shape == (7, 7) and out["codes"].shape == (3, 7, 7)
    assert out["nats"].shape == (3,) and (out["nats"] > 0).all()
    assert torch.equal(model.encode(x), out["codes"])
    assert torch.allclose(model.log_likelihood(x, out["codes"]), -out["nats"], atol=1e-4)
    with pytest.raises(PyroVAEError):
        build_vqvae(VQVAEConfig(quantizer="kmeans"))
