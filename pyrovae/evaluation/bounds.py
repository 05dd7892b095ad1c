"""Importance-weighted bounds on log p(x), per datapoint, for any model/guide pair.

    log p̂_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K,    z_k ~ q(z | x)

E[log p̂_K(x)] is the bound L_K of Burda, Grosse & Salakhutdinov, "Importance Weighted
Autoencoders" (ICLR 2016): L_1 is the ELBO and L_1 <= L_K <= L_{K+1} <= log p(x), with
L_K -> log p(x) as K grows.  The weights come from Pyro traces (guide traced, model
replayed), so any pair that follows the contract works: PyroModules, plain functions
with ``pyro.module``, several (hierarchical) latent sites, non-reparameterizable sites.

Evaluation is always at beta = 1: the densities are read from ``site["fn"]`` and every
``site["scale"]`` is ignored, so a beta handler (or a subsampling scale) wrapped around
the pair, or active around the call, cannot leak in; :func:`pyro.poutine.block` also
hides the evaluator's sites from any handler the caller has open.  Masks are honoured.
Per-datapoint weights come from :mod:`pyrovae.evaluation.weights`; the report from
:mod:`pyrovae.evaluation.report`.

Pairs are called as written: every function takes the pair's arguments ``*args,
**kwargs`` exactly as Pyro's ``ELBO.loss(model, guide, *args, **kwargs)`` does --
``(x,)`` for ``model(x)``, ``(x, y)`` for ``model(x, y)``; the first is the data, whose
length is the batch.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae import distributed
from pyrovae.errors import PyroVAEError
from pyrovae.evaluation import report as eval_report
from pyrovae.evaluation.weights import Terms, evaluating, make_plan, particle_terms
from pyrovae.gemm import MIN_ROWS, check_precision, fast_linear, gemm_precision
from pyrovae.infer.sites import pair_args

__all__ = ["log_importance_weights", "log_likelihood_bound", "elbo_terms", "evaluate",
           "iwae_from_log_weights", "particle_ladder"]


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PyroVAEError(f"{name} must be a positive integer, got {value!r}")
    return value


def _chunks(model, guide, args, kwargs, *, num_particles: int, chunk_size: int | None,
            data_plate: str | None = None, precision: str = "float32"):
    """Yield :class:`~pyrovae.evaluation.weights.Terms` for consecutive blocks of particles."""
    num_particles = _check_count("num_particles", num_particles)
    if chunk_size is not None:
        _check_count("chunk_size", chunk_size)
    # contexts are entered per step, not across the yields: a generator suspended inside
    # `with torch.no_grad()` would leave its caller without autograd
    with evaluating(model, guide):
        plan = make_plan(model, guide, args, kwargs, data_plate=data_plate)  # caller's validation
    size = chunk_size or plan.auto_chunk_size()
    on_cpu = args[0].device.type == "cpu"  # make_plan has checked args[0] is a tensor
    check_precision(precision, args[0].device)
    packed = {}  # oneDNN's packed weights, for this evaluation only
    done = 0
    while done < num_particles:
        k = min(size, num_particles - done)
        # the probe has checked the pair; per-chunk argument checks cost ~10% here
        fast = on_cpu and k * plan.batch >= MIN_ROWS
        with evaluating(model, guide), pyro.validation_enabled(False), \
                fast_linear(model, guide, enabled=fast, packed=packed), \
                gemm_precision(precision):
            terms = particle_terms(model, guide, args, kwargs, plan, k)
        if torch.isnan(terms.log_w).any():
            rows = torch.isnan(terms.log_w).any(0).nonzero().flatten().tolist()
            raise PyroVAEError(
                f"NaN log-density for {len(rows)} datapoint(s) (first at batch row "
                f"{rows[0]}); are the parameters finite? pyro.enable_validation(True) "
                f"and one datapoint through the pair will name the site")
        yield terms
        done += k


def log_importance_weights(model, guide, *args, num_particles: int,
                           chunk_size: int | None = None, data_plate: str | None = None,
                           precision: str = "float32", **kwargs) -> torch.Tensor:
    """All log weights ``log p(x, z_k) - log q(z_k | x)`` as a ``[num_particles, batch]``
    tensor (what PSIS and ESS need); use :func:`log_likelihood_bound` when only the bound
    is wanted, which never holds more than one chunk of particles."""
    return torch.cat([t.log_w for t in _chunks(model, guide, args, kwargs,
                                                 num_particles=num_particles,
                                                 chunk_size=chunk_size, data_plate=data_plate,
                                                 precision=precision)])


def log_likelihood_bound(model, guide, *args, num_particles: int,
                         chunk_size: int | None = None, data_plate: str | None = None,
                         precision: str = "float32", **kwargs) -> torch.Tensor:
    """Per-datapoint estimate ``log p̂_K(x)`` (shape ``[batch]``) of the IWAE bound L_K.

    Particles are drawn in chunks of ``chunk_size`` (default: sized from a memory budget
    measured on a one-particle trace), vectorized by a particle plate outside the
    ``data`` plate, and folded into a running logsumexp, so memory does not grow with K.
    ``num_particles=1`` is a single-sample ELBO estimate.

    :param args: the pair's arguments, e.g. ``x`` or ``x, y``; ``kwargs`` pass through too.
    :param num_particles: K >= 1.
    :param chunk_size: particles per vectorized pass; changes speed and memory only.
    :param data_plate: name of the data plate, when several plates of the batch's size
        hold every site (by default it is found).
    :param precision: ``'float32'``, or ``'bfloat16'`` GEMM inputs on a CPU that has bf16
        instructions (faster on AMX; see :mod:`pyrovae.gemm`).
    """
    total = None
    for terms in _chunks(model, guide, args, kwargs, num_particles=num_particles,
                         chunk_size=chunk_size, data_plate=data_plate, precision=precision):
        part = torch.logsumexp(terms.log_w, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
    return total - math.log(num_particles)


def elbo_terms(model, guide, *args, num_particles: int = 1, data_plate: str | None = None,
               **kwargs) -> dict:
    """Per-datapoint ELBO pieces at beta = 1, averaged over ``num_particles`` samples:

        recon = E_q[log p(x | z)]            (the observed sites)
        kl    = E_q[log q(z | x) - log p(z)] (all latent sites; ``kl_per_site`` splits it)
        elbo  = recon - kl

    :returns: dict of ``[batch]`` tensors ``elbo``, ``recon``, ``kl`` and a dict
        ``kl_per_site`` of ``[batch]`` tensors keyed by latent site name.
    """
    recon, kl_sites = 0.0, {}
    for t in _chunks(model, guide, args, kwargs, num_particles=num_particles, chunk_size=None,
                     data_plate=data_plate):
        recon = recon + t.log_p_obs.sum(0)
        for name, kl in t.kl_sites.items():
            kl_sites[name] = kl_sites.get(name, 0.0) + kl.sum(0)
    recon = recon / num_particles
    kl_sites = {name: kl / num_particles for name, kl in kl_sites.items()}
    kl = sum(kl_sites.values()) if kl_sites else torch.zeros_like(recon)
    return {"elbo": recon - kl, "recon": recon, "kl": kl, "kl_per_site": kl_sites}


def iwae_from_log_weights(log_w: torch.Tensor, k: int) -> torch.Tensor:
    """L_K estimate per datapoint from ``log_w[S, batch]``: the mean of log p̂_K over the
    ``S // k`` disjoint groups of ``k`` weights (same expectation as one group, less
    variance; by Jensen it is never below the estimate for any divisor of ``k``)."""
    return iwae_estimate(log_w, k)[0]


def iwae_estimate(log_w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(estimate, Monte Carlo variance)`` of L_K per datapoint from ``log_w[S, batch]``.

    With ``G = S // k >= 2`` groups the variance of their mean is s² / G from the groups'
    spread; with one group, the delta method: Var log(mean w) ~= Var(w) / (k E[w]²) =
    (1 / ess - 1) / k, with ess = (Σw)² / (k Σw²) the normalized effective sample size.
    """
    groups = log_w.shape[0] // k
    if groups < 1:
        raise PyroVAEError(f"K = {k} needs at least {k} log weights, got {log_w.shape[0]}")
    lw = log_w[: groups * k].double().reshape(groups, k, *log_w.shape[1:])
    per_group = torch.logsumexp(lw, dim=1) - math.log(k)
    if groups >= 2:
        return per_group.mean(0), per_group.var(0) / groups
    w = torch.softmax(lw[0], dim=0)
    return per_group[0], (k * w.square().sum(0) - 1).clamp(min=0) / k


