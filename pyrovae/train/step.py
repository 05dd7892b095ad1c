"""One training step -- the hot path of :func:`pyrovae.train.fit.fit` -- and what keeps it cheap.

A step is stochastic variational inference as ``pyro.infer.SVI.step`` does it: the loss
``objective.differentiable_loss(model, guide, x, y)`` comes from Pyro's traces of the pair
(under the β handler), then backward and one Adam update.  What it leaves out is
bookkeeping that costs time on every step and buys nothing when the loss is
differentiated with autograd (measured in ``scripts/benchmark_training.py``):

* **host synchronisation**: Pyro's ``Trace_ELBO.differentiable_loss`` turns every site's
  log-density into a Python float (``torch_item``) to report the ELBO's value, i.e. one
  device->host copy per site per step -- on a GPU that stalls the queue four times a
  step.  :class:`SyncFreeTrace_ELBO` is the same estimator with the value kept on device.
* **PyroModule's per-call bookkeeping**: calling a ``PyroModule`` opens its parameter
  scope, and every attribute access to a plain ``nn.Module`` inside it then emits one
  ``pyro.param`` message per parameter through the effect-handler stack, only so that
  handlers of ``param`` sites could see them.  No such handler exists in a
  ``differentiable_loss`` step, so :class:`PairLoss` calls ``forward`` directly whenever
  the module tree has no ``PyroSample`` attribute (the only feature that needs the scope).
* **an idle handler**: the β handler is entered only when β != 1 (or extra handlers are
  given).

The default engine, ``"auto"``, traces the loss module with ``torch.jit.trace`` once per
batch shape and β -- Pyro's own ``JitTrace_ELBO`` idea, here with module-local parameters --
wherever that is known to be safe, and runs eagerly elsewhere.  Pyro's handlers then run once
at trace time instead of every step, which removes most of the remaining Python overhead;
each step replays the recorded graph, with fresh noise from the same random streams, so it
takes the step an eager one would.  A trace is only right for a pair whose structure does
not depend on the data's values, and that is checked, not assumed: every new trace is
replayed at once on the batch it was traced on with the same noise and must give the
eager loss, and every ``VERIFY_EVERY`` steps the replayed loss is compared with an eager one
without a host sync (``fit`` reads the verdict at the end of each epoch, a sync it makes
anyway).  Any disagreement, a failure to trace, β changing every step (annealing), extra
handlers, data parallelism, a plain-function pair or ``pyro.param`` sites outside the
pair's modules (a trace would freeze them) mean eager.  Auto traces only pairs whose two
modules declare ``traceable = True`` (the registry's models and amortized guides do; a
user's module may) and objectives that are Pyro ELBOs: an undeclared pair or objective may
have Python side effects (a counter, a print) that a replay would silently skip.
``"eager"`` never traces; ``"jit"`` insists (an error where auto would quietly run eagerly).
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import ELBO, Trace_ELBO
from pyro.infer.elbo import ELBOModule
from pyro.nn import PyroModule

from pyrovae.errors import PyroVAEError
from pyrovae.infer.handlers import ScaleSitesMessenger

ENGINES = ("auto", "eager", "jit")
MAX_TRACES = 4  # batch shapes x β values; beyond this β is being annealed: stay eager
VERIFY_EVERY = 250  # steps between sync-free checks of a replayed loss against eager
VERIFY_RTOL = 1e-4


class SyncFreeTrace_ELBO(Trace_ELBO):
    """``Trace_ELBO`` whose ``differentiable_loss`` never leaves the device.

        loss = -(1/K) sum_k [log p(x, z_k) - log q(z_k | x)],   z_k ~ q reparameterized

    Value and gradient equal Pyro's (Kingma & Welling 2014; Ranganath et al. 2014) -- the
    surrogate is built from the same ``score_parts``; a particle with a non-reparameterized
    guide site falls back to Pyro's own Rao-Blackwellized surrogate (which syncs).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            particle = _reparameterized_loss(model_trace, guide_trace)
            if particle is None:
                value, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
                particle = value + (surrogate - surrogate.detach())
            particles.append(particle)
        total = _total(particles)  # one trace, or one per particle (not vectorized)
        return total if self.num_particles == 1 else total / self.num_particles


def _total(terms):
    """``sum(terms)`` without the ``0 +`` of Python's ``sum`` (one op fewer per trace)."""
    total = None
    for t in terms:
        total = t if total is None else total + t
    return 0.0 if total is None else total


