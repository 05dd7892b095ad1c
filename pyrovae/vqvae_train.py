"""Training loops of the VQ-VAE and of its code prior: plain torch, not SVI.

The VQ-VAE minimises, per image, -log p(x | z_q(x)) + VQ loss (``models/vqvae.py``), on a
training set re-binarized at every batch like the VAEs (``pyrovae.train.fit``).  The prior
is then fitted by maximum likelihood to the frozen encoder's code grids, re-encoding a
fresh binarization of the training set every epoch (the code distribution it must match
is that of binarized images; fresh binarizations also augment a small training set).

Both loops follow ``fit``'s conventions: a tqdm bar, one ``*.jsonl`` line and one atomic
checkpoint per epoch holding parameters, optimizer, RNG states, config and history, so
``resume=True`` continues bit-for-bit.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pyrovae import checkpoint
from pyrovae.config import TrainConfig
from pyrovae.data import ImageData
from pyrovae.train import _check_finite, _rng_state, _set_rng_state
from pyrovae.models.quantizer import perplexity


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


def _resume(path: Path, modules: dict, optimizer, gen) -> tuple[int, list[dict]]:
    state = checkpoint.load(path, map_location=gen.device)
    for key, module in modules.items():
        module.load_state_dict(state[key])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], gen)
    return int(state["epoch"]), json.loads(state["history"])


def _save(path: Path, modules: dict, optimizer, gen, epoch: int, history, config_json, jsonl):
    checkpoint.save({"config": config_json, "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "rng": _rng_state(gen), "history": json.dumps(history),
                     **{k: m.state_dict() for k, m in modules.items()}}, path)
    # metrics.jsonl always equals the checkpoint's history, also after a resume
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in history))


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
    run_dir = Path(run_dir) if run_dir is not None else None
    history, start = [], 0
    if resume:
        start, history = _resume(run_dir / "checkpoint.pt", {"model": model}, optimizer, gen)
    n = data.train_x.shape[0]
    bs = min(cfg.batch_size, n)
    steps = math.ceil(n / bs)
    bar = tqdm(total=(cfg.epochs - start) * steps, disable=not progress, desc="train vqvae",
               unit="step", dynamic_ncols=True)
    with bar:
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
                if (i + 1) % cfg.log_every == 0:
                    value = float(loss.detach())
                    _check_finite(value, epoch, run_dir)
                    bar.set_postfix(epoch=epoch + 1, loss=f"{value:.2f}")
            _check_finite(float(total), epoch, run_dir)
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
            if run_dir is not None:
                _save(run_dir / "checkpoint.pt", {"model": model}, optimizer, gen, epoch + 1,
                      history, config_json, run_dir / "metrics.jsonl")
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
    run_dir = Path(run_dir) if run_dir is not None else None
    history, start = [], 0
    if resume:
        start, history = _resume(run_dir / "prior.pt", {"prior": prior}, optimizer, gen)
    n = data.train_x.shape[0]
    bs = min(batch_size, n)
    steps = math.ceil(n / bs)
    test_codes = encode_all(model, data.test_x)
    y_of = (lambda y: y) if prior.conditional else (lambda y: None)
    bar = tqdm(total=(epochs - start) * steps, disable=not progress, desc="train prior",
               unit="step", dynamic_ncols=True)
    with bar:
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
            _check_finite(float(total), epoch, run_dir)
            prior.eval()
            with torch.no_grad():
                test_nll = -sum(float(prior.log_prob(test_codes[i:i + 1000],
                                                     y_of(data.test_y[i:i + 1000])).sum())
                                for i in range(0, len(test_codes), 1000)) / len(test_codes)
            record = {"epoch": epoch + 1, "train_nll": float(total) / n, "test_nll": test_nll,
                      "seconds": time.perf_counter() - t0}
            history.append(record)
            bar.set_postfix(epoch=epoch + 1, test_nll=f"{test_nll:.2f}")
            if run_dir is not None:
                _save(run_dir / "prior.pt", {"prior": prior}, optimizer, gen, epoch + 1,
                      history, config_json, run_dir / "prior_metrics.jsonl")
    return history
