"""Per-datapoint log importance weights of a model/guide pair, read from Pyro traces.

    log w_k = log p(x, z_k) - log q(z_k | x),    z_k ~ q(z | x),   one per datapoint

Pyro's ``vectorized_importance_weights`` sums every site into one joint weight per
particle for the whole batch; here each site's log-density is summed over every dim
except the particle dim and the ``data`` plate's dim, which gives one weight per
particle *and datapoint*.  Particles are vectorized by a plate placed outside every
plate of the pair (``dim = -(max_plate_nesting + 1)``), so a guide whose encoder runs
outside its ``data`` plate encodes each datapoint once per chunk of particles.  A pair
that cannot broadcast over that extra dim (e.g. a decoder that flattens its input) is
evaluated instead with the particles folded into the batch: x repeated K times.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyrovae.errors import PyroVAEError

PARTICLE_PLATE = "_pyrovae_particles"
DATA_PLATE = "data"
# Working memory per chunk of particles.  Temporaries of a few tens of MB stay mostly in
# a 32 MB L3 cache and still give GEMMs thousands of rows; see scripts/benchmark_evaluation.py.
CHUNK_BYTES = 48 * 2**20
# A GPU wants far longer GEMMs and has no such cache to respect (not measured here).
ACCELERATOR_CHUNK_BYTES = 2 * 2**30
# Activations and log-density temporaries that the site tensors do not show.
OVERHEAD = 4


@dataclass(frozen=True)
class Terms:
    """Per-particle, per-datapoint terms of one chunk (all ``[k, batch]`` except latents)."""

    log_w: torch.Tensor
    log_p_obs: torch.Tensor  # log p(x | z): the observed sites
    kl_sites: dict  # name -> log q(z_s | ...) - log p(z_s | ...)
    latents: dict  # name -> guide sample reshaped [k, batch, -1] (plain per-datapoint sites)


@dataclass(frozen=True)
class Plan:
    """How to vectorize a pair over particles, found once by :func:`make_plan`."""

    batch: int
    nesting: int  # max plate nesting of the pair
    data_dim: int
    folded: bool  # True: particles folded into the data batch instead of a particle plate
    latents: tuple
    bytes_per_particle: int
    budget: int = CHUNK_BYTES  # working memory per chunk

    def auto_chunk_size(self) -> int:
        return max(1, self.budget // (OVERHEAD * self.bytes_per_particle))


@contextlib.contextmanager
def evaluating(*modules):
    """No autograd, dropout off, batch-norm statistics frozen; all restored after."""
    mods = [m for m in modules if isinstance(m, torch.nn.Module)]
    was = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, w in zip(mods, was):
            m.train(w)


def trace_pair(model, guide, x, y, *, particles: int = 0, dim: int = -2):
    """Guide trace and model trace replayed on it, hidden from the caller's handlers."""
    plate = (pyro.plate(PARTICLE_PLATE, particles, dim=dim) if particles
             else contextlib.nullcontext())
    with poutine.block(), plate:
        guide_tr = poutine.trace(guide).get_trace(x, y)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, y)
    return guide_tr, model_tr


def _sample_sites(trace):
    return {name: s for name, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)
            and not s["infer"].get("_deterministic")}


def _check_x(x) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise PyroVAEError("x must be a tensor with at least one datapoint along dim 0")
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero().flatten()
        raise PyroVAEError(f"x contains NaN or inf in {len(bad)} datapoint(s) "
                           f"(first at row {int(bad[0])}); clean or drop them before evaluating")


def _check_sites(model_tr, guide_tr, batch: int):
    """The contract, checked on a probe trace; returns (latent names, data plate dim)."""
    model_sites, guide_sites = _sample_sites(model_tr), _sample_sites(guide_tr)
    observed = [n for n, s in model_sites.items() if s["is_observed"]]
    if not observed:
        raise PyroVAEError("the model has no observed sample site; observe the data with "
                           "pyro.sample('x', ..., obs=x) inside pyro.plate('data', x.shape[0])")
    dims = set()
    for name, s in [*model_sites.items(), *guide_sites.items()]:
        frames = [f for f in s["cond_indep_stack"] if f.name == DATA_PLATE]
        if not frames or frames[0].dim is None:
            raise PyroVAEError(
                f"sample site {name!r} is not inside a vectorized pyro.plate('data', x.shape[0]); "
                f"per-datapoint bounds need every sample site of model and guide in that plate")
        f = frames[0]
        if f.size != batch or (f.full_size or batch) != batch:
            raise PyroVAEError(f"pyro.plate('data') at site {name!r} has size {f.size} (full size "
                               f"{f.full_size}) but x has {batch} datapoints; do not subsample it")
        dims.add(f.dim)
    if len(dims) > 1:
        raise PyroVAEError(f"the data plate sits at different dims {sorted(dims)} across sites")
    latents = tuple(n for n, s in model_sites.items() if not s["is_observed"])
    missing = [n for n in latents if n not in guide_sites]
    extra = [n for n, s in guide_sites.items()
             if n not in model_sites and not s["infer"].get("is_auxiliary")]
    if missing or extra:
        raise PyroVAEError(f"model and guide latent sites differ (only in model: {missing}, "
                           f"only in guide: {extra}); the guide must sample every model latent")
    return latents, dims.pop()


