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

import json
import math
import time
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from pyrovae import checkpoint, distributed
from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.errors import PyroVAEError
from pyrovae.handlers import beta_at
from pyrovae.step import TrainStep, make_optimizer


class TrainingDiverged(PyroVAEError):
    """The loss became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PyroVAEError(f"--device {name} requested but torch sees no CUDA device; "
                           f"use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise PyroVAEError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None


def make_objective(name: str):
    from pyrovae.objectives import make_objective as make

    return make(name)


@torch.no_grad()
def test_metrics(model, guide, x, y, *, batch_size: int) -> dict[str, float]:
    """Per-datapoint test ELBO, reconstruction and KL in nats (single sample, β = 1)."""
    from pyrovae.evaluate import elbo_terms

    recon = kl = 0.0
    for i in range(0, x.shape[0], batch_size):
        terms = elbo_terms(model, guide, x[i:i + batch_size], y[i:i + batch_size])
        recon += float(terms["recon"].sum())
        kl += float(terms["kl"].sum())
    n = x.shape[0]
    return {"test_elbo": (recon - kl) / n, "test_recon": recon / n, "test_kl": kl / n}


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fit(model, guide, data: ImageData, cfg: TrainConfig, *, run_dir=None,
        config_json: str | None = None, resume: bool = False, progress: bool = True,
        handlers=()):
    """Train ``(model, guide)`` on ``data``; returns the per-epoch history (list of dicts).

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
    objective = make_objective(cfg.objective)
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
    if resume:
        state = checkpoint.load(ckpt_path)
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
        optimizer.load_state_dict(state["optimizer"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])
        _restore_rng(state, gen, world, cfg.seed + start_epoch)
        if world.is_main:
            _write_metrics(run_dir, history)  # drop lines written after the checkpoint

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
                beta = beta_at(epoch + i / steps, cfg)
                loss = step(x, data.train_y[idx], beta)
                total += loss
                bar.update()
                if (i + 1) % cfg.log_every == 0:  # the only host sync inside an epoch
                    value = float(world.sum(loss)) / min(bs, n - i * bs)
                    _check_finite(value, epoch, run_dir)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.2f}", beta=f"{beta:.3g}")
            train_loss = float(world.sum(total)) / seen
            _check_finite(train_loss, epoch, run_dir)
            seconds = time.perf_counter() - t0
            model.eval(), guide.eval()
            record = None
            if world.is_main:
                record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                          "beta": beta_at(epoch + 1 - 1e-9, cfg), "train_loss": train_loss,
                          **test_metrics(model, guide, data.test_x, data.test_y,
                                         batch_size=cfg.eval_batch_size),
                          "seconds": seconds}
                bar.set_postfix(epoch=epoch + 1, test_elbo=f"{record['test_elbo']:.2f}")
            history.append(world.from_main(record))
            rng = world.gather(_rng_state(gen))
            if run_dir is not None and world.is_main:
                checkpoint.save({
                    "config": config_json or "{}",
                    "model": model.state_dict(), "guide": guide.state_dict(),
                    "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                    "rng": rng[0], "rng_ranks": rng, "history": json.dumps(history),
                }, ckpt_path)
                _append_metrics(run_dir, history[-1])
    world.barrier()  # when fit returns on any rank, rank 0's files are written
    return history


def _restore_rng(state: dict, gen: torch.Generator, world, seed: int) -> None:
    """Continue this rank's random streams; a different world size starts fresh ones."""
    ranks = state.get("rng_ranks", [state["rng"]])
    if len(ranks) == world.size:
        _set_rng_state(ranks[world.rank], gen)
        return
    # the checkpoint has no streams for this world: reseed from (seed, epoch, rank)
    torch.manual_seed(world.seed(seed))
    gen.manual_seed(world.seed(seed + 1))


def _check_finite(value: float, epoch: int, run_dir) -> None:
    if not math.isfinite(value):
        kept = (f"the last good checkpoint (end of epoch {epoch}) is kept in {run_dir}"
                if run_dir is not None and epoch > 0 else "no checkpoint was written")
        raise TrainingDiverged(f"training loss became {value} during epoch {epoch + 1}; "
                               f"{kept}; try a lower --lr")


def _append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
    with open(run_dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in history)
