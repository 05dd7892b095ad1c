"""Annealed importance sampling (AIS) with HMC moves, vectorised over chains x datapoints.

The tensor-level core; :mod:`pyrovae.evaluation.marginal` runs it on a model/guide pair.

A state is a dict of site name -> tensor ``[C, B, *event]`` (C chains, B datapoints) in
unconstrained space; ``log_f0(z)`` and ``log_fT(z)`` return ``[C, B]``. The path is
log f_t = (1 - beta_t) log f0 + beta_t log fT (Neal 2001, "Annealed importance sampling").
Chains and datapoints must be independent inside ``log_f0``/``log_fT``: the HMC gradient is
taken of their total sum, which is per-element only because no element depends on another.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from pyro.ops.integrator import velocity_verlet
from tqdm.auto import tqdm

from pyrovae.errors import PyroVAEError

State = Dict[str, torch.Tensor]
LogDensity = Callable[[State], torch.Tensor]

SCHEDULES = ("sigmoid", "linear", "geometric")
_SIGMOID_DELTA = 4.0
_GEOMETRIC_BETA_MIN = 1e-4
# Step-size controller: smoothing of the acceptance rate and gain of the log-step update.
_ADAPT_DECAY = 0.9
_ADAPT_GAIN = 0.5


class AISError(PyroVAEError):
    """Invalid schedule, state or density shapes given to AIS."""


class AISResult(NamedTuple):
    """Output of :func:`ais`.

    ``log_w`` [C, B] float64 are the raw log weights of the direction that was run:
    forward, E[exp(log_w)] = Z so ``log_mean_exp(log_w)`` estimates log Z and is a
    stochastic LOWER bound; reverse, E[exp(log_w)] = 1/Z so ``-log_mean_exp(log_w)`` is a
    stochastic UPPER bound. ``log_z_bound`` applies the right sign. ``acceptance`` [B] is
    the mean Metropolis acceptance probability over transitions and chains (NaN when no
    transition ran), ``step_size`` [B] the final step sizes, ``z`` the final states.
    """

    log_w: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    z: State
    reverse: bool

    @property
    def log_z_bound(self) -> torch.Tensor:
        """Per-datapoint bound on log Z: lower if forward, upper if reverse, [B]."""
        estimate = log_mean_exp(self.log_w)
        return -estimate if self.reverse else estimate


def schedule(name: str, num_steps: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Annealing schedule 0 = beta_0 < ... < beta_T = 1.

    "linear": beta_t = t/T. "sigmoid": beta_t proportional to sigmoid(4 (2t/T - 1)), shifted
    and scaled to end points 0 and 1 (Grosse, Maddison & Salakhutdinov 2013, "Annealing
    between distributions by averaging moments"). "geometric": beta_0 = 0 and
    beta_t = 1e-4 ** ((T - t)/(T - 1)) for t = 1..T, i.e. T log-spaced values from 1e-4 to 1.

    :param name: one of ``SCHEDULES``.
    :param num_steps: T >= 1, the number of intermediate increments.
    :param dtype: floating dtype of the result.
    :returns: tensor of shape [T + 1].
    """
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise AISError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    num_steps = int(num_steps)
    t = torch.arange(num_steps + 1, dtype=dtype)
    if name == "linear":
        betas = t / num_steps
    elif name == "sigmoid":
        s = torch.sigmoid(_SIGMOID_DELTA * (2.0 * t / num_steps - 1.0))
        betas = (s - s[0]) / (s[-1] - s[0])
    elif name == "geometric":
        exponents = (num_steps - t[1:]) / max(num_steps - 1, 1)
        betas = torch.cat([t.new_zeros(1), _GEOMETRIC_BETA_MIN ** exponents])
    else:
        raise AISError(f"unknown schedule {name!r}; valid schedules: {', '.join(SCHEDULES)}")
    # Rounding must not leave the end points off 0 and 1: the weights telescope only then.
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/C) sum_c exp(log_w_c) over the chain dimension 0, computed stably.

    :param log_w: log weights [C, B].
    :returns: [B].
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def mc_standard_error(log_w: torch.Tensor) -> torch.Tensor:
    """Delta-method Monte Carlo SE of log mean_c w_c: sd_c(w) / (mean_c(w) sqrt(C)).

    The ratio is scale-free, so weights are shifted by their per-datapoint maximum
    before exponentiating; needs C >= 2 (else NaN).

    :param log_w: log weights [C, B].
    :returns: [B].
    """
    num_chains = log_w.shape[0]
    w = torch.exp(log_w - log_w.max(dim=0, keepdim=True).values)
    return w.std(dim=0, correction=1) / (w.mean(dim=0) * math.sqrt(num_chains))


def _log_ft(lf0: torch.Tensor, lfT: torch.Tensor, beta: float) -> torch.Tensor:
    """log f_beta = (1 - beta) log f0 + beta log fT (Neal 2001, eq. 3)."""
    # Exact end points avoid 0 * inf = NaN where one of the densities vanishes.
    if beta == 0.0:
        return lf0
    if beta == 1.0:
        return lfT
    return (1.0 - beta) * lf0 + beta * lfT


