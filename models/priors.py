"""Priors p(z): small modules whose ``forward()`` returns a distribution over ``z``.

Every prior returns a distribution with ``batch_shape == ()`` and
``event_shape == (latent_dim,)``; the model's ``data`` plate (and any particle plate an
evaluator adds) broadcasts it.  Four are registered:

- ``standard``: N(0, I).
- ``mog``: a learnable mixture of K diagonal Gaussians, sum_k pi_k N(z; mu_k, diag sigma_k^2).
- ``vamp``: the VampPrior (Tomczak & Welling, 2018), p(z) = 1/K sum_k q(z | u_k), the
  guide's own posterior at K learnable pseudo-inputs u_k.
- ``flow``: a masked-autoregressive flow over N(0, I) (Papamakarios et al., 2017),
  p(z) = N(f(z); 0, I) |det df/dz|, with f one network pass per layer.
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.transforms import affine_autoregressive
from torch import nn

from pyrovae.distributions import UnitNormal
from pyrovae.errors import PyroVAEError
from pyrovae.registry import register

_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1
D_LOG_2PI = math.log(2 * math.pi)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        # buffers so the prior follows the model to the training device
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return UnitNormal(self.loc, self.scale).to_event(1)


class GaussianMixture(dist.TorchDistribution):
    """sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)), event shape ``(D,)``.

    The same density as ``MixtureSameFamily(Categorical, Normal.to_event(1))``, but the
    per-component quadratic forms are two matrix products,

        sum_d (z_d - mu_kd)^2 / s_kd^2 = (z^2) . (1/s_k^2) - 2 z . (mu_k/s_k^2) + |mu_k/s_k|^2,

    instead of a ``[..., K, D]`` temporary: with K = 500 VampPrior components and
    thousands of importance samples the temporary would not fit in memory.  The products
    run in float64 because the expanded form cancels when |z|, |mu| >> |z - mu|.
    """

    arg_constraints = {"logits": constraints.real_vector,
                       "loc": constraints.independent(constraints.real, 2),
                       "scale": constraints.independent(constraints.positive, 2)}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                 validate_args=None):
        if loc.dim() != 2 or loc.shape != scale.shape or logits.shape != loc.shape[:1]:
            raise PyroVAEError(f"GaussianMixture needs logits [K], loc and scale [K, D]; got "
                               f"{tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}")
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(torch.Size(), loc.shape[-1:], validate_args=validate_args)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        dt = torch.float64
        prec = self.scale.to(dt).pow(-2)                                  # [K, D]
        z64 = z.to(dt)
        const = (-0.5 * D_LOG_2PI * self.loc.shape[-1] - self.scale.to(dt).log().sum(-1)
                 - 0.5 * (self.loc.to(dt).pow(2) * prec).sum(-1))          # [K]
        quad = -0.5 * z64.pow(2) @ prec.T + z64 @ (self.loc.to(dt) * prec).T  # [..., K]
        log_w = F.log_softmax(self.logits, -1).to(dt)
        return torch.logsumexp(log_w + const + quad, dim=-1).to(z.dtype)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            k = dist.Categorical(logits=self.logits).sample(sample_shape)
            return self.loc[k] + self.scale[k] * torch.randn_like(self.loc[k])

    @property
    def mean(self) -> torch.Tensor:
        return F.softmax(self.logits, -1) @ self.loc


class MixtureOfGaussiansPrior(nn.Module):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2) with pi, mu, sigma learned.

    Means start at N(0, I) draws and scales at 1, so the initial prior is a blurred
    standard normal that training can split into clusters (cf. Dilokthanakul et al., 2016).
    """

    def __init__(self, latent_dim: int, num_components: int):
        super().__init__()
        if num_components < 1:
            raise PyroVAEError(f"--num-components must be >= 1, got {num_components}")
        self.latent_dim = latent_dim
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((num_components, latent_dim), _SOFTPLUS_ONE))

    def forward(self) -> dist.Distribution:
        return GaussianMixture(self.logits, self.loc, F.softplus(self.raw_scale) + 1e-4)


