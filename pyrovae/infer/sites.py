"""The pair contract, read from Pyro traces: sample sites, the data plate, per-datapoint sums.

Used by the particle objectives (training) and the evaluator alike, so that both find the
same datapoints and say the same thing when a pair breaks the contract.

- A *pair* is ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)``, called exactly as
  written: ``(x,)`` when no label is given, ``(x, y)`` when one is, plus whatever else the
  user passes (as Pyro's ``ELBO.loss(model, guide, *args, **kwargs)`` does).
- The *data plate* is the vectorized plate of size ``batch`` that holds every sample site
  of model and guide, whatever it is called; ``data_plate="name"`` chooses when several
  qualify.
"""
from __future__ import annotations

import re

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyrovae.errors import PyroVAEError

_SHAPE_MISMATCH = re.compile(r"Shape mismatch inside plate\('([^']*)'\) at site (\S+) dim")


def pair_args(x, y=None, *args) -> tuple:
    """The positional arguments of a pair: ``(x,)`` without a label, ``(x, y)`` with one."""
    return (x, *args) if y is None else (x, y, *args)


def batch_plate(x: torch.Tensor, name: str = "data") -> pyro.plate:
    """``pyro.plate(name, len(x))`` with the size as a Python int and no subsampling, so that
    under ``torch.jit.trace`` (one trace per batch shape) Pyro's site scale is the float 1.0
    and skipped, not a traced size ratio replayed forward and backward every step."""
    n = int(x.shape[0])
    return pyro.plate(name, n, subsample_size=n)


def sample_sites(trace) -> dict:
    """Sample sites that carry a density: no plate index sites, no ``pyro.deterministic``."""
    return {name: s for name, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)
            and not s["infer"].get("_deterministic")}


def latent_sites(trace) -> dict:
    return {n: s for n, s in sample_sites(trace).items() if not s["is_observed"]}


def observed_sites(trace) -> dict:
    return {n: s for n, s in sample_sites(trace).items() if s["is_observed"]}


def get_trace(fn, args, kwargs, **handlers):
    """``poutine.trace(fn).get_trace(*args, **kwargs)`` with Pyro's shape errors turned into
    one line that says what to change."""
    try:
        return poutine.trace(fn, **handlers).get_trace(*args, **kwargs)
    except ValueError as e:
        m = _SHAPE_MISMATCH.search(str(e))
        if m is None:
            raise
        raise PyroVAEError(
            f"site {m.group(2)!r} does not fit pyro.plate({m.group(1)!r}): its distribution's "
            f"batch shape has dims the plates do not declare; make the per-datapoint "
            f"dimensions an event, e.g. dist.Normal(loc, scale).to_event(1)") from None


def find_data_plate(traces, batch: int, data_plate: str | None = None):
    """The frame of the plate that holds every sample site of ``traces`` and has size
    ``batch``; a :class:`PyroVAEError` naming the plates found when there is none (or, without
    ``data_plate``, more than one)."""
    sites = {f"{n}": s for tr in traces for n, s in sample_sites(tr).items()}
    if not sites:
        raise PyroVAEError("the pair has no sample sites")
    seen = {}
    for s in sites.values():
        for f in s["cond_indep_stack"]:
            if f.vectorized:
                seen.setdefault(f.name, f)
    inside = {name: [n for n, s in sites.items()
                     if any(f.name == name for f in s["cond_indep_stack"])] for name in seen}
    common = [f for name, f in seen.items() if len(inside[name]) == len(sites)]
    if data_plate is not None:
        common = [f for f in common if f.name == data_plate]
    fits = [f for f in common if f.size == batch]
    if len(fits) == 1:
        frame = fits[0]
        if (frame.full_size or batch) != batch:
            raise PyroVAEError(f"pyro.plate({frame.name!r}) is subsampled (size {frame.size} of "
                               f"{frame.full_size}); per-datapoint bounds need the whole batch: "
                               f"do not subsample it here")
        return frame
    found = "; ".join(f"{name!r} (size {f.size}, dim {f.dim}, holds {len(inside[name])} of "
                      f"{len(sites)} sites)" for name, f in seen.items()) or "none"
    if len(fits) > 1:
        raise PyroVAEError(f"several plates of size {batch} hold every site "
                           f"({', '.join(repr(f.name) for f in fits)}); choose one with "
                           f"data_plate=")
    wanted = f"pyro.plate({data_plate!r}, ...)" if data_plate else "one vectorized pyro.plate"
    outside = sorted({n for n, s in sites.items() if not any(
        f.vectorized and f.size == batch for f in s["cond_indep_stack"])})
    raise PyroVAEError(f"per-datapoint bounds need every sample site of model and guide inside "
                       f"{wanted} of size {batch} (the batch of the first argument); plates "
                       f"found: {found}" + (f"; sites outside: {outside}" if outside else ""))


def check_latents(model_tr, guide_tr) -> tuple:
    """The model's latent site names, checked to be exactly those the guide samples."""
    model_latents = latent_sites(model_tr)
    guide_latents = {n for n, s in latent_sites(guide_tr).items()
                     if not s["infer"].get("is_auxiliary")}
    if not observed_sites(model_tr):
        raise PyroVAEError("the model has no observed sample site; observe the data with "
                           "pyro.sample('x', ..., obs=x) inside its data plate")
    missing = sorted(set(model_latents) - guide_latents)
    extra = sorted(guide_latents - set(model_latents))
    if missing or extra:
        raise PyroVAEError(f"model and guide latent sites differ (only in model: {missing}, "
                           f"only in guide: {extra}); the guide must sample every model latent")
    return tuple(model_latents)


def reduce_to(log_prob: torch.Tensor, n: int, keep, name: str = "?") -> torch.Tensor:
    """Pad ``log_prob`` to ``n`` plate dims and sum every dim not in ``keep`` (keepdim)."""
    if log_prob.dim() > n:
        raise PyroVAEError(f"site {name!r} has log_prob shape {tuple(log_prob.shape)}, more "
                           f"batch dims than its {n} plates; declare the per-datapoint "
                           f"dimensions an event with .to_event()")
    t = log_prob.reshape((1,) * (n - log_prob.dim()) + log_prob.shape)
    keep = {k % n for k in keep}
    dims = [d for d in range(n) if d not in keep and t.shape[d] != 1]
    return t.sum(dims, keepdim=True) if dims else t


def is_discrete(site) -> bool:
    """Whether a sample site's distribution has discrete support (a pmf)."""
    return bool(getattr(site["fn"].support, "is_discrete", False))


def check_support(model_tr) -> None:
    """Observed values must lie in their distribution's support: a Bernoulli likelihood on
    grey-level or standardized data would give a silently wrong number."""
    for name, site in observed_sites(model_tr).items():
        try:
            ok = bool(site["fn"].support.check(site["value"]).all())
        except (NotImplementedError, RuntimeError):
            continue  # a support torch cannot check elementwise
        if not ok:
            v = site["value"]
            raise PyroVAEError(
                f"observed site {name!r} holds values outside the support of its "
                f"{type(site['fn']).__name__} (range [{float(v.min()):g}, {float(v.max()):g}]);"
                f" binarize the data for a Bernoulli likelihood, or choose one for continuous "
                f"data (--likelihood gaussian)")