def _evaluate(z: State, log_f0: LogDensity, log_fT: LogDensity,
              beta: float) -> Tuple[torch.Tensor, torch.Tensor, State]:
    """log f0, log fT and grad_z of U = -sum log f_beta (Neal 2011, "MCMC using Hamiltonian dynamics").

    :returns: ``(log_f0(z), log_fT(z), grads)``, detached, grads shaped like ``z``.
    """
    leaves = {k: v.detach().requires_grad_(True) for k, v in z.items()}
    with torch.enable_grad():
        lf0, lfT = log_f0(leaves), log_fT(leaves)
        potential = -_log_ft(lf0, lfT, beta).sum()
        grads = (torch.autograd.grad(potential, list(leaves.values()), allow_unused=True)
                 if potential.requires_grad else [None] * len(leaves))
    grads = {k: torch.zeros_like(v) if g is None else g
             for (k, v), g in zip(leaves.items(), grads)}
    return lf0.detach(), lfT.detach(), grads


def _flat(d: State) -> State:
    """View every site as [C, B, D] so one [1, B, 1] step size broadcasts to all of them."""
    return {k: v.reshape(v.shape[0], v.shape[1], -1) for k, v in d.items()}


def hmc_transition(z: State, log_f0: LogDensity, log_fT: LogDensity, beta: float,
                   step_size: torch.Tensor, leapfrog_steps: int,
                   current: Optional[Tuple[torch.Tensor, torch.Tensor, State]] = None,
                   ) -> Tuple[State, torch.Tensor]:
    """One HMC move per chain and datapoint, leaving f_beta invariant.

    Accept (z', r') with probability min(1, exp(H(z, r) - H(z', r'))), H = -log f_beta + |r|^2/2,
    separately for every chain and datapoint (Neal 2011, "MCMC using Hamiltonian dynamics").
    Non-finite energies or positions are rejections.

    :param z: state, site -> [C, B, *event].
    :param beta: inverse temperature of the invariant density f_beta.
    :param step_size: leapfrog step per datapoint, [B].
    :param leapfrog_steps: number of leapfrog steps L.
    :param current: ``_evaluate(z, log_f0, log_fT, beta)`` if already computed.
    :returns: ``(z_next, accept_prob)``, accept_prob [C, B] float64.
    """
    lf0, lfT, grads = _evaluate(z, log_f0, log_fT, beta) if current is None else current
    shapes = {k: v.shape for k, v in z.items()}
    z_flat = _flat({k: v.detach() for k, v in z.items()})
    r = {k: torch.randn_like(v) for k, v in z_flat.items()}
    cache = {"calls": 0}

    def potential(zf: State) -> torch.Tensor:
        # The integrator only returns the summed energy; the per-element energies needed for
        # the Metropolis test are those of its last call, at the end of the trajectory.
        z_full = {k: v.reshape(shapes[k]) for k, v in zf.items()}
        a, b = log_f0(z_full), log_fT(z_full)
        cache["lf"], cache["calls"] = (a.detach(), b.detach()), cache["calls"] + 1
        return -_log_ft(a, b, beta).sum()

    step = step_size.to(z_flat[next(iter(z_flat))].dtype).view(1, -1, 1)
    z_prop, r_prop, _, _ = velocity_verlet(z_flat, r, potential, lambda m: dict(m), step,
                                           num_steps=leapfrog_steps, z_grads=_flat(grads))
    # Pyro swallows singular-matrix errors (zero gradients, no call completed): a trajectory
    # with any failed step is not reversible, so every element of it is rejected.
    lf0_p, lfT_p = cache["lf"] if cache["calls"] == leapfrog_steps else (lf0 * math.nan,) * 2

    def kinetic(m: State) -> torch.Tensor:
        return sum(0.5 * v.double().pow(2).sum(-1) for v in m.values())

    delta_h = (_log_ft(lf0, lfT, beta).double() - _log_ft(lf0_p, lfT_p, beta).double()
               + kinetic(r_prop) - kinetic(r))
    finite = torch.isfinite(delta_h)
    for v in z_prop.values():
        finite = finite & torch.isfinite(v).all(-1)
    accept_prob = torch.where(finite, torch.exp(torch.clamp(-delta_h, max=0.0)),
                              torch.zeros_like(delta_h))
    accept = torch.rand_like(accept_prob) < accept_prob
    z_next = {k: torch.where(accept.unsqueeze(-1), z_prop[k], z_flat[k]).reshape(shapes[k])
              for k in z}
    return z_next, accept_prob


def _check_betas(betas: Union[torch.Tensor, Sequence[float]]) -> list:
    """Validate 0 = beta_0 <= ... <= beta_T = 1 and return it as Python floats."""
    # One host transfer here spares a device synchronisation per transition later on.
    values = torch.as_tensor(betas, dtype=torch.float64).flatten().tolist()
    if len(values) < 2 or values[0] != 0.0 or values[-1] != 1.0:
        raise AISError("betas must start at exactly 0 and end at exactly 1 "
                       f"(got {len(values)} values)")
    if any(b < a for a, b in zip(values, values[1:])):
        raise AISError("betas must be non-decreasing")
    return values


