"""The one training loop for every Pyro model/guide pair.

Each step draws a minibatch from the device-resident training set, binarizes it afresh,
and minimises ``objective.differentiable_loss(model, guide, x, y)`` -- the loss comes
from Pyro's ELBO machinery on the pair, never from a per-model formula -- under the β
handler, with torch's Adam over the pair's parameters.  This is stochastic variational
inference as ``pyro.infer.SVI`` does it, minus SVI's per-step parameter-store sweep and
``.item()`` host sync (see the performance notes in the README).

Every epoch ends with the test ELBO at β = 1, one line in ``metrics.jsonl`` and an atomic
checkpoint holding everything needed to continue bit-for-bit: parameters, optimizer,
epoch, RNG states, config and history.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.errors import PyroVAEError
from pyrovae.evaluation.bounds import elbo_terms
from pyrovae.infer.objectives import make_objective
from pyrovae.infer.schedules import BetaSchedule
from pyrovae.train import distributed
from pyrovae.train.state import (MetricsLog, check_finite, restore_state, rng_state,
                                 save_state, set_rng_state)
from pyrovae.train.step import TrainStep, make_optimizer


@torch.no_grad()
def test_metrics(model, guide, x, y, *, batch_size: int) -> dict[str, float]:
    """Per-datapoint test ELBO, reconstruction and KL in nats (single sample, β = 1)."""
    recon = kl = 0.0
    for i in range(0, x.shape[0], batch_size):
        terms = elbo_terms(model, guide, x[i:i + batch_size], y[i:i + batch_size])
        recon += float(terms["recon"].sum())
        kl += float(terms["kl"].sum())
    n = x.shape[0]
    return {"test_elbo": (recon - kl) / n, "test_recon": recon / n, "test_kl": kl / n}


def fit(model, guide, data: ImageData, cfg: TrainConfig, *, run_dir=None,
        config_json: str | None = None, resume: bool = False, progress: bool = True,
        handlers=(), objective=None):
    """Train ``(model, guide)`` on ``data``; returns the per-epoch history (list of dicts).

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
    device = data.train_x.device
    model.to(device)
    guide.to(device)
    if objective is None or isinstance(objective, str):
        objective = make_objective(objective or cfg.objective)
    schedule = BetaSchedule.from_config(cfg)
    params = list(model.parameters()) + list(guide.parameters())
    if not params:
        raise PyroVAEError("the model and guide have no parameters to train")
    optimizer = make_optimizer(params, lr=cfg.lr)
    world = distributed.current()
    gen = torch.Generator(device=device)  # this rank's permutations and binarizations
    torch.manual_seed(world.seed(cfg.seed))  # latent noise
    gen.manual_seed(world.seed(cfg.seed + 1))
    history: list[dict] = []
    start_epoch = 0
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / "checkpoint.pt" if run_dir else None
    metrics = MetricsLog(run_dir if world.is_main else None)
    modules = {"model": model, "guide": guide}
    if resume:
        state = restore_state(ckpt_path, modules, optimizer, map_location=device)
        history, start_epoch = state["history"], int(state["epoch"])
        _restore_rng(state["rng_ranks"], gen, world, cfg.seed + start_epoch)
        metrics.rewrite(history)  # drop lines written after the checkpoint

    n = data.train_x.shape[0]
    bs = min(cfg.batch_size, n)
    steps = math.ceil(n / bs)
    if n - (steps - 1) * bs < world.size:  # a last batch too small to give every rank a point
        steps -= 1
    seen = min(n, steps * bs)
    step = TrainStep(model, guide, objective, optimizer, handlers=handlers, world=world,
                     engine=cfg.engine)
    bar = tqdm(total=(cfg.epochs - start_epoch) * steps, disable=not (progress and world.is_main),
               desc="train", unit="step", dynamic_ncols=True)
    # distribution argument checks cost ~10% per step; inputs were validated once upstream
    with pyro.validation_enabled(False), bar:
        for epoch in range(start_epoch, cfg.epochs):
            model.train(), guide.train()
            t0 = time.perf_counter()
            perm = world.same_as_main(torch.randperm(n, generator=gen, device=device))
            total = torch.zeros((), device=device)
            for i in range(steps):
                idx = world.shard(perm[i * bs:(i + 1) * bs])
                x = torch.bernoulli(data.train_x[idx], generator=gen)
                beta = schedule(epoch + i / steps)
                loss = step(x, data.train_y[idx], beta)
                total += loss
                bar.update()
                if (i + 1) % cfg.log_every == 0:  # the only host sync inside an epoch
                    value = float(world.sum(loss)) / min(bs, n - i * bs)
                    check_finite(value, epoch, run_dir)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.2f}", beta=f"{beta:.3g}")
            train_loss = float(world.sum(total)) / seen
            check_finite(train_loss, epoch, run_dir)
            seconds = time.perf_counter() - t0
            model.eval(), guide.eval()
            record = None
            if world.is_main:
                record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                          "beta": schedule(epoch + 1 - 1e-9), "train_loss": train_loss,
                          **test_metrics(model, guide, data.test_x, data.test_y,
                                         batch_size=cfg.eval_batch_size),
                          "seconds": seconds}
                bar.set_postfix(epoch=epoch + 1, test_elbo=f"{record['test_elbo']:.2f}")
            history.append(world.from_main(record))
            rng = world.gather(rng_state(gen))
            if run_dir is not None and world.is_main:
                save_state(ckpt_path, modules, optimizer, epoch=epoch + 1, history=history,
                           config_json=config_json, rng_ranks=rng)
                metrics.append(history[-1])
    world.barrier()  # when fit returns on any rank, rank 0's files are written
    return history


def _restore_rng(ranks: list, gen: torch.Generator, world, seed: int) -> None:
    """Continue this rank's random streams; a different world size starts fresh ones."""
    if len(ranks) == world.size:
        set_rng_state(ranks[world.rank], gen)
        return
    # the checkpoint has no streams for this world: reseed from (seed, epoch, rank)
    torch.manual_seed(world.seed(seed))
    gen.manual_seed(world.seed(seed + 1))
