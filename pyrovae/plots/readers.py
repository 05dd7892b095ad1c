"""What figures read from a pair, through the contract alone.

Reconstructions are the mean of the model's observation distribution with the latent
replayed from the guide; decoded latents the same with the latent conditioned; samples
decode draws of the latent from the model's prior.  The
sites are found, not named: the model's one observed site and the guide's one latent
site, whatever they are called; pairs are called ``(x,)`` or ``(x, y)``.
"""
from __future__ import annotations

import torch
from pyro import poutine
from torch.distributions import Independent, Normal, kl_divergence

from pyrovae.errors import PyroVAEError
from pyrovae.infer.sites import latent_sites, observed_sites, pair_args

INACTIVE = 0.01  # Burda et al. (2016): unit u is active when Cov_x(E_q[z_u | x]) > 0.01


def _one(sites: dict, what: str) -> str:
    if len(sites) != 1:
        raise PyroVAEError(f"this figure needs exactly one {what} site; the pair has "
                           f"{sorted(sites) or 'none'}")
    return next(iter(sites))


def _data_site(sites: dict, x) -> str:
    """The observed site holding the data ``x`` (a label observed beside it is not it)."""
    if len(sites) > 1:
        sites = {n: s for n, s in sites.items() if s["value"].shape == x.shape}
    return _one(sites, "observed")


def _trace(fn, x, y, handler=None):
    with poutine.block():
        return poutine.trace(handler(fn) if handler else fn).get_trace(*pair_args(x, y))


def _probe(fn, x, y):
    """A trace that finds the sites' names without consuming anyone's random numbers."""
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _trace(fn, x, y)


def _dummy(n: int, x_dim: int, device) -> torch.Tensor:
    return torch.zeros(n, x_dim, device=device)


@torch.no_grad()
def observation_mean(model, guide, x, y=None) -> torch.Tensor:
    """E[x | z] with z ~ q(z | x): the reconstruction of ``x``."""
    guide_tr = _trace(guide, x, y)
    model_tr = _trace(model, x, y, lambda m: poutine.replay(m, trace=guide_tr))
    return model_tr.nodes[_data_site(observed_sites(model_tr), x)]["fn"].mean


@torch.no_grad()
def prior_mean(model, n: int, *, x_dim: int = 784, y=None, device="cpu") -> torch.Tensor:
    """E[x | z] with z ~ p(z) (and the given labels ``y``): decoded prior samples."""
    return decode(model, prior_draws(model, n, y, x_dim=x_dim, device=device), y, x_dim=x_dim)


@torch.no_grad()
def prior_draws(model, n: int, y=None, *, x_dim: int = 784, device="cpu") -> torch.Tensor:
    """``n`` draws of the model's latent from its prior (``[n, latent_dim]``)."""
    tr = _trace(model, _dummy(n, x_dim, device), y)
    return tr.nodes[_one(latent_sites(tr), "latent")]["value"]


@torch.no_grad()
def decode(model, z: torch.Tensor, y=None, *, x_dim: int = 784) -> torch.Tensor:
    """E[x | z] (``[N, x_dim]``) with the model's latent fixed to ``z``."""
    x = _dummy(z.shape[0], x_dim, z.device)
    plain = _probe(model, x, y)
    latent, observed = _one(latent_sites(plain), "latent"), _data_site(observed_sites(plain), x)
    tr = _trace(model, x, y, lambda m: poutine.condition(m, data={latent: z}))
    return tr.nodes[observed]["fn"].mean


def _site_mean(guide, x, y, draws: int = 64):
    tr = _trace(guide, x, y)
    site = tr.nodes[_one(latent_sites(tr), "latent")]
    try:
        return site["fn"].mean
    except NotImplementedError:  # e.g. a flow guide: no closed-form mean, average draws
        return sum(_trace(guide, x, y).nodes[site["name"]]["value"] for _ in range(draws)) / draws


@torch.no_grad()
def posterior_means(guide, x, y=None, *, batch_size: int = 500) -> torch.Tensor:
    """E_q[z | x] for every row of ``x`` as ``[N, latent_dim]``."""
    return torch.cat([_site_mean(guide, x[i:i + batch_size],
                                 None if y is None else y[i:i + batch_size])
                      for i in range(0, x.shape[0], batch_size)])


def _base(d):
    while isinstance(d, Independent):
        d = d.base_dist
    return d


@torch.no_grad()
def kl_per_unit(model, guide, x, y=None, *, batch_size: int = 500) -> torch.Tensor | None:
    """Average over ``x`` of KL(q(z_u | x) || p(z_u)) per unit u, ``[latent_dim]``.

    Defined when guide and prior both factorize over units as Normals (the diagonal
    guide with the standard prior); ``None`` otherwise.
    """
    total = None
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], None if y is None else y[i:i + batch_size]
        g_tr = _trace(guide, xb, yb)
        m_tr = _trace(model, xb, yb, lambda m: poutine.replay(m, trace=g_tr))
        name = _one(latent_sites(g_tr), "latent")
        q, p = (_base(tr.nodes[name]["fn"]) for tr in (g_tr, m_tr))
        if not (isinstance(q, Normal) and isinstance(p, Normal)):
            return None
        kl = kl_divergence(q, p).reshape(-1, q.batch_shape[-1]).sum(0)
        total = kl if total is None else total + kl
    return total / x.shape[0]


def activity(means: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_u | x]) per unit: the active-unit statistic of Burda et al. (2016)."""
    return means.double().var(0, unbiased=False).float()