class VampPrior(nn.Module):
    """p(z) = 1/K sum_k q(z | u_k, y_k): the guide's posterior at learnable pseudo-inputs.

    Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018.  The pseudo-inputs
    u_k = sigmoid(w_k) live in pixel space [0, 1]; w starts near logit(0.05) -- dark
    images with a little noise, as in the paper.  With a conditional guide each u_k also
    carries a fixed label y_k = k mod num_classes, so the prior marginalizes over classes.

    The guide is *used*, not owned: it is kept out of this module's submodules so its
    encoder's parameters are trained once (as guide parameters) and saved once (in the
    guide's state dict).  The components are ``guide.base_posterior(u, y)`` when the guide
    has one (the Gaussian before a flow: inverting an IAF at every z for every u_k would
    cost latent_dim sequential passes) and ``guide.posterior(u, y)`` otherwise.
    """

    def __init__(self, guide: nn.Module, *, x_dim: int, num_pseudo_inputs: int,
                 num_classes: int = 0):
        super().__init__()
        if not hasattr(guide, "posterior"):
            raise PyroVAEError(f"the VampPrior needs a guide with a posterior(x, y) method; "
                               f"{type(guide).__name__} has none")
        if num_pseudo_inputs < 1:
            raise PyroVAEError(f"--num-pseudo-inputs must be >= 1, got {num_pseudo_inputs}")
        object.__setattr__(self, "_guide", guide)  # not a submodule (see above)
        self.pseudo_logits = nn.Parameter(math.log(0.05 / 0.95)
                                          + 0.01 * torch.randn(num_pseudo_inputs, x_dim))
        labels = torch.arange(num_pseudo_inputs) % max(num_classes, 1)
        self.register_buffer("pseudo_labels", labels)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.pseudo_logits)

    def forward(self) -> dist.Distribution:
        components_of = getattr(self._guide, "base_posterior", self._guide.posterior)
        q = components_of(self.pseudo_inputs, self.pseudo_labels)
        k = self.pseudo_logits.shape[0]
        if q.batch_shape != (k,) or q.event_shape.numel() == 0 or len(q.event_shape) != 1:
            raise PyroVAEError(f"the VampPrior needs the guide's posterior at {k} pseudo-inputs "
                               f"to have batch shape ({k},) and one event dim; got "
                               f"{tuple(q.batch_shape)} / {tuple(q.event_shape)}")
        logits = torch.zeros(k, device=self.pseudo_logits.device)
        base = q.base_dist if isinstance(q, dist.Independent) else None
        if isinstance(base, dist.Normal) and q.reinterpreted_batch_ndims == 1:
            return GaussianMixture(logits, base.loc, base.scale)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), q)


class FlowPrior(nn.Module):
    """p(z) = N(f(z); 0, I) |det df/dz| with f a stack of affine autoregressive layers.

    Each layer maps u_i = z_i exp(s_i(z_<i)) + m_i(z_<i) in one pass of a MADE network
    in the density direction (a masked autoregressive flow, Papamakarios et al. 2017), so
    ``log_prob`` -- what training and evaluation need -- is cheap and sampling (figures
    only) takes latent_dim passes.  Pyro's ``AffineAutoregressive`` is the IAF direction
    (cheap sampling), so the prior uses the layers' inverses.  Each MADE draws its own
    variable order, stored as a buffer, so a checkpoint restores it exactly.
    """

    def __init__(self, latent_dim: int, *, num_layers: int, hidden_dims=None):
        super().__init__()
        if num_layers < 1:
            raise PyroVAEError(f"--flow-layers must be >= 1, got {num_layers}")
        if latent_dim < 2:
            raise PyroVAEError("the flow prior needs latent_dim >= 2 (an autoregressive "
                               "layer on one variable is a plain affine map)")
        self.latent_dim = latent_dim
        self.layers = nn.ModuleList(affine_autoregressive(latent_dim, hidden_dims=hidden_dims)
                                    for _ in range(num_layers))
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        base = dist.Normal(self.loc, self.scale).to_event(1)
        # sampling runs base -> z through the inverses; log_prob inverts them back (cheap)
        return dist.TransformedDistribution(base, [layer.inv for layer in reversed(self.layers)])


@register("prior", "standard")
def standard_prior(cfg, *, x_dim: int, num_classes: int, guide=None):
    return StandardNormalPrior(cfg.latent_dim)


@register("prior", "mog")
def mog_prior(cfg, *, x_dim: int, num_classes: int, guide=None):
    return MixtureOfGaussiansPrior(cfg.latent_dim, cfg.num_components)


@register("prior", "vamp")
def vamp_prior(cfg, *, x_dim: int, num_classes: int, guide=None):
    if guide is None:
        raise PyroVAEError("the VampPrior is built from the guide's encoder; pass guide=")
    return VampPrior(guide, x_dim=x_dim, num_pseudo_inputs=cfg.num_pseudo_inputs,
                     num_classes=num_classes)


@register("prior", "flow")
def flow_prior(cfg, *, x_dim: int, num_classes: int, guide=None):
    return FlowPrior(cfg.latent_dim, num_layers=cfg.flow_layers)