def _batch_shape(z: State) -> Tuple[int, int]:
    """Common leading [C, B] of all sites of a state."""
    if not z:
        raise AISError("the state z0 has no sites")
    shapes = {tuple(v.shape[:2]) for v in z.values()}
    if len(shapes) != 1 or any(v.dim() < 2 for v in z.values()):
        raise AISError(f"all sites must share leading dims [C, B], got {sorted(shapes)}")
    return shapes.pop()


def ais(z0: State, log_f0: LogDensity, log_fT: LogDensity, *,
        betas: Union[torch.Tensor, Sequence[float]], leapfrog_steps: int = 10,
        step_size: Union[float, torch.Tensor] = 0.1, target_accept: float = 0.65,
        adapt: bool = True, reverse: bool = False, progress: Optional[bool] = None) -> AISResult:
    """Annealed importance sampling from f0 to fT with per-element HMC transitions.

    log w = sum_{t=1}^T (beta_t - beta_{t-1}) (log fT - log f0)(z_{t-1}), where z_t is one HMC
    move leaving f_t invariant applied to z_{t-1} (Neal 2001, eq. 11; z_T is never needed).
    Forward: z0 ~ f0 exactly (f0 normalised), E[w] = Z = int fT, so ``log_mean_exp(log_w)``
    estimates log Z from below. Reverse (``reverse=True``): z0 ~ fT / Z exactly, the same
    ``betas`` are run from 1 down to 0, E[w] = 1/Z, and ``-log_mean_exp(log_w)`` is a
    stochastic UPPER bound on log Z (Grosse, Ghahramani & Adams 2015, "Sandwiching the
    marginal likelihood using bidirectional Monte Carlo"). ``AISResult.log_z_bound`` applies
    this sign. A chain whose weight is undefined (NaN) gets weight zero (log_w = -inf).

    Step sizes (one per datapoint, shared by its C chains) move multiplicatively toward
    ``target_accept`` from an exponentially smoothed acceptance rate of all C chains of the
    past transitions, never from one chain's own move alone, so one chain's state steers its
    next kernel only through a 1/C share. ``adapt=False`` keeps them fixed (exact AIS).

    :param z0: initial state, site -> [C, B, *event], exact samples of f0 (of fT if reverse).
    :param log_f0: normalised initial log density, [C, B], differentiable in z.
    :param log_fT: unnormalised target log density log p(x, z), [C, B], differentiable in z.
    :param betas: ascending schedule from exactly 0 to exactly 1, e.g. :func:`schedule`.
    :param leapfrog_steps: leapfrog steps per HMC transition.
    :param step_size: initial leapfrog step, scalar or [B].
    :param target_accept: acceptance probability the step sizes are adapted toward.
    :param adapt: whether to adapt step sizes between transitions.
    :param reverse: run reverse AIS (see above).
    :param progress: show a tqdm bar over transitions.
    :returns: :class:`AISResult`.
    """
    values = _check_betas(betas)
    if reverse:
        values = values[::-1]
    num_chains, batch = _batch_shape(z0)
    ref = next(iter(z0.values()))
    eps = torch.as_tensor(step_size, dtype=ref.dtype, device=ref.device).expand(batch).clone()
    log_w = torch.zeros(num_chains, batch, dtype=torch.float64, device=ref.device)
    acc_sum = torch.zeros(batch, dtype=torch.float64, device=ref.device)
    acc_smooth = torch.full_like(acc_sum, target_accept)
    z = {k: v.detach() for k, v in z0.items()}
    num_transitions = len(values) - 2
    bar = tqdm(total=num_transitions, desc="AIS", unit="step") if progress else None
    for t in range(1, len(values)):
        beta_prev, beta = values[t - 1], values[t]
        last = t == len(values) - 1
        if last:
            with torch.no_grad():
                lf0, lfT = log_f0(z), log_fT(z)
        else:
            current = _evaluate(z, log_f0, log_fT, beta)
            lf0, lfT = current[0], current[1]
        if lf0.shape != (num_chains, batch) or lfT.shape != (num_chains, batch):
            raise AISError(f"log densities must have shape {(num_chains, batch)}, "
                           f"got {tuple(lf0.shape)} and {tuple(lfT.shape)}")
        if beta != beta_prev:  # a zero increment times an infinite ratio would give NaN
            log_w = log_w + (beta - beta_prev) * (lfT.double() - lf0.double())
        if last:
            break
        z, accept_prob = hmc_transition(z, log_f0, log_fT, beta, eps, leapfrog_steps, current)
        acc_t = accept_prob.mean(dim=0)
        acc_sum = acc_sum + acc_t
        if adapt:
            acc_smooth = _ADAPT_DECAY * acc_smooth + (1.0 - _ADAPT_DECAY) * acc_t
            eps = eps * torch.exp(_ADAPT_GAIN * (acc_smooth - target_accept)).to(eps.dtype)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)
    return AISResult(log_w, acc_sum / num_transitions, eps, z, reverse)
