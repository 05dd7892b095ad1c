"""The VAE model half: p(z) p(x | z) with a Bernoulli decoder.

    log p(x, z) = log p(z) + sum_i log Bernoulli(x_i; sigmoid(f(z)_i))

The prior and the decoder network are passed in, so the same model serves any prior
(``models/priors.py``) and any decoder (``pyrovae/nets.py``).
"""
from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from pyrovae.distributions import IndependentBernoulli
from pyrovae.nets import MLP, init_output_bias_
from pyrovae.registry import register


class VAE(PyroModule):
    """Model ``model(x, y=None)``: ``z ~ prior`` and ``x ~ Bernoulli(logits=decoder(z))``.

    :param decoder: maps ``z[..., latent_dim]`` to logits ``[..., x_dim]``.
    :param prior: module whose ``forward()`` returns a distribution over ``z``.
    """

    def __init__(self, decoder: nn.Module, prior: nn.Module):
        super().__init__()
        self.decoder = decoder
        self.prior = prior

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            logits = self.decoder(z)
            return pyro.sample("x", IndependentBernoulli(logits), obs=x)  # fast Bernoulli.to_event(1)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Start the decoder at the pixels' marginal frequencies: output bias =
        logit(mean_n x_n), as Burda et al.'s IWAE code does."""
        init_output_bias_(self.decoder, x.mean(0))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean image ``sigmoid(decoder(z))`` (what the figures show)."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def sample_prior(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.prior().sample((n,))


@register("model", "vae")
def vae(cfg, *, x_dim: int, num_classes: int, prior: nn.Module):
    decoder = MLP(cfg.latent_dim, cfg.hidden, x_dim, activation=cfg.activation)
    return VAE(decoder, prior)
