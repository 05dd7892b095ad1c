"""The evaluator sums an enumerated discrete guide site exactly (semi-supervised VAEs).

A mixture of linear-Gaussians, y ~ Categorical(pi), z ~ N(0, I), x | y, z ~ N(W_y z + b_y,
s^2 I), has log p(x) = log sum_y pi_y N(x; b_y, W_y W_y^T + s^2 I); its exact posterior is
p(y | x) times a Gaussian p(z | x, y) per component.
"""
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae import PyroVAEError, elbo_terms, evaluate, log_likelihood_bound

F64 = dict(dtype=torch.float64)
C, L, D, S = 3, 2, 4, 0.5
G = torch.Generator().manual_seed(21)
W = torch.randn(C, D, L, generator=G, **F64)
B = 3 * torch.randn(C, D, generator=G, **F64)
PI = torch.tensor([0.2, 0.5, 0.3], **F64)


def model(x, y=None):
    with pyro.plate("batch", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(PI), obs=y)
        z = pyro.sample("z", dist.Normal(torch.zeros(L, **F64), 1.0).to_event(1))
        loc = (W[y] @ z.unsqueeze(-1)).squeeze(-1) + B[y]
        pyro.sample("obs", dist.Normal(loc, S).to_event(1), obs=x)


def marginal(x):
    cov = W @ W.transpose(-1, -2) + S**2 * torch.eye(D, **F64)
    comp = dist.MultivariateNormal(B, cov).log_prob(x[:, None]) + PI.log()
    return comp.logsumexp(-1), comp.softmax(-1)


def make_guide(exact_z=True, exact_y=True, enumerate=True):
    def guide(x, y=None):
        _, post_y = marginal(x)
        probs = post_y if exact_y else torch.full_like(post_y, 1.0 / C)
        with pyro.plate("batch", x.shape[0]):
            if y is None:
                y = pyro.sample("y", dist.Categorical(probs),
                                infer={"enumerate": "parallel"} if enumerate else {})
            prec = torch.eye(L, **F64) + W[y].transpose(-1, -2) @ W[y] / S**2
            cov = torch.linalg.inv(prec)
            mean = (cov @ W[y].transpose(-1, -2) @ ((x - B[y]) / S**2).unsqueeze(-1)).squeeze(-1)
            if exact_z:
                pyro.sample("z", dist.MultivariateNormal(mean, cov))
            else:
                pyro.sample("z", dist.Normal(mean + 0.5, 1.0).to_event(1))
    return guide


@pytest.fixture
def x():
    y = torch.tensor([0, 1, 2, 1, 1, 0, 2, 1])
    z = torch.randn(8, L, generator=torch.Generator().manual_seed(2), **F64)
    return (W[y] @ z.unsqueeze(-1)).squeeze(-1) + B[y] + S * torch.randn(8, D, **F64)


def test_the_exact_posterior_with_y_summed_is_exact_for_every_k(x):
    exact, _ = marginal(x)
    for k in (1, 5):
        lb = log_likelihood_bound(model, make_guide(), x, num_particles=k)
        assert torch.allclose(lb, exact, atol=1e-9)
    # even with a uniform q(y | x): the sum over y is exact whatever q(y | x) is
    lb = log_likelihood_bound(model, make_guide(exact_y=False), x, num_particles=3)
    assert torch.allclose(lb, exact, atol=1e-9)
    terms = elbo_terms(model, make_guide(), x)
    assert torch.allclose(terms["elbo"], exact, atol=1e-9)  # KL to the exact posterior is 0
    assert set(terms["kl_per_site"]) == {"y", "z"}


def test_a_poor_z_guide_converges_and_sampling_y_is_noisier(x):
    exact, _ = marginal(x)
    summed = [float((exact - log_likelihood_bound(model, make_guide(exact_z=False), x,
                                                  num_particles=k)).mean()) for k in (1, 1000)]
    assert summed[0] > 0.3 and 0 <= summed[1] < 0.2 * summed[0]
    torch.manual_seed(0)
    report = evaluate(model, make_guide(exact_z=False, enumerate=False), x,
                      num_particles=(1, 1000), progress=False)
    enum_report = evaluate(model, make_guide(exact_z=False), x, num_particles=(1, 1000),
                           progress=False)
    assert enum_report["bounds"][0]["mc_se"] < report["bounds"][0]["mc_se"]


def test_labelled_calls_observe_y_and_two_enumerated_sites_are_refused(x):
    exact_joint = log_likelihood_bound(model, make_guide(), x, torch.zeros(8, dtype=torch.long),
                                       num_particles=2)  # log p(x, y=0)
    cov = W[0] @ W[0].T + S**2 * torch.eye(D, **F64)
    want = dist.MultivariateNormal(B[0], cov).log_prob(x) + PI[0].log()
    assert torch.allclose(exact_joint, want, atol=1e-9)

    def two(x):
        with pyro.plate("batch", x.shape[0]):
            a = pyro.sample("a", dist.Bernoulli(torch.tensor(0.5, **F64)))
            b = pyro.sample("b", dist.Bernoulli(torch.tensor(0.5, **F64)))
            pyro.sample("obs", dist.Normal(a + b, 1.0), obs=x)

    def two_guide(x):
        with pyro.plate("batch", x.shape[0]):
            for n in "ab":
                pyro.sample(n, dist.Bernoulli(torch.tensor(0.5, **F64)),
                            infer={"enumerate": "parallel"})

    with pytest.raises(PyroVAEError, match="sums one enumerated guide site"):
        log_likelihood_bound(two, two_guide, torch.zeros(3, **F64), num_particles=2)
