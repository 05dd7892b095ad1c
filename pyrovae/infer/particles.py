"""K-particle objectives over Pyro traces: Rényi/IWAE bounds and the DReG and STL estimators.

Particles ``z_1..z_K ~ q(z | x)`` are drawn at once in Pyro's vectorized particle plate,
outside the ``data`` plate.  A *datapoint* is a cell of the plates that every sample site
sits in (the ``data`` plate of a VAE); for it

    log w_k   = log p(x, z_k) - log q(z_k | x)
    IWAE_K    = log 1/K sum_k w_k                      (Burda, Grosse & Salakhutdinov 2016)
    Renyi_a,K = 1/(1-a) log 1/K sum_k w_k^(1-a)        (Li & Turner 2016; a = 0 is IWAE)

and the objective is the sum over datapoints.  Compared with Pyro's ``RenyiELBO(alpha=0)``,
which agrees with this only when every site sits in an unsubsampled data plate:

* subsampled data plate: Pyro scales each log weight by N/B *inside* the log-sum-exp,
  ``log mean_k exp(N/B log w_k)``, which is no bound; we take the plates' subsampling
  factor ``prod full_size/size`` out, ``N/B * sum_m IWAE_K(x_m)``, the unbiased estimate
  of the full-data per-datapoint bound.
* a site outside the data plate (a global latent): no per-datapoint split exists; both
  use the joint bound ``log 1/K sum_k prod_m w_km`` over the batch (a bound on
  ``log p(x_batch)`` when nothing is subsampled).
* RenyiELBO's gradient only reaches ``pyro.param`` sites; ours is an ordinary autograd loss.

Site scales other than subsampling (e.g. β on latent sites) stay inside ``log w_k``, so
under the β handler ``log w_k = log p(x|z_k) + β(log p(z_k) - log q(z_k|x))``.
"""
from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.infer.util import get_dependent_plate_dims
from pyro.poutine.util import prune_subsample_sites

from pyrovae.errors import PyroVAEError
from pyrovae.infer.sites import check_latents, get_trace, latent_sites, reduce_to


def _map_values(trace, fn):
    """A shallow copy of ``trace`` whose latent values are ``fn(name, value)``."""
    new = trace.copy()
    for name, site in latent_sites(trace).items():
        new.nodes[name] = {**site, "value": fn(name, site["value"])}
    return new


def _run(fn, values, args, kwargs):
    tr = get_trace(poutine.replay(fn, trace=values), args, kwargs)
    tr = prune_subsample_sites(tr)
    tr.compute_log_prob()
    return tr


