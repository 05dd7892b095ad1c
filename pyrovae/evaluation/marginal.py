"""log p(x) beyond IWAE, for any pair: annealed importance sampling and BDMC sandwiches.

    log p(x) ~= log 1/C sum_c w_c,   w_c from AIS along f_t(z) = f0(z)^(1 - b_t) p(x, z)^(b_t)

with f0 the guide q(z | x) (``init="guide"``) or the prior p(z) (``init="prior"``), HMC
transitions per datapoint and chain (:mod:`pyrovae.evaluation.ais`; Neal 2001; Wu, Burda,
Salakhutdinov & Grosse 2017).  The densities come from Pyro traces of the pair, exactly as
the IWAE evaluator reads them (:mod:`pyrovae.evaluation.weights`): one vectorized
particle plate of C chains outside the data plate, every site's log-density summed per
datapoint, the model conditioned on the chains' latents.  Latents with constrained
support move in unconstrained space through Pyro's ``biject_to`` transforms, Jacobians
included.  Discrete latent sites cannot be moved by HMC and are refused.

BDMC (Grosse, Ghahramani & Adams 2015): on data simulated from the model, forward AIS is
a stochastic lower bound and reverse AIS, started at the latents that generated each
datapoint (exact posterior samples), a stochastic upper bound; the gap between them is how
far AIS at that budget is from log p(x) on data like these.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to
from tqdm.auto import tqdm

from pyrovae import distributed
from pyrovae.errors import PyroVAEError
from pyrovae.evaluation.ais import ais, log_mean_exp, mc_standard_error, schedule
from pyrovae.evaluation.weights import PARTICLE_PLATE, per_datapoint, evaluating, make_plan
from pyrovae.infer.sites import latent_sites, pair_args, sample_sites

INITS = ("guide", "prior")


class AISEstimate(NamedTuple):
    """Per-datapoint AIS results (all ``[B]`` float64 but ``seconds``)."""

    log_px: torch.Tensor  # the estimate of log p(x): a stochastic lower bound
    mc_se: torch.Tensor  # its Monte Carlo standard error (delta method over chains)
    acceptance: torch.Tensor  # mean HMC acceptance
    step_size: torch.Tensor  # final leapfrog step
    evaluations: int  # log-joint evaluations per datapoint (cost, like K for IWAE)
    seconds: float


class PairTarget:
    """The AIS densities of a pair on one batch, over C chains, in unconstrained space."""

    def __init__(self, model, guide, args, kwargs, *, num_chains: int, init: str,
                 data_plate: str | None = None):
        if init not in INITS:
            raise PyroVAEError(f"unknown AIS init {init!r}; valid: {', '.join(INITS)}")
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.chains, self.init = num_chains, init
        with evaluating(model, guide):
            self.plan = make_plan(model, guide, args, kwargs, data_plate=data_plate)
        discrete = [n for n in self.plan.latents if n not in self.plan.continuous]
        if discrete:
            raise PyroVAEError(f"AIS moves continuous latents with HMC; site(s) {discrete} are "
                               f"discrete: use log_likelihood_bound, which sums or samples them")
        if self.plan.folded:
            raise PyroVAEError("AIS needs a pair that broadcasts over a leading particle dim "
                               "(this one flattens its input); use log_likelihood_bound")
        self._cache = (None, None)

    def _trace(self, fn, data=None):
        plate = pyro.plate(PARTICLE_PLATE, self.chains, dim=-(self.plan.nesting + 1))
        fn = poutine.condition(fn, data=data) if data else fn
        with poutine.block(), plate:
            return poutine.trace(fn).get_trace(*self.args, **self.kwargs)

    def initial(self) -> dict:
        """Exact draws of f0 (the guide, or the model's prior), as unconstrained states."""
        with torch.no_grad():
            tr = self._trace(self.guide if self.init == "guide" else self.model)
        self.transforms = {n: biject_to(s["fn"].support) for n, s in latent_sites(tr).items()
                           if n in self.plan.latents}
        return self.unconstrain({n: tr.nodes[n]["value"] for n in self.transforms})

    def unconstrain(self, values: dict) -> dict:
        state = {n: t.inv(values[n]).detach() for n, t in self.transforms.items()}
        for name, u in state.items():
            if u.shape[:2] != (self.chains, self.plan.batch):
                raise PyroVAEError(f"AIS needs one latent per datapoint in the data plate; site "
                                   f"{name!r} has shape {tuple(u.shape)}")
        return state

    def _constrain(self, u: dict):
        z, log_det = {}, 0.0
        for name, t in self.transforms.items():
            z[name] = t(u[name])
            ld = t.log_abs_det_jacobian(u[name], z[name])
            log_det = log_det + ld.reshape(self.chains, self.plan.batch, -1).sum(-1)
        return z, log_det

    def _sum(self, trace, names) -> torch.Tensor:
        sites = sample_sites(trace)
        return sum(per_datapoint(sites[n], self.plan, self.chains)[0] for n in names)

    def _model_terms(self, u: dict):
        """(log p(z) + log det, log p(x, z) + log det) of the states ``u``, [C, B] each;
        cached per state so f0 = prior and fT share one model trace."""
        if self._cache[0] is not u:
            z, log_det = self._constrain(u)
            tr = self._trace(self.model, z)
            latent = self._sum(tr, self.plan.latents) + log_det
            observed = self._sum(tr, [n for n in sample_sites(tr) if n not in self.plan.latents])
            self._cache = (u, (latent, latent + observed))
        return self._cache[1]

    def log_f0(self, u: dict) -> torch.Tensor:
        if self.init == "prior":
            return self._model_terms(u)[0]
        z, log_det = self._constrain(u)
        tr = self._trace(self.guide, z)
        return self._sum(tr, [n for n in self.plan.latents]) + log_det

    def log_fT(self, u: dict) -> torch.Tensor:
        return self._model_terms(u)[1]


def _run(target: PairTarget, z0: dict, *, num_steps, leapfrog_steps, schedule_name, step_size,
         target_accept, reverse, progress):
    was = [m.training for m in (target.model, target.guide) if isinstance(m, torch.nn.Module)]
    for m in (target.model, target.guide):
        if isinstance(m, torch.nn.Module):
            m.eval()
    try:
        with pyro.validation_enabled(False):
            return ais(z0, target.log_f0, target.log_fT, betas=schedule(schedule_name, num_steps),
                       leapfrog_steps=leapfrog_steps, step_size=step_size,
                       target_accept=target_accept, reverse=reverse, progress=progress)
    finally:
        for m, w in zip([m for m in (target.model, target.guide)
                         if isinstance(m, torch.nn.Module)], was):
            m.train(w)


def ais_log_likelihood(model, guide, *args, num_steps: int, num_chains: int = 16,
                       leapfrog_steps: int = 10, init: str = "guide", schedule: str = "sigmoid",
                       step_size: float = 0.1, target_accept: float = 0.65,
                       data_plate: str | None = None, progress: bool = False,
                       **kwargs) -> AISEstimate:
    """Per-datapoint AIS estimates of log p(x) for one batch (the pair's arguments ``args``).

    :param num_steps: annealing steps T (one HMC transition of ``leapfrog_steps`` each).
    :param num_chains: independent AIS chains per datapoint, averaged in weight space.
    :param init: ``"guide"`` (f0 = q(z | x)) or ``"prior"`` (f0 = p(z)).
    :param schedule: ``"sigmoid"`` (Grosse et al. 2013), ``"linear"`` or ``"geometric"``.
    :returns: :class:`AISEstimate`.
    """
    for name, value in (("num_steps", num_steps), ("num_chains", num_chains),
                        ("leapfrog_steps", leapfrog_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PyroVAEError(f"{name} must be a positive integer, got {value!r}")
    start = time.perf_counter()
    target = PairTarget(model, guide, args, kwargs, num_chains=num_chains, init=init,
                        data_plate=data_plate)
    res = _run(target, target.initial(), num_steps=num_steps, leapfrog_steps=leapfrog_steps,
               schedule_name=schedule, step_size=step_size, target_accept=target_accept,
               reverse=False, progress=progress)
    return AISEstimate(res.log_z_bound, mc_standard_error(res.log_w), res.acceptance,
                       res.step_size, num_chains * num_steps * (leapfrog_steps + 1),
                       time.perf_counter() - start)


def ais_row(model, guide, data_x, data_y=None, *, num_steps: int, num_chains: int = 16,
            batch_size: int = 100, reference=None, init: str = "guide",
            progress: bool = True, **options) -> dict:
    """AIS over a dataset, batch by batch, as one row of the evaluation report: mean ± SE
    over datapoints, Monte Carlo SE of the mean, cost, time and acceptance; with
    ``reference`` (per-datapoint IWAE bounds of the same data) the paired gap AIS - IWAE."""
    world = distributed.current()  # under torchrun: this rank's batches, gathered below
    n, done = len(data_x), []
    bar = tqdm(total=n, desc=f"AIS T={num_steps}", unit="x",
               disable=not progress or not world.is_main)
    for i in world.my_batches(n, batch_size):
        y = None if data_y is None else data_y[i:i + batch_size]
        est = ais_log_likelihood(model, guide, *pair_args(data_x[i:i + batch_size], y),
                                 num_steps=num_steps, num_chains=num_chains, init=init,
                                 **options)
        done.append((est.log_px.cpu(), est.mc_se.cpu(), est.acceptance.cpu(), est.seconds,
                     est.evaluations))
        bar.update(min(len(est.log_px) * world.size, n - bar.n))
    bar.close()
    done = world.gather_batches(done)
    log_px, mc_se, accept = (torch.cat([b[j] for b in done]) for j in range(3))
    seconds = max(sum(b[3] for b in done[r::world.size]) for r in range(world.size))  # slowest rank
    evaluations = done[-1][4]
    row = {"steps": num_steps, "chains": num_chains, "init": init,
           "mean": float(log_px.mean()), "se": float(log_px.std() / n ** 0.5) if n > 1 else None,
           "mc_se": float(torch.nan_to_num(mc_se).square().sum().sqrt() / n),
           "evaluations": evaluations, "seconds": seconds,
           "acceptance": float(accept.mean()), "per_datapoint": log_px.tolist()}
    if reference is not None:
        gap = log_px - torch.as_tensor(reference, dtype=log_px.dtype)
        row["gap_vs_iwae"] = {"mean": float(gap.mean()),
                              "se": float(gap.std() / n ** 0.5) if n > 1 else None}
    return row


def simulate(model, x_template: torch.Tensor, y=None):
    """``(x, z)``: data drawn from the model in the shape of ``x_template`` (its observed
    site, which must be the first argument) and the latents that generated them."""
    with torch.no_grad(), poutine.block():
        tr = poutine.trace(poutine.uncondition(model)).get_trace(*pair_args(x_template, y))
    observed = {n: s for n, s in sample_sites(tr).items() if s["infer"].get("was_observed")}
    if len(observed) != 1:
        raise PyroVAEError(f"BDMC simulates the model's one observed site; it has "
                           f"{sorted(observed) or 'none'}")
    (name, site), = observed.items()
    if site["value"].shape != x_template.shape:
        raise PyroVAEError(f"the observed site {name!r} has shape {tuple(site['value'].shape)}, "
                           f"not that of the first argument {tuple(x_template.shape)}")
    latents = {n: s["value"] for n, s in sample_sites(tr).items() if n not in observed}
    return site["value"], latents


def bdmc(model, guide, x_template: torch.Tensor, y=None, *, num_steps: int,
         num_chains: int = 16, leapfrog_steps: int = 10, init: str = "guide",
         schedule: str = "sigmoid", step_size: float = 0.1, target_accept: float = 0.65,
         progress: bool = False) -> dict:
    """A BDMC sandwich on data simulated from the model (Grosse et al. 2015).

    :returns: ``{"x": simulated data, "z": their latents, "lower": [n], "upper": [n],
        "lower_se": [n], "upper_se": [n], "seconds": float}``; the lower bound is forward
        AIS from ``init``, the upper bound reverse AIS from the generating latents.
    """
    start = time.perf_counter()
    x, z_true = simulate(model, x_template, y)
    lower = ais_log_likelihood(model, guide, *pair_args(x, y), num_steps=num_steps,
                               num_chains=num_chains, leapfrog_steps=leapfrog_steps, init=init,
                               schedule=schedule, step_size=step_size,
                               target_accept=target_accept, progress=progress)
    target = PairTarget(model, guide, pair_args(x, y), {}, num_chains=num_chains, init=init)
    target.initial()  # the transforms
    z0 = target.unconstrain({n: v.expand(num_chains, *v.shape) for n, v in z_true.items()})
    res = _run(target, z0, num_steps=num_steps, leapfrog_steps=leapfrog_steps,
               schedule_name=schedule, step_size=step_size, target_accept=target_accept,
               reverse=True, progress=progress)
    return {"x": x, "z": z_true, "lower": lower.log_px, "upper": res.log_z_bound,
            "lower_se": lower.mc_se, "upper_se": mc_standard_error(res.log_w),
            "seconds": time.perf_counter() - start, "num_steps": num_steps,
            "num_chains": num_chains}


__all__ = ["AISEstimate", "ais_log_likelihood", "ais_row", "bdmc", "simulate", "log_mean_exp"]
