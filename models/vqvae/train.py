"""Training loops of the VQ-VAE and of its code prior: plain torch, not SVI.

The VQ-VAE minimises, per image, -log p(x | z_q(x)) + VQ loss (``models/vqvae.py``), on a
training set re-binarized at every batch like the VAEs (``pyrovae.train.fit``).  The prior
is then fitted by maximum likelihood to the frozen encoder's code grids, re-encoding a
fresh binarization of the training set every epoch (the code distribution it must match
is that of binarized images; fresh binarizations also augment a small training set).

Both loops share ``fit``'s loop state (:mod:`pyrovae.train.state`): a tqdm bar, one
atomic checkpoint and one ``*.jsonl`` line per epoch holding parameters, optimizer, RNG
states, config and history, so ``resume=True`` continues bit-for-bit.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyrovae.checkpoint import load_into
from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.errors import TrainingInterrupted
from pyrovae.models.vqvae.quantizer import perplexity
from pyrovae.train.signals import StopRequests
from pyrovae.train.state import (MetricsLog, check_finite, restore_state, rng_state,
                                 save_state, set_rng_state)


@torch.no_grad()
def code_metrics(model, x: torch.Tensor, *, batch_size: int = 1000) -> dict[str, float]:
    """Reconstruction nats -log p(x | z_q(x)) per datapoint, code perplexity and the
    fraction of the codebook used, over images ``x``."""
    was_training = model.training
    model.eval()
    nats, counts = 0.0, torch.zeros(model.num_codes, device=x.device)
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i:i + batch_size])
        nats += float(out["nats"].sum())
        counts += out["counts"]
    model.train(was_training)
    return {"nats": nats / max(x.shape[0], 1), "perplexity": float(perplexity(counts)),
            "codes_used": float((counts > 0).float().mean())}


@torch.no_grad()
def encode_all(model, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Code grids [N, H, W] of images ``x`` under the frozen encoder."""
    model.eval()
    return torch.cat([model.encode(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


class _Checkpoints:
    """One loop's checkpoint file and metrics log in a run directory (or nowhere)."""

    def __init__(self, run_dir, filename: str, jsonl: str, modules: dict, optimizer, gen,
                 config_json: str):
        self.path = Path(run_dir) / filename if run_dir is not None else None
        self.metrics = MetricsLog(run_dir, jsonl)
        self.modules, self.optimizer, self.gen, self.config_json = (modules, optimizer, gen,
                                                                   config_json)

    def resume(self) -> tuple[int, list[dict]]:
        state = restore_state(self.path, lambda st, path: load_into(self.modules, st, path),
                              self.optimizer, map_location=self.gen.device)
        set_rng_state(state["rng_ranks"][0], self.gen)
        self.metrics.rewrite(state["history"])
        return int(state["epoch"]), state["history"]

    def stop_if_requested(self, stop, epoch: int) -> None:
        """SIGTERM / Ctrl-C: stop between steps; the last epoch's checkpoint is kept."""
        if stop.signum is not None:
            kept = (f"the last checkpoint (end of epoch {epoch}) is kept in {self.path.parent}"
                    if self.path is not None and epoch else "nothing was saved")
            raise TrainingInterrupted(f"training stopped by {stop.name}; {kept}; continue "
                                      f"with --resume", stop.signum)

    def save(self, epoch: int, history: list[dict]) -> None:
        if self.path is not None:
            save_state(self.path, {k: m.state_dict() for k, m in self.modules.items()},
                       self.optimizer, epoch=epoch, history=history,
                       config_json=self.config_json, rng_ranks=[rng_state(self.gen)])
            self.metrics.append(history[-1])


def train_vqvae(model, data: ImageData, cfg: TrainConfig, *, restart_every: int = 20,
                restart_threshold: float = 1.0, run_dir=None, config_json: str = "{}",
                resume: bool = False, progress: bool = True) -> list[dict]:
    """Train the VQ-VAE with Adam; returns the per-epoch history (also ``metrics.jsonl``).

    Every ``restart_every`` steps, codes used by fewer than ``restart_threshold`` vectors per
    batch (EMA) move onto random encoder outputs of the current batch.
    """
    device = data.train_x.device
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device)
    torch.manual_seed(cfg.seed)
    gen.manual_seed(cfg.seed + 1)
    ckpt = _Checkpoints(run_dir, "checkpoint.pt", "metrics.jsonl", {"model": model}, optimizer,
                        gen, config_json)
    start, history = ckpt.resume() if resume else (0, [])
    n = data.train_x.shape[0]
    bs = min(cfg.batch_size, n)
    steps = math.ceil(n / bs)
    bar = tqdm(total=(cfg.epochs - start) * steps, disable=not progress, desc="train vqvae",
               unit="step", dynamic_ncols=True)
    with bar, StopRequests() as stop:
        for epoch in range(start, cfg.epochs):
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen, device=device)
            total = torch.zeros((), device=device)
            nats = torch.zeros((), device=device)
            counts = torch.zeros(model.num_codes, device=device)
            restarts = 0
            for i in range(steps):
                x = torch.bernoulli(data.train_x[perm[i * bs:(i + 1) * bs]], generator=gen)
                out = model(x)
                loss = (out["nats"] + out["vq_loss"]).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * x.shape[0]
                nats += out["nats"].detach().sum()
                counts += out["counts"]
                step = epoch * steps + i + 1
                if restart_every and step % restart_every == 0:
                    restarts += model.quantizer.restart_dead_codes(
                        out["z_e"], threshold=restart_threshold, generator=gen)
                bar.update()
                ckpt.stop_if_requested(stop, epoch)
                if (i + 1) % cfg.log_every == 0:
                    value = float(loss.detach())
                    check_finite(value, epoch, run_dir)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.2f}")
            check_finite(float(total), epoch, run_dir)
            test = code_metrics(model, data.test_x, batch_size=cfg.eval_batch_size)
            record = {"epoch": epoch + 1, "step": (epoch + 1) * steps,
                      "train_loss": float(total) / n, "train_nats": float(nats) / n,
                      "train_perplexity": float(perplexity(counts)),
                      "train_codes_used": float((counts > 0).float().mean()),
                      "restarts": restarts, **{f"test_{k}": v for k, v in test.items()},
                      "seconds": time.perf_counter() - t0}
            history.append(record)
            bar.set_postfix(epoch=epoch + 1, test_nats=f"{test['nats']:.2f}",
                            perplexity=f"{test['perplexity']:.1f}")
            ckpt.save(epoch + 1, history)
    return history