class ParticleObjective(ELBO):
    """Base: one vectorized trace pair -> per-datapoint log weights ``[K, M]``.

    A subclass defines ``_objective(log_w) -> [M]``; the loss is ``-sum_m`` of it.  Set
    ``path_gradient`` to evaluate ``log q`` with the guide's parameters stopped but the
    path through ``z`` kept: ``log q(z) - log q_phi(stop z) + stop(log q_phi(stop z))``
    has the value of ``log q`` and the gradient ``d/dphi log q_stop(phi)(z(phi))``; the
    second term comes from replaying the guide on the detached sample, so hierarchical
    guides stay correct.

    :param int num_particles: K >= 1.
    """

    path_gradient = False
    reweight_path = False  # DReG: multiply the gradient reaching each z_k by w~_k

    def __init__(self, num_particles: int = 1):
        if int(num_particles) != num_particles or num_particles < 1:
            raise PyroVAEError(f"num_particles must be an integer >= 1, got {num_particles}")
        super().__init__(num_particles=int(num_particles), vectorize_particles=True)

    def _get_trace(self, model, guide, args, kwargs):
        guide_tr = get_trace(guide, args, kwargs)
        path = self.path_gradient and torch.is_grad_enabled()
        aliases = {}
        values = guide_tr
        if path and self.reweight_path and self.num_particles > 1:
            def alias(name, z):  # a fresh node per z: its hook scales exactly this path
                aliases[name] = z.view_as(z)
                return aliases[name]
            values = _map_values(guide_tr, alias)
        model_tr = _run(model, values, args, kwargs)
        q_tr = prune_subsample_sites(guide_tr)
        if values is not guide_tr:
            q_tr = _run(guide, values, args, kwargs)
        q_tr.compute_log_prob()
        log_q = {name: site["log_prob"] for name, site in latent_sites(q_tr).items()}
        if path:
            fixed = _run(guide, _map_values(guide_tr, lambda _, z: z.detach()), args, kwargs)
            for name, site in latent_sites(fixed).items():
                log_q[name] = log_q[name] - site["log_prob"] + site["log_prob"].detach()
        self._check(model_tr, q_tr)
        return model_tr, q_tr, log_q, aliases

    def _check(self, model_tr, guide_tr):
        check_latents(model_tr, guide_tr)
        for name, site in latent_sites(guide_tr).items():
            if not site["fn"].has_rsample:
                raise PyroVAEError(
                    f"{type(self).__name__} needs reparameterizable guide sites; {name!r} "
                    f"({type(site['fn']).__name__}) is not: use tracegraph (score-function "
                    f"gradients) or elbo")

    def _log_weights(self, model_tr, guide_tr, log_q):
        """``(log_w [K, M] per datapoint, subsampling factor, padded cell shape)``."""
        sites = [s for tr in (model_tr, guide_tr) for s in tr.nodes.values()
                 if s["type"] == "sample"]
        n = self.max_plate_nesting
        sum_dims = set(get_dependent_plate_dims(sites))
        keep = [d for d in range(-n, 0) if d not in sum_dims]
        common = set.intersection(*(set(s["cond_indep_stack"]) for s in sites))
        factor = math.prod(f.full_size / f.size for f in common
                           if f.dim is not None and f.full_size)
        total = 0.0
        for name, site in model_tr.nodes.items():
            if site["type"] == "sample":
                term = site["log_prob"]
                if name in log_q:
                    term = term - log_q[name]
                total = total + reduce_to(term, n, keep, name)
        if self.num_particles == 1:
            total = total.unsqueeze(0)
        return total.reshape(self.num_particles, -1) / factor, factor, total.shape

    def _objective(self, log_w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _surrogate(self, log_w, cell_shape, aliases, guide_tr) -> torch.Tensor:
        """Per-datapoint tensor whose gradient is the estimator (default: autodiff)."""
        return self._objective(log_w)

    def _weights(self, model, guide, args, kwargs):
        (traces,) = self._get_traces(model, guide, args, kwargs)
        return traces

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs) -> float:
        """Minus the objective summed over the batch (a float)."""
        model_tr, guide_tr, log_q, _ = self._weights(model, guide, args, kwargs)
        log_w, factor, _ = self._log_weights(model_tr, guide_tr, log_q)
        return -factor * self._objective(log_w).sum().item()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Minus the objective summed over the batch, with the estimator's gradient."""
        model_tr, guide_tr, log_q, aliases = self._weights(model, guide, args, kwargs)
        log_w, factor, shape = self._log_weights(model_tr, guide_tr, log_q)
        value = self._objective(log_w.detach()).sum()
        surrogate = self._surrogate(log_w, shape, aliases, guide_tr).sum()
        return -factor * (value + (surrogate - surrogate.detach()))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """For ``pyro.infer.SVI``: backward on :meth:`differentiable_loss`."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class RenyiBound(ParticleObjective):
    """Per-datapoint Rényi bound ``1/(1-a) log 1/K sum_k w_k^(1-a)`` (Li & Turner 2016).

    :param float alpha: order a != 1 (a = 1 is the ELBO: use ``elbo``); a >= 0 bounds log p(x).
    """

    def __init__(self, num_particles: int = 2, *, alpha: float = 0.0):
        if alpha == 1 or not math.isfinite(alpha):
            raise PyroVAEError(f"renyi needs a finite alpha != 1 (alpha = 1 is elbo), got {alpha}")
        self.alpha = float(alpha)
        super().__init__(num_particles)

    def _objective(self, log_w):
        a = 1.0 - self.alpha
        return (torch.logsumexp(a * log_w, 0) - math.log(log_w.shape[0])) / a


class IWAE(RenyiBound):
    """``sum_m log 1/K sum_k w_km`` with its reparameterized gradient (Burda et al. 2016)."""

    def __init__(self, num_particles: int):
        super().__init__(num_particles, alpha=0.0)


class DReG_IWAE(IWAE):
    """IWAE_K with doubly reparameterized gradients (Tucker, Lawson, Gu & Maddison 2019).

        model:  sum_k w~_k d/dtheta log w_k
        guide:  sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi)     w~_k = w_k / sum_j w_j

    The guide's score-function term, whose variance grows with K, is replaced by its
    reparameterized twin.  Implemented with ``log q`` at stopped guide parameters and a
    gradient hook that multiplies what reaches each particle's ``z_k`` by ``w~_k`` once more.
    """

    path_gradient = True
    reweight_path = True

    def _surrogate(self, log_w, cell_shape, aliases, guide_tr):
        if torch.jit.is_tracing():  # a traced graph would silently drop the hooks
            raise PyroVAEError("dreg:K reweights gradients with tensor hooks, which "
                               "torch.jit.trace does not record; train it with --engine eager")
        w = torch.softmax(log_w.detach(), dim=0)
        cell_w = w.reshape(cell_shape)
        for name, z in aliases.items():
            scale = cell_w.reshape(cell_shape + (1,) * guide_tr.nodes[name]["fn"].event_dim)
            z.register_hook(lambda g, s=scale: g * s)
        return (w * log_w).sum(0)


class STL_ELBO(ParticleObjective):
    """The ELBO (mean over K particles) with the path-derivative gradient of Roeder, Wu &
    Duvenaud 2017 ("sticking the landing"): ``d/dphi [log p(x, z(phi)) - log q_stop(phi)(z(phi))]``.

    The dropped score term has expectation zero; at the exact posterior the estimator is
    exactly zero, so its variance vanishes where the ordinary reparameterized one does not.
    """

    path_gradient = True

    def _objective(self, log_w):
        return log_w.mean(0)