def _reparameterized_loss(model_trace, guide_trace):
    """-(ELBO) with the surrogate's gradient, or None if a guide site needs a score function."""
    log_p = _total(s["log_prob_sum"] for s in model_trace.nodes.values() if s["type"] == "sample")
    log_q, surrogate_log_q, same = [], [], True
    for site in guide_trace.nodes.values():
        if site["type"] != "sample":
            continue
        log_prob, score_function, entropy_term = site["score_parts"]
        if not is_identically_zero(score_function):
            return None
        log_q.append(site["log_prob_sum"])
        # Pyro's surrogate uses the entropy term; for torch distributions it *is* log_prob
        # unless a scale (β) was applied to each part separately
        if entropy_term is log_prob:
            surrogate_log_q.append(site["log_prob_sum"])
        else:
            same = False
            if not is_identically_zero(entropy_term):
                surrogate_log_q.append(entropy_term.sum())
    value = _total(log_q) - log_p
    if same:  # the surrogate is the value: its gradient is the value's
        return value
    surrogate = _total(surrogate_log_q) - log_p
    return value.detach() + (surrogate - surrogate.detach())


def lean_objective(objective):
    """The sync-free twin of a plain ``Trace_ELBO`` (same settings); anything else as is."""
    if type(objective) is not Trace_ELBO:
        return objective
    twin = SyncFreeTrace_ELBO.__new__(SyncFreeTrace_ELBO)
    twin.__dict__.update(objective.__dict__)
    return twin


def _direct(module):
    """``module.forward`` where skipping ``PyroModule.__call__`` changes nothing but speed."""
    if not isinstance(module, PyroModule) or module._forward_hooks or module._forward_pre_hooks:
        return module
    if any(isinstance(m, PyroModule) and m._pyro_samples for m in module.modules()):
        return module  # PyroSample attributes are cached per call: they need the scope
    return module.forward


def owner(fn) -> torch.nn.Module | None:
    """The ``nn.Module`` holding ``fn``'s parameters: ``fn`` itself, or the module a bound
    method belongs to (``vae.model`` in Pyro's VAE example); None for a plain function."""
    if isinstance(fn, torch.nn.Module):
        return fn
    bound = getattr(fn, "__self__", None)
    return bound if isinstance(bound, torch.nn.Module) else None


class PairLoss(ELBOModule):
    """Pyro's ELBO module (``objective(model, guide)``): ``forward(*args, **kwargs)`` is the
    loss, the pair called exactly as given.

    This is the ``nn.Module`` that :class:`torch.nn.parallel.DistributedDataParallel`
    wraps; the modules owning the pair (``model`` and ``guide``, or the module whose
    methods they are) are registered submodules, so ``parameters()`` are the pair's.
    """

    def __init__(self, model, guide, objective):
        super().__init__(model, guide, lean_objective(objective))
        self.owners = torch.nn.ModuleList(
            m for m in {id(m): m for m in (owner(model), owner(guide)) if m is not None
                        and m is not model and m is not guide}.values())
        self._calls = (_direct(model), _direct(guide))

    def forward(self, *args, **kwargs):
        model, guide = self._calls
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)