def train_prior(prior, model, data: ImageData, *, epochs: int, batch_size: int, lr: float,
                seed: int = 0, run_dir=None, config_json: str = "{}", resume: bool = False,
                progress: bool = True) -> list[dict]:
    """Fit ``prior`` to the code grids of the frozen ``model`` by maximum likelihood (AdamW,
    cosine learning rate); history in ``prior_metrics.jsonl``, state in ``prior.pt``.
    Records ``train_nll``/``test_nll``: -log p(k(x) [| y]) in nats per image."""
    device = data.train_x.device
    model.to(device).eval()
    prior.to(device)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator(device=device)
    torch.manual_seed(seed)
    gen.manual_seed(seed + 1)
    ckpt = _Checkpoints(run_dir, "prior.pt", "prior_metrics.jsonl", {"prior": prior}, optimizer,
                        gen, config_json)
    start, history = ckpt.resume() if resume else (0, [])
    n = data.train_x.shape[0]
    bs = min(batch_size, n)
    steps = math.ceil(n / bs)
    test_codes = encode_all(model, data.test_x)
    y_of = (lambda y: y) if prior.conditional else (lambda y: None)
    bar = tqdm(total=(epochs - start) * steps, disable=not progress, desc="train prior",
               unit="step", dynamic_ncols=True)
    with bar, StopRequests() as stop:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            codes = encode_all(model, torch.bernoulli(data.train_x, generator=gen))
            perm = torch.randperm(n, generator=gen, device=device)
            prior.train()
            total = torch.zeros((), device=device)
            for i in range(steps):
                progress_frac = (epoch * steps + i) / (epochs * steps)
                for group in optimizer.param_groups:  # cosine decay over the whole run
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress_frac))
                idx = perm[i * bs:(i + 1) * bs]
                nll = -prior.log_prob(codes[idx], y_of(data.train_y[idx]))
                loss = nll.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
                optimizer.step()
                total += nll.detach().sum()
                bar.update()
                ckpt.stop_if_requested(stop, epoch)
            check_finite(float(total), epoch, run_dir)
            prior.eval()
            with torch.no_grad():
                test_nll = -sum(float(prior.log_prob(test_codes[i:i + 1000],
                                                     y_of(data.test_y[i:i + 1000])).sum())
                                for i in range(0, len(test_codes), 1000)) / len(test_codes)
            record = {"epoch": epoch + 1, "train_nll": float(total) / n, "test_nll": test_nll,
                      "seconds": time.perf_counter() - t0}
            history.append(record)
            bar.set_postfix(epoch=epoch + 1, test_nll=f"{test_nll:.2f}")
            ckpt.save(epoch + 1, history)
    return history
