"""Inference objectives by name: ``make_objective("iwae:50")`` -> an ELBO-like object.

Every objective has ``differentiable_loss(model, guide, x, y=None)``: a scalar whose
*value* is minus the objective summed over the batch (nats) and whose *gradient* is the
objective's gradient estimator; and ``loss(...) -> float``, the same value without a graph.

=================  ==========================================================  ==========
name               objective / gradient estimator                              reference
=================  ==========================================================  ==========
``elbo[:K]``       E_q[log p(x,z) - log q(z|x)], reparameterized (Trace_ELBO)   [1]
``meanfield[:K]``  same, analytic KL where known (TraceMeanField_ELBO)
``tracegraph[:K]`` same, Rao-Blackwellized score function (TraceGraph_ELBO)     [2]
``enum[:K]``       same, enumerated discrete guide sites summed (TraceEnum_ELBO)  [7]
``renyi:A[:K]``    1/(1-A) log 1/K sum_k w_k^(1-A), per datapoint               [3]
``iwae:K``         log 1/K sum_k w_k, per datapoint (= renyi:0:K)               [4]
``dreg:K``         iwae:K value; doubly reparameterized guide gradient          [5]
``stl[:K]``        elbo value; path-only ("sticking the landing") guide grad.   [6]
``tcvae:B[:N]``    ELBO - (B - 1) TC, minibatch-weighted TC estimate            [8]
=================  ==========================================================  ==========

with ``w_k = p(x, z_k) / q(z_k | x)``, ``z_k ~ q`` vectorized over a particle plate placed
outside the ``data`` plate.  The last four are :class:`ParticleObjective` subclasses
written over Pyro traces (``poutine.trace``/``replay``); they read every log-density from
``site["log_prob"]``, so a ``poutine.scale``-like β handler acts on them exactly as on
Trace_ELBO (``log w = log p(x|z) + β (log p(z) - log q(z|x))``).

[1] Kingma & Welling 2014; Ranganath et al. 2014.  [2] Schulman et al. 2015.
[3] Li & Turner 2016.  [4] Burda et al. 2016.  [5] Tucker et al. 2019.
[6] Roeder et al. 2017.  [7] Kingma et al. 2014 (M2); Pyro's TraceEnum_ELBO.
[8] Chen, Li, Grosse & Duvenaud 2018.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO

from pyrovae import registry
from pyrovae.errors import PyroVAEError
from pyrovae.infer.tcvae import BetaTCVAE
from pyrovae.infer.particles import DReG_IWAE, IWAE, ParticleObjective, RenyiBound, STL_ELBO

__all__ = ["make_objective", "objective_syntax", "ParticleObjective", "RenyiBound", "IWAE",
           "DReG_IWAE", "STL_ELBO", "TraceGraph"]


def _with_value(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """A tensor equal to ``value`` whose gradient is ``surrogate``'s."""
    return value.detach() + (surrogate - surrogate.detach())


