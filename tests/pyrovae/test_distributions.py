"""IndependentBernoulli must be Bernoulli(logits).to_event(1) in every observable way;
ReparamNormal and UnitNormal must be Normal in value, samples and total gradient."""
import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions import (BLOCK_BYTES, IndependentBernoulli, ReparamNormal, UnitNormal,
                                  _group_size)


def _logits(*shape, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=g, dtype=dtype) * 6
    logits.view(-1)[:4] = torch.tensor([0.0, 90.0, -90.0, 1e-3], dtype=dtype)  # extremes
    return logits


@pytest.mark.parametrize("d", [784, 13, 1, 250])
def test_log_prob_and_gradient_match_pyro_bernoulli(d):
    logits = _logits(3, 5, d).requires_grad_()
    x = (torch.rand(5, d) < 0.5).double()  # broadcast over the particle dim, as in the evaluator
    ours = IndependentBernoulli(logits).log_prob(x)
    ref = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    assert ours.shape == ref.shape == (3, 5)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-9)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the in-place path the evaluator takes
        assert torch.allclose(IndependentBernoulli(logits).log_prob(x), ref, atol=1e-9)


def test_large_inputs_are_sliced_without_changing_the_result():
    logits = _logits(50, 8, 784)  # 2.5 MB: processed in slices along dim 0
    assert logits.numel() * 8 > 1.5 * BLOCK_BYTES
    for x in [(torch.rand(8, 784) < 0.5).double(), (torch.rand(50, 8, 784) < 0.5).double()]:
        with torch.no_grad():
            ours = IndependentBernoulli(logits).log_prob(x)
        assert torch.allclose(ours, dist.Bernoulli(logits=logits).to_event(1).log_prob(x),
                              rtol=1e-12, atol=1e-9)


def test_float32_error_is_that_of_a_float_sum():
    logits = _logits(64, 784)
    x = (torch.rand(64, 784) < 0.3).float()
    ref = dist.Bernoulli(logits=logits).to_event(1).log_prob(x.double())
    err = (IndependentBernoulli(logits.float()).log_prob(x).double() - ref).abs().max()
    pyro_err = (dist.Bernoulli(logits=logits.float()).to_event(1).log_prob(x).double() - ref
                ).abs().max()
    assert err < 2 * pyro_err + 1e-4


def test_shapes_samples_moments_and_support():
    logits = _logits(4, 10)
    d, ref = IndependentBernoulli(logits), dist.Bernoulli(logits=logits).to_event(1)
    assert d.batch_shape == ref.batch_shape and d.event_shape == ref.event_shape
    s = d.sample((2000,))
    assert s.shape == (2000, 4, 10) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(s.mean(0), ref.mean, atol=0.05)
    assert torch.allclose(d.mean, ref.mean) and torch.allclose(d.variance, ref.variance)
    assert torch.allclose(d.entropy(), ref.entropy())
    e = d.expand((3, 4))
    assert e.batch_shape == (3, 4)
    assert torch.allclose(e.log_prob(s[:3]), ref.expand((3, 4)).log_prob(s[:3]))
    with pytest.raises(ValueError):
        IndependentBernoulli(logits, validate_args=True).log_prob(torch.full((4, 10), 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_group_products_cannot_underflow(dtype):
    g = _group_size(784, dtype)
    assert 0.5 ** g > torch.finfo(dtype).tiny
    assert g >= 7


@pytest.mark.parametrize("value_shape", [(3, 784), (784,), (2, 3, 784)])
def test_custom_backward_passes_gradcheck(value_shape):
    """The one-pass backward x - sigmoid(l) against finite differences, with broadcasting
    values (particles x batch logits against batch images) and gradients for both inputs."""
    from pyrovae.distributions import bernoulli_log_prob

    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 3, 784, dtype=torch.float64)).requires_grad_()
    value = torch.bernoulli(torch.full(value_shape, 0.4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(bernoulli_log_prob, (logits, value))


def _loc_scale():
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    raw = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    return loc, raw


@pytest.mark.parametrize("sample_shape", [(), (3,)])
def test_reparam_normal_is_normal_in_value_samples_and_total_gradient(sample_shape):
    loc, raw = _loc_scale()
    grads = {}
    for name, cls in (("pyro", dist.Normal), ("ours", ReparamNormal)):
        torch.manual_seed(0)
        q = cls(loc, raw.exp()).to_event(1)
        z = q.rsample(sample_shape)
        log_q = q.log_prob(z)
        grads[name] = (z.detach(), log_q.detach(),
                       *torch.autograd.grad(log_q.sum() + z.sum(), (loc, raw)))
    for a, b in zip(grads["pyro"], grads["ours"]):  # same draw, density and gradient
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_reparam_normal_other_values_take_the_general_formula():
    loc, raw = _loc_scale()
    q = ReparamNormal(loc, raw.exp())
    ref = dist.Normal(loc, raw.exp())
    z = q.rsample()
    for value in (z.detach(), z.detach().requires_grad_(), z + 0.5, torch.zeros(4)):
        torch.testing.assert_close(q.log_prob(value), ref.log_prob(value))
    leaf = z.detach().requires_grad_()  # HMC's leaf: the gradient in the value must flow
    q._drawn = (leaf, torch.zeros_like(leaf))
    (g,) = torch.autograd.grad(q.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(g, -(leaf - loc) / raw.exp() ** 2)
    wide = q.expand((2, 6, 4))  # a plate's broadcast: a fresh instance, no stale noise
    assert isinstance(wide, ReparamNormal) and getattr(wide, "_drawn", None) is None


def test_unit_normal_is_the_standard_normal():
    prior = UnitNormal(torch.zeros(4), torch.ones(4)).to_event(1)
    ref = dist.Normal(torch.zeros(4), torch.ones(4)).to_event(1)
    z = torch.randn(3, 5, 4, dtype=torch.float32)
    torch.testing.assert_close(prior.log_prob(z), ref.log_prob(z))
    assert prior.log_prob(torch.zeros(4)).shape == ()
    wide = UnitNormal(torch.zeros(5, 4), torch.ones(5, 4))
    assert wide.log_prob(torch.zeros(4)).shape == (5, 4)  # broadcast to the batch shape