def _nesting(*traces) -> int:
    return max([-f.dim for tr in traces for s in tr.nodes.values() if s["type"] == "sample"
                for f in s["cond_indep_stack"] if f.vectorized] or [1])


def _bytes_per_particle(*traces) -> int:
    total = 0
    for tr in traces:
        for s in _sample_sites(tr).values():
            shape = s["fn"].batch_shape + s["fn"].event_shape
            total += shape.numel() * s["value"].element_size()
    return max(total, 1)


def make_plan(model, guide, x, y=None) -> Plan:
    """Validate the pair on ``x`` and choose how to vectorize its particles."""
    _check_x(x)
    batch = x.shape[0]
    guide_tr, model_tr = trace_pair(model, guide, x, y)
    latents, data_dim = _check_sites(model_tr, guide_tr, batch)
    nesting = _nesting(model_tr, guide_tr)
    budget = CHUNK_BYTES if x.device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    plan = Plan(batch, nesting, data_dim, False, latents, _bytes_per_particle(model_tr, guide_tr),
                budget)
    try:
        particle_terms(model, guide, x, y, plan, 2)
    except (RuntimeError, ValueError, IndexError):
        # the pair does not broadcast over a particle dim: fold particles into the batch
        plan = dataclasses.replace(plan, folded=True)
        particle_terms(model, guide, x, y, plan, 2)
    return plan


def _repeat(t, k: int):
    if t is None or not isinstance(t, torch.Tensor) or t.dim() == 0:
        return t
    return t.expand(k, *t.shape).reshape(k * t.shape[0], *t.shape[1:])


def _per_datapoint(site, plan: Plan, k: int) -> torch.Tensor:
    """log-density of one site summed over all dims but particles and data: ``[k, batch]``."""
    lp = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])  # beta ignored
    n = plan.nesting + (0 if plan.folded else 1)
    if lp.dim() > n:
        raise PyroVAEError(f"site {site['name']!r} has log_prob shape {tuple(lp.shape)}, more "
                           f"batch dims than its plates; declare event dims with .to_event()")
    lp = lp.reshape((1,) * (n - lp.dim()) + lp.shape)
    d = n + plan.data_dim
    other = [i for i in range(n) if i != d and (plan.folded or i != 0)]
    if other:
        lp = lp.sum(other, keepdim=True)
    if plan.folded:
        return lp.reshape(-1).expand(k * plan.batch).reshape(k, plan.batch)
    return lp.reshape(lp.shape[0], lp.shape[d]).expand(k, plan.batch)


def particle_terms(model, guide, x, y, plan: Plan, k: int) -> Terms:
    """Traces of ``k`` particles for the batch ``x`` and their per-datapoint terms."""
    if plan.folded:
        guide_tr, model_tr = trace_pair(model, guide, _repeat(x, k), _repeat(y, k))
    else:
        guide_tr, model_tr = trace_pair(model, guide, x, y, particles=k,
                                        dim=-(plan.nesting + 1))
    log_p = {n: _per_datapoint(s, plan, k) for n, s in _sample_sites(model_tr).items()}
    guide_sites = _sample_sites(guide_tr)
    log_q = {n: _per_datapoint(s, plan, k) for n, s in guide_sites.items()}
    log_w = sum(log_p.values()) - sum(log_q.values())
    observed = [lp for n, lp in log_p.items() if n not in plan.latents]
    latents = {}
    for name in plan.latents:
        v = guide_sites[name]["value"]
        batch_numel = v.shape[:v.dim() - len(guide_sites[name]["fn"].event_shape)].numel()
        if batch_numel == k * plan.batch:  # a plain per-datapoint site (not in a nested plate)
            latents[name] = v.reshape(k, plan.batch, -1)
    return Terms(log_w=log_w, log_p_obs=sum(observed),
                 kl_sites={n: log_q[n] - log_p[n] for n in plan.latents}, latents=latents)
