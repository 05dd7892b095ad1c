"""Label-conditioned diagonal-Gaussian guide q(z | x, y) for conditional models (CVAE).

    q(z | x, y) = N(mu(x, onehot(y)), diag(sigma(x, onehot(y))^2))

The encoder is a :class:`~pyrovae.nets.ConditionedMLP` reading ``cat(x, onehot(y))``
(Sohn et al. 2015).  It is not a guide name of its own: ``--guide diagonal`` builds it
whenever the configured model is conditional (its factory carries ``conditional = True``),
because the guide is built before the model and a CVAE trained with a q(z | x) that
ignores y would be a silently different model.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae import registry
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.models.cvae import labels_one_hot
from pyrovae.nets import ConditionedMLP


def model_is_conditional(cfg) -> bool:
    """Whether the model named by ``cfg.model`` takes labels (``factory.conditional``)."""
    return bool(getattr(registry.get("model", cfg.model), "conditional", False))


class ConditionalGaussianGuide(DiagonalGaussianGuide):
    """Guide ``guide(x, y)``: ``z ~ N(loc(x, y), scale(x, y))`` inside the ``data`` plate.

    :param encoder: a :class:`~pyrovae.nets.ConditionedMLP` mapping ``(x, onehot(y))`` to
        ``[..., 2 * latent_dim]`` (loc, raw scale).
    """

    conditional = True

    def __init__(self, encoder: ConditionedMLP, latent_dim: int, *, scale: str = "softplus"):
        super().__init__(encoder, latent_dim, scale=scale)
        self.num_classes = encoder.num_classes

    def posterior(self, x: torch.Tensor, y=None):
        y1 = labels_one_hot(y, self.num_classes, x.shape[0], who="the conditional guide")
        loc, raw = self.encoder(x, y1.to(x.device)).split(self.latent_dim, dim=-1)
        return dist.Normal(loc, self._scale(raw)).to_event(1)


def conditional_diagonal(cfg, *, x_dim: int, num_classes: int) -> ConditionalGaussianGuide:
    encoder = ConditionedMLP(x_dim, num_classes, cfg.hidden, 2 * cfg.latent_dim,
                             activation=cfg.activation)
    return ConditionalGaussianGuide(encoder, cfg.latent_dim, scale=cfg.scale)
