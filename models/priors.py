"""Priors p(z): small modules whose ``forward()`` returns a distribution over ``z``.

Every prior returns a distribution with ``batch_shape == ()`` and
``event_shape == (latent_dim,)``; the model's ``data`` plate (and any particle plate an
evaluator adds) broadcasts it.
"""
from __future__ import annotations

import torch
import pyro.distributions as dist
from torch import nn

from pyrovae.registry import register


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        # buffers so the prior follows the model to the training device
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


@register("prior", "standard")
def standard_prior(cfg, *, x_dim: int, num_classes: int, guide=None):
    return StandardNormalPrior(cfg.latent_dim)