def make_optimizer(params, *, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where torch has one for these tensors, else foreach."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # e.g. a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, foreach=True)


class TrainStep:
    """``step(*args, beta=1.0)``: one optimizer step on the pair called with ``args``;
    returns the detached loss.

    The loss is the objective summed over the (local) batch, in nats.  Under data
    parallelism (``world.size > 1``) the loss module is wrapped by ``world.wrap`` (DDP),
    which *averages* gradients over ranks; the backward pass is therefore scaled by the
    world size so that the update is the gradient of the sum over the global batch --
    the same step one process takes on the whole batch.

    :param handlers: extra effect handlers entered around every loss, inside the β handler.
    :param world: a :class:`pyrovae.distributed.World`, or None for one process.
    :param engine: ``"auto"`` (default), ``"eager"`` or ``"jit"`` (see the module docstring);
        :attr:`engine` says which one runs now.
    """

    def __init__(self, model, guide, objective, optimizer, *, handlers=(), world=None,
                 engine: str = "auto"):
        if engine not in ENGINES:
            raise PyroVAEError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
        self.loss_module = PairLoss(model, guide, objective)
        parallel = world is not None and world.size > 1
        if parallel and engine == "jit":
            raise PyroVAEError("--engine jit trains in one process; drop it under torchrun")
        modules = owner(model) is not None and owner(guide) is not None
        if engine == "jit" and not modules:
            raise PyroVAEError("--engine jit needs a pair of nn.Modules (a trace would freeze "
                               "a plain function's pyro.param values); use engine='eager'")
        self.forward = world.wrap(self.loss_module) if parallel else self.loss_module
        self.grad_scale = float(world.size) if parallel else 1.0
        self.optimizer = optimizer
        self.handlers = tuple(handlers)
        self.scaler = ScaleSitesMessenger()
        self.insist = engine == "jit"
        # auto traces what declares itself safe to trace (``traceable = True`` on both
        # modules, as the registry's models and amortized guides do) under a Pyro ELBO;
        # a user's own pair or objective may have Python side effects a replay would skip
        declared = modules and isinstance(objective, ELBO) and all(
            getattr(owner(fn), "traceable", False) for fn in (model, guide))
        wanted = engine == "jit" or (engine == "auto" and declared)
        self.traces = {} if wanted and not parallel and not self.handlers else None
        self.steps = 0
        self.disagree = None  # a device bool: a replayed loss differed from the eager one

    @property
    def engine(self) -> str:
        """``"jit"`` while the loss is traced, else ``"eager"``."""
        return "eager" if self.traces is None else "jit"

    def use_eager(self, reason: str, *, warn: bool | None = None) -> None:
        """Stop tracing (e.g. ``fit`` found ``pyro.param`` sites a trace would freeze);
        warns when ``warn``, by default only where ``--engine jit`` was insisted on."""
        if self.traces is not None and (self.insist if warn is None else warn):
            warnings.warn(f"--engine {'jit' if self.insist else 'auto'} falls back to eager: "
                          f"{reason}")
        self.traces = None

    def consistent(self) -> bool:
        """False once a periodic check found a replayed loss unlike the eager one (then
        training continues eagerly).  A host sync: ``fit`` calls it at epoch ends."""
        if self.disagree is None:
            return True
        bad, self.disagree = bool(self.disagree), None
        if bad:
            self.use_eager("the traced loss differs from the eager one (the pair's structure "
                           "depends on data values?)", warn=True)
        return not bad

    def __call__(self, *args, beta: float = 1.0) -> torch.Tensor:
        with self._handlers(beta):
            loss = self._traced(args, beta) if self.traces is not None else self.forward(*args)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.grad_scale if self.grad_scale != 1.0 else loss).backward()
        self.optimizer.step()
        return loss.detach()

    def _traced(self, inputs, beta: float) -> torch.Tensor:
        inputs = tuple(a for a in inputs if a is not None)  # a trace takes tensors only
        key = (beta, *(tuple(t.shape) for t in inputs))
        self.steps += 1
        if key not in self.traces:
            if len(self.traces) == MAX_TRACES:
                self.use_eager("β changes from step to step")
                return self.forward(*inputs)
            # tracing runs the pair once: fork the random streams so that the replay below
            # draws what an eager step would; silence trace-time notes on shape arithmetic
            try:
                with torch.random.fork_rng(devices=_cuda(inputs)), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.traces[key] = torch.jit.trace(self.loss_module, inputs,
                                                       check_trace=False)
            except Exception:
                if self.insist:
                    raise
                self.use_eager("the loss could not be traced")
                return self.forward(*inputs)
            loss, eager = self._replay_beside_eager(key, inputs)
            if not bool(_close(loss, eager)):  # one sync per new trace, a bounded number per fit
                self.use_eager("the traced loss differs from the eager one on the batch it was "
                               "traced on (a Python side effect in the pair?)", warn=True)
                return self.forward(*inputs)
            return loss
        if self.steps % VERIFY_EVERY == 0:
            loss, eager = self._replay_beside_eager(key, inputs)
            bad = ~_close(loss, eager)
            self.disagree = bad if self.disagree is None else self.disagree | bad
            return loss
        return self._replay(key, inputs)

    def _replay_beside_eager(self, key, inputs):
        """The replayed loss and, with the same noise, the eager one (detached; built with
        autograd on, as some objectives insist); the random streams and the modules'
        buffers end as after the replay alone."""
        with torch.random.fork_rng(devices=_cuda(inputs)):
            with _buffers_kept(self.loss_module):
                eager = self.forward(*inputs).detach()
        return self._replay(key, inputs), eager

    def _replay(self, key, inputs) -> torch.Tensor:
        # unoptimized execution: the recorded ops exactly, so a replay is bit-identical to
        # an eager step (the profiling executor's rewrites change the gradient's last bits,
        # which would make a resumed run differ from an uninterrupted one)
        with torch.jit.optimized_execution(False):
            return self.traces[key](*inputs)

    def _handlers(self, beta: float):
        if beta == 1.0 and not self.handlers:
            return contextlib.nullcontext()
        self.scaler.latent = beta
        stack = contextlib.ExitStack()
        for handler in (self.scaler, *self.handlers):
            stack.enter_context(handler)
        return stack


def _cuda(inputs) -> list[int]:
    """The CUDA device whose random stream the step draws from (for ``fork_rng``)."""
    x = inputs[0]
    return [x.device.index or 0] if x.device.type == "cuda" else []


def _close(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A device bool (no host sync): ``a`` (the replayed loss) agrees with ``b``."""
    return torch.isclose(a.detach(), b, rtol=VERIFY_RTOL, atol=1e-6).all()


@contextlib.contextmanager
def _buffers_kept(module: torch.nn.Module):
    """Undo what a forward pass writes into buffers (e.g. batch-norm running statistics)."""
    saved = [(b, b.clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)