class _Accumulator:
    """Per-datapoint statistics of one batch, gathered chunk by chunk."""

    def __init__(self):
        self.log_w, self.recon, self.kl, self.z1, self.z2, self.n = [], 0.0, {}, {}, {}, 0

    def add(self, t: Terms) -> None:
        self.log_w.append(t.log_w)
        self.recon = self.recon + t.log_p_obs.double().sum(0)
        for name, kl in t.kl_sites.items():
            self.kl[name] = self.kl.get(name, 0.0) + kl.double().sum(0)
        for name, z in t.latents.items():
            z = z.double()
            self.z1[name] = self.z1.get(name, 0.0) + z.sum(0)
            self.z2[name] = self.z2.get(name, 0.0) + z.square().sum(0)
        self.n += t.log_w.shape[0]

    def z_moments(self):
        """Per datapoint: particle mean of z, and its Monte Carlo variance s² / n."""
        if self.n < 2:  # one particle cannot tell the mean from the noise
            return {}, None
        mean = {s: v / self.n for s, v in self.z1.items()}
        noise = {s: (self.z2[s] - self.n * mean[s].square()).clamp(min=0) / (self.n - 1) / self.n
                 for s in mean}
        return mean, noise


def evaluate(model, guide, data_x: torch.Tensor, data_y: torch.Tensor | None = None, *,
             num_particles: Sequence[int] = (1, 10, 100, 1000, 5000), batch_size: int = 32,
             chunk_size: int | None = None, progress: bool = True,
             active_threshold: float = 0.01, data_plate: str | None = None,
             levels: int | None = None, precision: str = "float32", **kwargs) -> dict:
    """Evaluate ``(model, guide)`` on a dataset and return the report dict.

    For each datapoint ``max(num_particles)`` log weights are drawn once; every L_K in
    ``num_particles`` is estimated from them by :func:`iwae_from_log_weights`, so the
    table is monotone in K by construction.  PSIS k̂ (Vehtari et al. 2024, via arviz)
    and the normalized ESS ``(Σw)² / (K Σw²)`` describe the weights of the largest K;
    KL per site and active units (Burda et al. 2016: ``Cov_x E_q[z_i | x] > 0.01``, with
    ``E_q[z | x]`` the particle average, its Monte Carlo variance subtracted) come from
    the same particles.

    The pair is called as ``model(x)`` (``data_y`` None) or ``model(x, y)`` on slices of
    the data; ``kwargs`` pass through unchanged.

    Inside a ``torch.distributed`` process group (e.g. ``torchrun ... pyrovae evaluate``)
    the batches are shared among the ranks and gathered, so every rank returns the whole
    report (the Monte Carlo draws differ from a single process's, not their distribution).

    :param batch_size: datapoints per pass; small batches keep the particle chunks long,
        so a guide's encoder, which runs once per chunk, costs little.
    :param levels: the data are pixels dequantized from this many levels (a pyrovae
        dataset's ``levels``): bits/dim then count the bins (see
        :mod:`pyrovae.evaluation.report`).
    :param precision: ``'float32'`` (default), or ``'bfloat16'``: the CPU GEMMs' inputs
        rounded to bf16, accumulated in float32 (:mod:`pyrovae.gemm`); the report says which.
    :returns: a JSON-ready dict; see :func:`pyrovae.evaluation.report.write_report`.
    """
    ks = sorted({_check_count("num_particles", k) for k in (
        [num_particles] if isinstance(num_particles, int) else num_particles)})
    if not ks:
        raise PyroVAEError("num_particles is empty; give at least one K, e.g. (1, 5000)")
    _check_count("batch_size", batch_size)
    if not isinstance(data_x, torch.Tensor) or data_x.dim() < 1 or len(data_x) == 0:
        raise PyroVAEError("data_x must be a non-empty tensor with datapoints along dim 0")
    check_precision(precision, data_x.device)
    if data_x.is_floating_point() and not torch.isfinite(data_x).all():
        bad = (~torch.isfinite(data_x)).reshape(len(data_x), -1).any(1).nonzero().flatten()
        raise PyroVAEError(f"data_x has NaN or inf in {len(bad)} datapoint(s), the first at "
                           f"index {int(bad[0])}; clean or drop them before evaluating")
    start = time.perf_counter()
    n = len(data_x)
    world = distributed.current()  # under torchrun: this rank's batches, gathered below
    done = []  # per batch: ({K: (estimate, variance)}, Stats, discrete)
    bar = tqdm(total=n, desc=f"IWAE K={ks[-1]}", unit="x", disable=not progress or not world.is_main)
    for i in world.my_batches(n, batch_size):
        x = data_x[i:i + batch_size]
        y = None if data_y is None else data_y[i:i + batch_size]
        acc = _Accumulator()
        for t in _chunks(model, guide, pair_args(x, y), kwargs, num_particles=ks[-1],
                         chunk_size=chunk_size, data_plate=data_plate, precision=precision):
            acc.add(t)
        log_w = torch.cat(acc.log_w)
        stats = eval_report.Stats()
        z_mean, z_noise = acc.z_moments()
        stats.add(log_w, recon=acc.recon / acc.n, kl={s: v / acc.n for s, v in acc.kl.items()},
                  z_mean=z_mean, z_noise=z_noise)
        done.append(({k: tuple(v.cpu() for v in iwae_estimate(log_w, k)) for k in ks}, stats,
                     t.discrete))
        bar.update(min(len(x) * world.size, n - bar.n))
    bar.close()
    done = world.gather_batches(done)
    bounds = {k: tuple(torch.cat(parts) for parts in zip(*(b[0][k] for b in done))) for k in ks}
    stats = eval_report.Stats.concat(b[1] for b in done)
    discrete = done[0][2]
    report = eval_report.make_report(bounds, stats, x_dim=data_x[0].numel(),
                                     threshold=active_threshold,
                                     seconds=time.perf_counter() - start,
                                     batch_size=batch_size, discrete=discrete, levels=levels,
                                     precision=precision)
    # per datapoint, for paired comparisons later (AIS, another run) without a second pass
    report["per_datapoint"] = {"K": ks[-1], "iwae": bounds[ks[-1]][0].tolist(),
                               "elbo": bounds[ks[0]][0].tolist()}
    return report


def particle_ladder(k_max: int) -> tuple[int, ...]:
    """``(1, 10, 100, ..., k_max)``: the K table for a largest K."""
    return tuple(10 ** i for i in range(len(str(k_max))) if 10 ** i < k_max) + (k_max,)
