"""Inverse-autoregressive-flow guide (Kingma et al., "Improved Variational Inference with
Inverse Autoregressive Flow", NeurIPS 2016).

    h = encoder(x),  z_0 ~ N(mu(h), diag sigma(h)^2),  z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t
    log q(z_T | x) = log N(z_0; mu, sigma^2) - sum_t sum_i log sigma_t,i

where ``(m_t, logit sigma_t) = MADE_t(z_{t-1}, h)`` is autoregressive in ``z_{t-1}`` and sees
the context ``h`` everywhere (Pyro's ``conditional_affine_autoregressive`` in its "stable"
gated form, the paper's eq. 14).  Sampling and the density of a sample cost one network
pass per layer; the density of an arbitrary point needs ``latent_dim`` passes per layer
(Pyro inverts, then caches, the last sample), which is why the VampPrior uses
:meth:`IAFGuide.base_posterior` for its components.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from torch import nn

from pyrovae.errors import PyroVAEError
from pyrovae.guides.amortized import AmortizedGuide, encoder_for
from pyrovae.guides.gaussian import scale_fn
from pyrovae.registry import register


class IAFGuide(AmortizedGuide):
    """``z = flow_h(z_0)``, ``z_0 ~ N(mu(h), sigma(h))``, ``h = encoder(x [, y])``.

    :param encoder: maps the input to a context vector of ``context_dim`` features.
    :param num_flows: number of IAF layers (each a MADE with its own variable order).
    :param hidden_dims: hidden widths of each MADE (each >= latent_dim).
    """

    def __init__(self, encoder: nn.Module, latent_dim: int, *, context_dim: int,
                 num_flows: int = 2, hidden_dims=None, num_classes: int = 0,
                 scale: str = "exp"):
        super().__init__(encoder, latent_dim, num_classes=num_classes)
        if num_flows < 1:
            raise PyroVAEError(f"the IAF guide needs --flow-layers >= 1, got {num_flows}")
        if latent_dim < 2:
            raise PyroVAEError("the IAF guide needs latent_dim >= 2 (an autoregressive "
                               "layer on one variable is a plain affine map)")
        self.head = nn.Linear(context_dim, 2 * latent_dim)
        self.flows = nn.ModuleList(
            conditional_affine_autoregressive(latent_dim, context_dim,
                                              hidden_dims=hidden_dims, stable=True)
            for _ in range(num_flows))
        self.scale_of = scale_fn(scale)

    def base_from_features(self, h: torch.Tensor) -> dist.Distribution:
        loc, raw = self.head(h).split(self.latent_dim, dim=-1)
        return dist.Normal(loc, self.scale_of(raw)).to_event(1)

    def posterior_from_features(self, h: torch.Tensor) -> dist.Distribution:
        transforms = [flow.condition(h) for flow in self.flows]
        return dist.TransformedDistribution(self.base_from_features(h), transforms)

    def base_posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """The Gaussian N(mu(h), sigma(h)) before the flow."""
        return self.base_from_features(self.features(x, y))


@register("guide", "iaf")
def iaf(cfg, *, x_dim: int, num_classes: int):
    context_dim = 2 * cfg.latent_dim
    encoder = encoder_for(cfg, x_dim=x_dim, num_classes=num_classes, out_dim=context_dim)
    return IAFGuide(encoder, cfg.latent_dim, context_dim=context_dim, num_flows=cfg.flow_layers,
                    hidden_dims=[max(cfg.hidden, cfg.latent_dim)], num_classes=num_classes,
                    scale=cfg.scale)
