"""Amortized diagonal-Gaussian guide q(z | x) = N(mu(x), diag(sigma(x)^2))."""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from pyrovae.errors import PyroVAEError
from pyrovae.nets import MLP
from pyrovae.registry import register

# sigma = softplus(raw) is bounded-gradient and never overflows; exp(raw / 2) is the
# log-variance convention of Kingma & Welling.  Both are offered; see the README.
SCALE_FNS = {
    "softplus": lambda raw: F.softplus(raw) + 1e-5,
    "exp": lambda raw: torch.exp(0.5 * raw),
}


def scale_fn(name: str):
    try:
        return SCALE_FNS[name]
    except KeyError:
        raise PyroVAEError(f"unknown scale parameterization {name!r}; valid: "
                           f"{', '.join(sorted(SCALE_FNS))}") from None


class DiagonalGaussianGuide(PyroModule):
    """Guide ``guide(x, y=None)``: ``z ~ N(loc(x), scale(x))`` inside the ``data`` plate.

    :param encoder: maps ``x[..., x_dim]`` to ``[..., 2 * latent_dim]`` (loc, raw scale).
    :param scale: ``"softplus"`` or ``"exp"`` (log-variance) parameterization of sigma.
    """

    def __init__(self, encoder: nn.Module, latent_dim: int, *, scale: str = "softplus"):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.scale_name = scale
        self._scale = scale_fn(scale)

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        return dist.Normal(loc, self._scale(raw)).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        q = self.posterior(x, y)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", q)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean E_q[z | x] (used for latent plots and active units)."""
        return self.posterior(x, y).mean


@register("guide", "diagonal")
def diagonal(cfg, *, x_dim: int, num_classes: int):
    from pyrovae.guides.conditional import conditional_diagonal, model_is_conditional

    if model_is_conditional(cfg):  # a CVAE's guide is q(z | x, y)
        return conditional_diagonal(cfg, x_dim=x_dim, num_classes=num_classes)
    encoder = MLP(x_dim, cfg.hidden, 2 * cfg.latent_dim, activation=cfg.activation)
    return DiagonalGaussianGuide(encoder, cfg.latent_dim, scale=cfg.scale)
