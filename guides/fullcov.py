"""Amortized full-covariance Gaussian guide q(z | x) = N(mu(x), L(x) L(x)^T).

The encoder emits ``D`` means, ``D`` raw diagonal entries and ``D(D-1)/2`` strictly
lower-triangular entries of the Cholesky factor L; the diagonal goes through softplus,
so L is a valid ``scale_tril`` (lower triangular, positive diagonal) for every input.
Correlations between latents are what a diagonal guide cannot express (Cremer, Li &
Duvenaud 2018 call the diagonal family "FFG" and measure what it costs).
"""
from __future__ import annotations

import pyro.distributions as dist
import torch

from pyrovae.guides.amortized import AmortizedGuide, encoder_for
from pyrovae.guides.gaussian import scale_fn
from pyrovae.registry import register


def num_features(latent_dim: int) -> int:
    """Encoder outputs a full-covariance guide needs: D + D + D(D-1)/2."""
    return 2 * latent_dim + latent_dim * (latent_dim - 1) // 2


class BroadcastMultivariateNormal(dist.MultivariateNormal):
    """MultivariateNormal whose ``rsample`` never copies ``scale_tril`` per particle.

    Under a particle plate the distribution is expanded to ``[K, N]`` while ``scale_tril``
    stays ``[N, D, D]``; torch's ``rsample`` multiplies through ``matmul``, which
    materializes K copies of the factors (1.6 GB for K = 5000, N = 32, D = 50).  One
    batched product over the N factors with the K draws stacked as columns does not.
    """

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        L = self._unbroadcasted_scale_tril
        d, inner = shape[-1], L.shape[:-2]
        lead = shape[:len(shape) - 1 - len(inner)]
        if tuple(shape[len(lead):-1]) != tuple(inner):
            return super().rsample(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        m, b = lead.numel(), inner.numel()
        cols = eps.reshape(m, b, d).permute(1, 2, 0)                  # [B, D, M]
        out = torch.bmm(L.reshape(b, d, d), cols).permute(2, 0, 1)      # [M, B, D]
        return self.loc + out.reshape(shape)


class FullCovarianceGuide(AmortizedGuide):
    """``z ~ N(mu(x), L(x) L(x)^T)`` inside the ``data`` plate.

    :param encoder: maps the input to :func:`num_features` ``(latent_dim)`` values.
    :param scale: ``"softplus"`` or ``"exp"`` for the diagonal of L (as in the diagonal guide).
    """

    def __init__(self, encoder, latent_dim: int, *, num_classes: int = 0,
                 scale: str = "exp"):
        super().__init__(encoder, latent_dim, num_classes=num_classes)
        self.scale_of = scale_fn(scale)
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("tril_rows", rows, persistent=False)
        self.register_buffer("tril_cols", cols, persistent=False)

    def scale_tril(self, h: torch.Tensor) -> torch.Tensor:
        d = self.latent_dim
        raw_diag, off = h[..., d:2 * d], h[..., 2 * d:]
        L = h.new_zeros(*h.shape[:-1], d, d)
        L[..., self.tril_rows, self.tril_cols] = off
        return L + torch.diag_embed(self.scale_of(raw_diag))

    def posterior_from_features(self, h: torch.Tensor):
        return BroadcastMultivariateNormal(h[..., :self.latent_dim], scale_tril=self.scale_tril(h))


@register("guide", "fullcov")
def fullcov(cfg, *, x_dim: int, num_classes: int):
    encoder = encoder_for(cfg, x_dim=x_dim, num_classes=num_classes,
                          out_dim=num_features(cfg.latent_dim))
    last = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    # start from a diagonal posterior: zero weights on the off-diagonal outputs, else the
    # ~D(D-1)/2 random entries would inflate the initial posterior variance D-fold
    with torch.no_grad():
        last.weight[2 * cfg.latent_dim:].zero_()
        last.bias[2 * cfg.latent_dim:].zero_()
    return FullCovarianceGuide(encoder, cfg.latent_dim, num_classes=num_classes, scale=cfg.scale)