class TraceGraph(TraceGraph_ELBO):
    """TraceGraph_ELBO with the ``differentiable_loss`` Pyro 1.9 lacks.

    Pyro only offers ``loss_and_grads``; we take its surrogate (score-function terms
    Rao-Blackwellized by the trace's dependency graph) and give it the ELBO's value.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        elbo, surrogate_loss = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return _with_value(-torch.as_tensor(elbo), surrogate_loss)


class MeanField(TraceMeanField_ELBO):
    """TraceMeanField_ELBO whose refusal of a site without an analytic KL says what to use."""

    def _explain(self, run, *args, **kwargs):
        try:
            return run(*args, **kwargs)
        except NotImplementedError as e:
            raise PyroVAEError(f"meanfield needs an analytic KL for every latent site "
                               f"({str(e).splitlines()[0][:120]}); use elbo, or tracegraph "
                               f"for discrete latents") from None

    def loss(self, model, guide, *args, **kwargs):
        return self._explain(super().loss, model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self._explain(super().differentiable_loss, model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        return self._explain(super().loss_and_grads, model, guide, *args, **kwargs)


# --- parameter parsing ----------------------------------------------------------

class Param(NamedTuple):
    name: str
    cast: Callable
    ok: Callable
    rule: str            # shown in error messages, e.g. "integer K >= 1"
    default: object = None  # None: required


K = Param("K", int, lambda k: k >= 1, "integer K >= 1")
K1 = K._replace(default=1)
ALPHA = Param("ALPHA", float, lambda a: math.isfinite(a) and a != 1,
              "real ALPHA != 1 (ALPHA = 1 is elbo)")
_SYNTAX: dict[str, str] = {}


def _syntax(base: str, params: tuple[Param, ...]) -> str:
    text = base
    for p in params:
        text += f"[:{p.name}]" if p.default is not None else f":{p.name}"
    rules = "; ".join(f"{p.rule}" + (f", default {p.default}" if p.default is not None
                                      else "") for p in params)
    return f"{text} ({rules})" if rules else text


def objective_syntax() -> str:
    """All valid objective names with their parameter syntax, one per line."""
    registry.load_plugins()
    return "\n".join(_SYNTAX.get(n, n) for n in registry.names("objective"))


def _objective(base: str, *params: Param):
    """Register ``fn(**params)`` as objective ``base``, parsing ``base:p1:p2`` names."""
    _SYNTAX[base] = _syntax(base, params)

    def decorator(fn):
        def factory(name: str = base):
            given = name.strip().split(":")[1:]
            required = sum(p.default is None for p in params)
            if not required <= len(given) <= len(params):
                raise _bad(name, f"{base} takes {_SYNTAX[base]}")
            values = {}
            for p, text in zip(params, given + [None] * len(params)):
                if text is None:
                    values[p.name] = p.default
                    continue
                try:
                    v = p.cast(text)
                except ValueError:
                    v = None
                if v is None or not p.ok(v):
                    raise _bad(name, f"{p.name}={text!r} is invalid, need {p.rule}")
                values[p.name] = v
            return fn(**values)

        factory.__doc__ = fn.__doc__
        registry.register("objective", base)(factory)
        return fn

    return decorator


def _bad(name: str, why: str) -> PyroVAEError:
    valid = "; ".join(objective_syntax().splitlines())
    return PyroVAEError(f"bad objective {name!r}: {why}. Valid objectives: {valid}")


def make_objective(name: str):
    """The objective called ``name`` (e.g. ``"elbo"``, ``"iwae:50"``, ``"renyi:0.5:10"``).

    :raises PyroVAEError: unknown name or bad parameters; the message lists valid syntax.
    """
    if not isinstance(name, str) or not name.strip():
        raise _bad(str(name), "expected a name such as 'elbo' or 'iwae:50'")
    base = name.strip().split(":", 1)[0]
    if base not in registry.names("objective"):
        raise _bad(name, f"unknown objective {base!r}")
    return registry.get("objective", base)(name)


def _particles(K: int) -> dict:
    return {"num_particles": K, "vectorize_particles": K > 1}


@_objective("elbo", K1)
def elbo(K):
    """Trace_ELBO, K particles averaged."""
    return Trace_ELBO(**_particles(K))


@_objective("meanfield", K1)
def meanfield(K):
    """TraceMeanField_ELBO: analytic KL(q || p) where registered."""
    return MeanField(**_particles(K))


class Enum(TraceEnum_ELBO):
    """TraceEnum_ELBO that does not warn on batches with nothing to enumerate (the labelled
    batches of semi-supervised training, where y is observed)."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
            return super().differentiable_loss(model, guide, *args, **kwargs)


@_objective("enum", K1)
def enum(K):
    """TraceEnum_ELBO: guide sites marked ``infer={"enumerate": "parallel"}`` summed exactly."""
    return Enum(max_plate_nesting=1, **_particles(K))


@_objective("tracegraph", K1)
def tracegraph(K):
    return TraceGraph(**_particles(K))


@_objective("renyi", ALPHA, K._replace(default=2))
def renyi(ALPHA, K):
    return RenyiBound(num_particles=K, alpha=ALPHA)


@_objective("iwae", K)
def iwae(K):
    return IWAE(num_particles=K)


@_objective("dreg", K)
def dreg(K):
    return DReG_IWAE(num_particles=K)


BETA = Param("BETA", float, lambda b: math.isfinite(b) and b >= 0, "real BETA >= 0")
N = Param("N", int, lambda n: n >= 0, "dataset size N (0: the batch's)", default=0)


@_objective("tcvae", BETA, N)
def tcvae(BETA, N):
    """β-TCVAE: the ELBO with its total correlation weighted by BETA (Chen et al. 2018)."""
    return BetaTCVAE(BETA, dataset_size=N or None)


@_objective("stl", K1)
def stl(K):
    return STL_ELBO(num_particles=K)
