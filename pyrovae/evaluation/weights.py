"""Per-datapoint log importance weights of a model/guide pair, read from Pyro traces.

    log w_k = log p(x, z_k) - log q(z_k | x),    z_k ~ q(z | x),   one per datapoint

Pyro's ``vectorized_importance_weights`` sums every site into one joint weight per
particle for the whole batch; here each site's log-density is summed over every dim
except the particle dim and the data plate's dim (:mod:`pyrovae.infer.sites`), which
gives one weight per particle *and datapoint*.  Particles are vectorized by a plate
placed outside every plate of the pair (``dim = -(max_plate_nesting + 1)``), so a guide
whose encoder runs outside its data plate encodes each datapoint once per chunk of
particles.  A pair that cannot broadcast over that extra dim (e.g. a decoder that
flattens its input) is evaluated instead with the particles folded into the batch: every
argument whose first dim is the batch repeated K times.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

from pyrovae.errors import PyroVAEError
from pyrovae.machine import keep_freed_heap
from pyrovae.infer.sites import (check_latents, check_support, find_data_plate, get_trace,
                                 is_discrete, observed_sites, reduce_to, sample_sites)

PARTICLE_PLATE = "_pyrovae_particles"
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
    latents: dict  # name -> guide sample [k, batch, -1] (continuous per-datapoint sites)
    discrete: bool = True  # the observed sites are pmfs


@dataclass(frozen=True)
class Plan:
    """How to vectorize a pair over particles, found once by :func:`make_plan`."""

    batch: int
    nesting: int  # max plate nesting of the pair
    data_dim: int
    data_plate: str
    folded: bool  # True: particles folded into the data batch instead of a particle plate
    latents: tuple
    bytes_per_particle: int
    budget: int = CHUNK_BYTES  # working memory per chunk
    discrete: bool = True  # every observed site is a pmf (bits/dim apply)
    continuous: tuple = ()  # latent sites with continuous support (active units apply)
    enumerated: tuple = ()  # guide sites marked infer={"enumerate": "parallel"}: summed

    @property
    def enum_dims(self) -> int:
        return len(self.enumerated)

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


def trace_pair(model, guide, args, kwargs, *, particles: int = 0, dim: int = -2,
               enum_dim: int | None = None):
    """Guide trace and model trace replayed on it, hidden from the caller's handlers; with
    ``enum_dim``, guide sites marked for parallel enumeration take all their values along
    dims from ``enum_dim`` leftwards (Pyro's ``poutine.enum``)."""
    plate = (pyro.plate(PARTICLE_PLATE, particles, dim=dim) if particles
             else contextlib.nullcontext())
    if enum_dim is not None:
        guide = poutine.enum(guide, first_available_dim=enum_dim)
    with poutine.block(), plate:
        guide_tr = get_trace(guide, args, kwargs)
        model_tr = get_trace(poutine.replay(model, trace=guide_tr), args, kwargs)
    return guide_tr, model_tr


def batch_size_of(args) -> int:
    """Datapoints in a call: the length of the first argument (the data)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise PyroVAEError("the pair's first argument must be a tensor with at least one "
                           "datapoint along dim 0")
    if x.is_floating_point() and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero().flatten()
        raise PyroVAEError(f"x contains NaN or inf in {len(bad)} datapoint(s) "
                           f"(first at row {int(bad[0])}); clean or drop them before evaluating")
    return x.shape[0]


def _nesting(*traces) -> int:
    return max([-f.dim for tr in traces for s in tr.nodes.values() if s["type"] == "sample"
                for f in s["cond_indep_stack"] if f.vectorized] or [1])


def _bytes_per_particle(*traces) -> int:
    total = 0
    for tr in traces:
        for s in sample_sites(tr).values():
            shape = s["fn"].batch_shape + s["fn"].event_shape
            total += shape.numel() * s["value"].element_size()
    return max(total, 1)


def make_plan(model, guide, args, kwargs=None, *, data_plate: str | None = None) -> Plan:
    """Validate the pair on one call and choose how to vectorize its particles."""
    kwargs = kwargs or {}
    batch = batch_size_of(args)
    guide_tr, model_tr = trace_pair(model, guide, args, kwargs)
    latents = check_latents(model_tr, guide_tr)
    frame = find_data_plate((model_tr, guide_tr), batch, data_plate)
    check_support(model_tr)
    nesting = _nesting(model_tr, guide_tr)
    budget = CHUNK_BYTES if args[0].device.type == "cpu" else ACCELERATOR_CHUNK_BYTES
    if args[0].device.type == "cpu":
        keep_freed_heap()  # chunks reuse their pages rather than faulting them in anew
    guide_sites = sample_sites(guide_tr)
    enumerated = tuple(n for n in latents if guide_sites[n]["infer"].get("enumerate") ==
                       "parallel" and guide_sites[n]["fn"].has_enumerate_support)
    if len(enumerated) > 1:
        raise PyroVAEError(f"the evaluator sums one enumerated guide site exactly; this guide "
                           f"enumerates {list(enumerated)}: enumerate one, sample the others")
    plan = Plan(batch, nesting, frame.dim, frame.name, False, latents,
                _bytes_per_particle(model_tr, guide_tr), budget,
                discrete=all(is_discrete(s) for s in observed_sites(model_tr).values()),
                continuous=tuple(n for n in latents if not is_discrete(guide_sites[n])),
                enumerated=enumerated)
    try:
        particle_terms(model, guide, args, kwargs, plan, 2)
    except (RuntimeError, ValueError, IndexError):
        # the pair does not broadcast over a particle dim: fold particles into the batch
        plan = dataclasses.replace(plan, folded=True)
        particle_terms(model, guide, args, kwargs, plan, 2)
    return plan


def _repeat(t, k: int, batch: int):
    if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != batch:
        return t
    return t.expand(k, *t.shape).reshape(k * t.shape[0], *t.shape[1:])


def per_datapoint(site, plan: Plan, k: int) -> torch.Tensor:
    """log-density of one site summed over all dims but enumeration, particles and data:
    ``[C, k, batch]``, C the number of joint values of the enumerated sites (1 if none)."""
    lp = scale_and_mask(site["fn"].log_prob(site["value"]), 1.0, site["mask"])  # beta ignored
    e = plan.enum_dims
    n = plan.nesting + (0 if plan.folded else 1) + e
    keep = (*range(e), *(() if plan.folded else (e,)), plan.data_dim)
    lp = reduce_to(lp, n, keep, site["name"])
    lp = lp.reshape(lp.shape[:e].numel(), *lp.shape[e:])  # the enumerated values in one dim
    d = n + plan.data_dim - e + 1
    if plan.folded:
        return lp.reshape(lp.shape[0], -1).expand(-1, k * plan.batch).reshape(-1, k, plan.batch)
    return lp.reshape(lp.shape[0], lp.shape[1], lp.shape[d]).expand(-1, k, plan.batch)


def _enum_dim(plan: Plan):
    if not plan.enumerated:
        return None
    return -(plan.nesting + (1 if plan.folded else 2))


def particle_terms(model, guide, args, kwargs, plan: Plan, k: int) -> Terms:
    """Traces of ``k`` particles for one batch and their per-datapoint terms.

    Enumerated guide sites (e.g. the label of a semi-supervised VAE) are summed exactly:
    log w_k = logsumexp_y [log p(x, y, z_k^y) - log q(z_k^y | x, y)], which is
    log sum_y q(y | x) p(x, y, z_k^y) / (q(y | x) q(z_k^y | x, y)); the ELBO pieces are
    their expectations under q(y | x).
    """
    if plan.folded:
        args = tuple(_repeat(a, k, plan.batch) for a in args)
        kwargs = {key: _repeat(v, k, plan.batch) for key, v in kwargs.items()}
        guide_tr, model_tr = trace_pair(model, guide, args, kwargs, enum_dim=_enum_dim(plan))
    else:
        guide_tr, model_tr = trace_pair(model, guide, args, kwargs, particles=k,
                                        dim=-(plan.nesting + 1), enum_dim=_enum_dim(plan))
    log_p = {n: per_datapoint(s, plan, k) for n, s in sample_sites(model_tr).items()}
    guide_sites = sample_sites(guide_tr)
    log_q = {n: per_datapoint(s, plan, k) for n, s in guide_sites.items()}
    summed = sum(log_p.values()) - sum(v for n, v in log_q.items() if n not in plan.enumerated)
    log_w = torch.logsumexp(summed, 0)  # over the enumerated values (one row if none)
    # q(y | x) over the enumerated values weighs the ELBO pieces
    q_y = (torch.softmax(sum(log_q[n] for n in plan.enumerated), 0) if plan.enumerated
           else torch.ones_like(summed))
    observed = sum(lp for n, lp in log_p.items() if n not in plan.latents)
    latents = {}
    for name in plan.continuous:
        v = guide_sites[name]["value"]
        batch_numel = v.shape[:v.dim() - len(guide_sites[name]["fn"].event_shape)].numel()
        if batch_numel == k * plan.batch:  # a plain per-datapoint site (not in a nested plate)
            latents[name] = v.reshape(k, plan.batch, -1)
    return Terms(log_w=log_w, log_p_obs=(q_y * observed).sum(0),
                 kl_sites={n: (q_y * (log_q[n] - log_p[n])).sum(0) for n in plan.latents},
                 latents=latents, discrete=plan.discrete)
