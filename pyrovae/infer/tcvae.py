"""β-TCVAE (Chen, Li, Grosse & Duvenaud 2018, "Isolating sources of disentanglement in VAEs").

The ELBO's KL term splits as  E_p(x) KL(q(z|x) || p(z)) = I(x; z) + TC(z) + sum_j KL(q(z_j) || p(z_j)),
with the total correlation TC = KL(q(z) || prod_j q(z_j)) of the aggregate posterior;
β-TCVAE penalizes it β times:

    loss = -ELBO + (β - 1) TC

TC is estimated on the minibatch by minibatch-weighted sampling (the paper's eq. 4): for
z_i ~ q(z | x_i),  log q(z_i) ~= logsumexp_m log q(z_i | x_m) - log(N M)  and
log q(z_ij) ~= logsumexp_m log q(z_ij | x_m) - log(N M), over the M datapoints of the batch
and a dataset of N (``dataset_size``; it shifts the value by a constant only, never the
gradient; default M).  It needs a guide whose latent site factorizes per dimension as
Normals (the diagonal Gaussian guide).
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal

from pyrovae.errors import PyroVAEError
from pyrovae.infer.particles import ParticleObjective
from pyrovae.infer.sites import latent_sites


def _normal(site):
    d = site["fn"]
    while isinstance(d, Independent):
        d = d.base_dist
    if not isinstance(d, Normal):
        raise PyroVAEError(f"tcvae needs a diagonal Gaussian guide (Normal(...).to_event(1)); "
                           f"site {site['name']!r} is {type(site['fn']).__name__}")
    return d


class BetaTCVAE(ParticleObjective):
    """``tcvae:BETA[:N]``: the ELBO with its total correlation weighted by ``beta``."""

    def __init__(self, beta: float, dataset_size: int | None = None):
        if not (beta >= 0) or math.isinf(beta):
            raise PyroVAEError(f"tcvae needs a finite beta >= 0, got {beta}")
        self.beta, self.dataset_size = float(beta), dataset_size
        super().__init__(1)

    def total_correlation(self, guide_tr) -> torch.Tensor:
        """Per-datapoint TC estimate ``[M]`` from the guide's one latent site."""
        sites = list(latent_sites(guide_tr).values())
        if len(sites) != 1:
            raise PyroVAEError(f"tcvae needs one latent site; the guide has "
                               f"{[s['name'] for s in sites]}")
        q = _normal(sites[0])
        z = sites[0]["value"].reshape(-1, q.loc.shape[-1])  # [M, L]
        loc, scale = q.loc.reshape(-1, z.shape[-1]), q.scale.reshape(-1, z.shape[-1])
        m = z.shape[0]
        log_qzx = Normal(loc[None], scale[None]).log_prob(z[:, None])  # [M_i, M_m, L]
        log_nm = math.log((self.dataset_size or m) * m)
        log_qz = torch.logsumexp(log_qzx.sum(-1), 1) - log_nm
        log_prod = (torch.logsumexp(log_qzx, 1) - log_nm).sum(-1)
        return log_qz - log_prod

    def _objective(self, log_w):
        return log_w.mean(0)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_tr, guide_tr, log_q, _ = self._weights(model, guide, args, kwargs)
        log_w, factor, _ = self._log_weights(model_tr, guide_tr, log_q)
        tc = self.total_correlation(guide_tr)
        return -factor * (log_w.sum() - (self.beta - 1.0) * tc.sum())

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        return float(self.differentiable_loss(model, guide, *args, **kwargs))
