"""The one training loop for every Pyro model/guide pair.

Each step takes a minibatch of the data as given (:mod:`pyrovae.train.batches`) and
minimises ``objective.differentiable_loss(model, guide, *batch)`` -- the loss comes from
Pyro's inference machinery on the pair, never from a per-model formula -- under the β
handler, with torch's Adam over the pair's parameters (:mod:`pyrovae.train.params`).  This
is stochastic variational inference as ``pyro.infer.SVI`` does it, minus SVI's per-step
parameter-store sweep and ``.item()`` host sync (see docs/performance.md).

Every epoch ends with the test ELBO at β = 1 (when there is test data), one line in
``metrics.jsonl`` and an atomic checkpoint holding everything needed to continue
bit-for-bit: parameters, optimizer, epoch, RNG states, config and history.  SIGTERM or
Ctrl-C stop at the next step boundary with a checkpoint of the position inside the epoch,
so ``resume=True`` ends exactly where an uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae.config import TrainConfig
from pyrovae.errors import CheckpointError, PyroVAEError, TrainingInterrupted
from pyrovae.evaluation.bounds import elbo_terms
from pyrovae.infer.handlers import classify_labels
from pyrovae.infer.objectives import make_objective
from pyrovae.infer.schedules import BetaSchedule
from pyrovae.evaluation.weights import trace_pair
from pyrovae.infer.sites import check_support, pair_args, sample_sites
from pyrovae.runs import resolve_device, run_lock
from pyrovae.files import remove_stale_temporaries
from pyrovae import distributed
from pyrovae.train.batches import TensorBatches, make_batches, takes_two_arguments
from pyrovae.train.params import PairParameters
from pyrovae.train.signals import StopRequests
from pyrovae.train.state import (MetricsLog, check_finite, restore_state, rng_state,
                                 save_state, set_rng_state)
from pyrovae.train.step import TrainStep, make_optimizer, owner


@torch.no_grad()
def test_metrics(model, guide, x, y, *, batch_size: int) -> dict[str, float]:
    """Per-datapoint test ELBO, reconstruction and KL in nats (single sample, β = 1)."""
    recon = kl = 0.0
    for i in range(0, x.shape[0], batch_size):
        terms = elbo_terms(model, guide, *pair_args(x[i:i + batch_size],
                                                    None if y is None else y[i:i + batch_size]))
        recon += float(terms["recon"].sum())
        kl += float(terms["kl"].sum())
    n = x.shape[0]
    return {"test_elbo": (recon - kl) / n, "test_recon": recon / n, "test_kl": kl / n}


def _device_of(data, cfg: TrainConfig) -> torch.device:
    first = getattr(data, "train_x", data[0] if isinstance(data, (tuple, list)) else data)
    return first.device if isinstance(first, torch.Tensor) else resolve_device(cfg.device)


def _test_set(test_data, default):
    if test_data is None:
        return default
    if isinstance(test_data, torch.Tensor):
        return test_data, None
    return tuple(test_data)


def fit(model, guide, data, cfg: TrainConfig, *, test_data=None, run_dir=None,
        config_json: str | None = None, resume: bool = False, progress: bool = True,
        handlers=(), objective=None):
    """Train ``(model, guide)`` on ``data``; returns the per-epoch history (list of dicts).

    :param model, guide: any pair under the contract: PyroModules, nn.Modules (or their
        methods) and plain functions declaring parameters with ``pyro.module`` /
        ``pyro.param``; called as ``model(x)``, or ``model(x, y)`` when labels are given.
    :param data: a :class:`~pyrovae.data.ImageData` (labels passed when model and guide
        take a second argument), a tensor ``x``, a pair ``(x, y)``, or a torch
        ``Dataset``/``DataLoader`` yielding them.  Training runs on the data's device (a
        DataLoader's batches go to ``cfg.device``); tensors are used exactly as given.
    :param test_data: ``x`` or ``(x, y)`` for the per-epoch test ELBO (an ImageData
        brings its own test set).
    :param objective: an ELBO-like object (anything with ``differentiable_loss``), or a
        name for :func:`~pyrovae.infer.objectives.make_objective`; default ``cfg.objective``.
    :param run_dir: where ``checkpoint.pt`` and ``metrics.jsonl`` go (None: keep nothing).
    :param config_json: the full run configuration, stored in each checkpoint.
    :param resume: continue from ``run_dir/checkpoint.pt`` exactly where it stopped.
    :param handlers: more effect handlers entered around every training loss, inside the
        β handler -- e.g. ``scale_observed(0)`` trains on the KL term alone.  They shape
        training only (test metrics stay at β = 1) and are not saved with the run: pass
        them again on resume.

    Inside a ``torch.distributed`` process group (torchrun) every rank calls ``fit``; each
    trains on its shard of every global batch of ``cfg.batch_size`` and only rank 0
    evaluates and writes (see :mod:`pyrovae.distributed`).
    """
    if not isinstance(cfg, TrainConfig):
        raise PyroVAEError(f"fit needs a TrainConfig, got {type(cfg).__name__}")
    world = distributed.current()
    device = _device_of(data, cfg)
    gen = torch.Generator(device=device)  # this rank's permutations and binarizations
    torch.manual_seed(world.seed(cfg.seed))  # latent noise
    gen.manual_seed(world.seed(cfg.seed + 1))
    labels = takes_two_arguments(model) and takes_two_arguments(guide)
    batches, test = make_batches(data, batch_size=cfg.batch_size, world=world, labels=labels,
                                 generator=torch.Generator().manual_seed(cfg.seed + 2),
                                 device=device, label_passes=cfg.label_passes)
    test = _test_set(test_data, test)
    if objective is None or isinstance(objective, str):
        objective = make_objective(objective or cfg.objective)
    schedule = BetaSchedule.from_config(cfg)
    if cfg.alpha > 0:  # M2's classification loss, a handler like β
        handlers = (*handlers, classify_labels(cfg.alpha))
    pair = PairParameters(model, guide, device=device)
    step = TrainStep(model, guide, objective, None, handlers=handlers, world=world,
                     engine=cfg.engine)
    probe = _probe_args(batches, gen)
    _check_pair(model, guide, probe, device)  # one-line errors before the first step
    if not pair.complete or step.engine == "jit":  # find pyro.param sites as SVI would
        with pyro.validation_enabled(False):
            pair.collect(lambda: step.loss_module(*probe))
        if pair.loose:  # a trace would freeze them
            step.use_eager(f"pyro.param sites outside the pair's modules ({', '.join(pair.loose)})")
    step.optimizer = optimizer = make_optimizer(pair.parameters(), lr=cfg.lr)
    history: list[dict] = []
    start_epoch, partial = 0, None
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / "checkpoint.pt" if run_dir else None
    metrics = MetricsLog(run_dir if world.is_main else None)
    locked = contextlib.ExitStack()  # one process trains into a run directory at a time
    if run_dir is not None and world.is_main:
        locked.enter_context(run_lock(run_dir))
    with locked:
        if run_dir is not None and world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(run_dir)  # left by a kill -9 during a checkpoint write
        if resume:
            state = restore_state(ckpt_path, pair.load_state_dict, optimizer, map_location=device)
            history, start_epoch = state["history"], int(state["epoch"])
            partial = state.get("partial")
            _restore_rng(state["rng_ranks"], gen, world, cfg.seed + start_epoch)
            metrics.rewrite(history)  # drop lines written after the checkpoint
        else:
            _init_from_data(model, data, batches)

        def checkpoint(epoch: int, **extra) -> None:
            rng = world.gather(rng_state(gen))
            if run_dir is not None and world.is_main:
                try:
                    save_state(ckpt_path, pair.state_dict(), optimizer, epoch=epoch,
                               history=history, config_json=config_json, rng_ranks=rng, **extra)
                except OSError as e:  # a full disk, an I/O error: the old file is untouched
                    raise CheckpointError(
                        f"cannot write {ckpt_path} ({e.strerror or e}); the previous checkpoint "
                        f"is intact: free space and continue with --resume") from None

        steps = batches.steps
        done = partial["step"] if partial else 0
        bar = tqdm(total=(cfg.epochs - start_epoch) * steps - done,
                   disable=not (progress and world.is_main), desc="train", unit="step",
                   dynamic_ncols=True)
        # distribution argument checks cost ~10% per step; inputs were validated once upstream
        with pyro.validation_enabled(False), bar, StopRequests() as stop:
            for epoch in range(start_epoch, cfg.epochs):
                pair.train()
                t0 = time.perf_counter()
                if partial:  # an interrupted epoch continues where it stopped
                    perm, first, total, seen = (partial["perm"], partial["step"],
                                                partial["total"].to(device), partial["seen"])
                    partial = None
                else:
                    perm, first, total, seen = batches.order(gen), 0, torch.zeros((), device=device), 0
                for i in range(first, steps):
                    args = batches.batch(perm, i, gen)
                    beta = schedule(epoch + i / steps)
                    loss = step(*args, beta=beta)
                    total += loss
                    count = batches.size(i) or len(args[0])
                    seen += count
                    bar.update()
                    last = i + 1 == steps
                    if (i + 1) % cfg.log_every == 0:  # the only host sync inside an epoch
                        value = float(world.sum(loss)) / count
                        check_finite(value, epoch, run_dir, where=f", detected at step {i + 1}",
                                     diagnose=lambda: _diagnose(model, guide, pair, args))
                        bar.set_postfix(epoch=epoch + 1, loss=f"{value:.2f}", beta=f"{beta:.3g}")
                    if not last and stop.agreed(world, step=i + 1, sync_every=cfg.log_every):
                        if isinstance(batches, TensorBatches):
                            checkpoint(epoch, partial={"step": i + 1, "perm": perm, "total": total,
                                                       "seen": seen})
                        raise _interrupted(stop, epoch, i + 1, steps, run_dir,
                                           saved=isinstance(batches, TensorBatches))
                train_loss = float(world.sum(total)) / (batches.seen or seen)
                step.consistent()  # a traced loss found unlike eager: eager from here on
                check_finite(train_loss, epoch, run_dir)
                seconds = time.perf_counter() - t0
                pair.train(False)
                record = None
                if world.is_main:
                    record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                              "beta": schedule(epoch + 1 - 1e-9), "train_loss": train_loss}
                    if test is not None:
                        record.update(test_metrics(model, guide, *test,
                                                   batch_size=cfg.eval_batch_size))
                        bar.set_postfix(epoch=epoch + 1, test_elbo=f"{record['test_elbo']:.2f}")
                    record["seconds"] = seconds
                history.append(world.from_main(record))
                checkpoint(epoch + 1)
                if world.is_main:
                    metrics.append(history[-1])
                if stop.agreed(world, step=0, sync_every=1) and epoch + 1 < cfg.epochs:
                    raise _interrupted(stop, epoch + 1, 0, steps, run_dir, saved=True)
        world.barrier()  # when fit returns on any rank, rank 0's files are written
        return history


def _probe_args(batches, gen) -> tuple:
    """The first batch in stored order, for one probing evaluation, drawn without moving
    ``gen`` (a whole batch: some pairs need the batch's structure, e.g. copies of points)."""
    state = gen.get_state()
    if isinstance(batches, TensorBatches):
        args = batches.batch(torch.arange(batches.n, device=batches.device), 0, gen)
    else:
        args = batches.batch(batches.order(gen), 0, gen)
    gen.set_state(state)
    return args


def _check_pair(model, guide, probe: tuple, device) -> None:
    """Trace the pair once on a few datapoints (random streams forked): Pyro's shape errors
    and data outside the likelihood's support become one line that says what to change."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        _, model_tr = trace_pair(model, guide, probe, {})
    check_support(model_tr)


@torch.no_grad()
def _diagnose(model, guide, pair, args) -> str:
    """Which parameters and which sites' log-densities are non-finite on this batch."""
    params = [n for key, m in pair.modules.items() for n, p in m.named_parameters(prefix=key)
              if not torch.isfinite(p).all()]
    params += [n for n, p in pair.loose.items() if not torch.isfinite(p).all()]
    sites = []
    try:
        guide_tr, model_tr = trace_pair(model, guide, args, {})
        for tr in (guide_tr, model_tr):
            for name, site in sample_sites(tr).items():
                if not torch.isfinite(site["fn"].log_prob(site["value"])).all():
                    sites.append(name)
    except (RuntimeError, ValueError) as e:  # the pair itself fails on non-finite weights
        sites.append(f"(tracing failed: {str(e).splitlines()[0][:80]})")
    parts = [f"non-finite log-density at sites {sorted(set(sites))}" if sites else "",
             f"non-finite parameters {params[:5]}{' ...' if len(params) > 5 else ''}"
             if params else ""]
    return "; ".join(p for p in parts if p)


def _init_from_data(model, data, batches) -> None:
    """Data-dependent initialization where data first meets the model (models that offer
    ``init_from_data``, e.g. the decoder's output bias at the pixels' marginals)."""
    target = owner(model)
    init = getattr(target, "init_from_data", None)
    if init is None:
        return
    if hasattr(data, "train_x"):
        init(data.train_x)
    elif isinstance(batches, TensorBatches):
        init(batches.x)


def _interrupted(stop, epoch: int, step: int, steps: int, run_dir, *, saved: bool):
    where = f"epoch {epoch + 1}, step {step} of {steps}" if step else f"end of epoch {epoch}"
    if run_dir is None:
        return TrainingInterrupted(f"training stopped by {stop.name} at {where}; nothing was "
                                   f"saved (no run directory)", stop.signum)
    kept = (f"checkpoint written at {where}" if saved else
            f"the last checkpoint (end of epoch {epoch}) is kept")
    return TrainingInterrupted(f"training stopped by {stop.name}; {kept} in {run_dir}; "
                               f"continue with --resume", stop.signum)


def _restore_rng(ranks: list, gen: torch.Generator, world, seed: int) -> None:
    """Continue this rank's random streams; a different world size starts fresh ones."""
    if len(ranks) == world.size:
        set_rng_state(ranks[world.rank], gen)
        return
    # the checkpoint has no streams for this world: reseed from (seed, epoch, rank)
    torch.manual_seed(world.seed(seed))
    gen.manual_seed(world.seed(seed + 1))
