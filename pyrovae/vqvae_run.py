"""VQ-VAE run directories and their commands: train, train-prior, sample, evaluate.

A VQ-VAE run lives in the same kind of directory as a VAE run: ``config.json`` (the
RunConfig plus ``"vqvae"`` and, once trained, ``"prior"`` sections), ``checkpoint.pt``,
``metrics.jsonl``, ``reconstructions.png``, ``codebook.png``; ``train-prior`` adds
``prior.pt``, ``prior_metrics.jsonl``, ``samples.png`` (and ``class_grid.png`` for a
class-conditional prior); ``evaluate`` writes ``eval.json``/``eval.md`` in the format of
``pyrovae evaluate`` so VQ-VAE and VAE rows share one table.

The bound: q(k | x) is one-hot at k(x), so the ELBO is exact in the sense that every
importance weight is the same, L_K = L_1 for all K, and

    log p(x) >= log p(x | z_q(x)) + log p(k(x))      (KL(q || p) = -log p(k(x)), H(q) = 0).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pyrovae import checkpoint
from pyrovae.config import RunConfig
from pyrovae.errors import PyroVAEError
from pyrovae.models.vq_prior import CodePrior, PriorConfig, build_prior
from pyrovae.models.vqvae import VQVAE, VQVAEConfig, build_vqvae


@dataclass
class VQRun:
    dir: Path
    raw: dict  # config.json as a dict
    config: RunConfig
    data: object
    model: VQVAE
    prior: CodePrior | None


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _section(cls, d: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def load_vq_run(run_dir, *, device: str = "auto", need_prior: bool = False) -> VQRun:
    """Rebuild a VQ-VAE run: data, trained model and (if trained) prior, in eval mode."""
    from pyrovae.cli import read_config
    from pyrovae.data import load_dataset
    from pyrovae.train import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PyroVAEError(f"run directory {run_dir} does not exist")
    cfg = read_config(run_dir)
    raw = json.loads((run_dir / "config.json").read_text())
    if "vqvae" not in raw:
        raise PyroVAEError(f"{run_dir} is not a VQ-VAE run (no 'vqvae' section in config.json)")
    dev = resolve_device(device)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=dev)
    model = build_vqvae(_section(VQVAEConfig, raw["vqvae"]), image_shape=data.image_shape)
    _load_into(model, run_dir / "checkpoint.pt", "model", dev)
    prior = None
    if (run_dir / "prior.pt").is_file() and "prior" in raw:
        prior = build_prior(_section(PriorConfig, raw["prior"]), num_codes=model.num_codes,
                            grid_shape=model.grid_shape, num_classes=data.num_classes)
        _load_into(prior, run_dir / "prior.pt", "prior", dev)
        prior.to(dev).eval()
    elif need_prior:
        raise PyroVAEError(f"{run_dir} has no trained prior; "
                           f"run `pyrovae train-prior {run_dir}` first")
    return VQRun(run_dir, raw, cfg, data, model.to(dev).eval(), prior)


def _load_into(module, path: Path, key: str, device) -> None:
    state = checkpoint.load(path, map_location=device)
    try:
        module.load_state_dict(state[key])
    except (KeyError, RuntimeError) as e:
        raise PyroVAEError(f"{path} does not match {path.parent / 'config.json'} "
                           f"({str(e).splitlines()[0][:200]})") from None


# --- the bound ------------------------------------------------------------------------

@torch.no_grad()
def nats_bound(model: VQVAE, prior: CodePrior, x: torch.Tensor, *, batch_size: int = 500):
    """Per-datapoint ``(log p(x | z_q(x)), log p(k(x)))``, each [N] float64; their sum is
    the bound on log p(x).  A class-conditional prior is marginalized over a uniform p(y)."""
    model.eval(), prior.eval()
    recon, log_pk = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        codes = model.encode(xb)
        recon.append(model.log_likelihood(xb, codes).double().cpu())
        log_pk.append(prior.marginal_log_prob(codes).double().cpu())
    return torch.cat(recon), torch.cat(log_pk)


def evaluate_vq(model: VQVAE, prior: CodePrior, x: torch.Tensor, *, batch_size: int = 500) -> dict:
    """The report dict of ``pyrovae evaluate`` (one row, K = 1) plus codebook usage."""
    from pyrovae import eval_report
    from pyrovae.vqvae_train import code_metrics

    t0 = time.perf_counter()
    recon, log_pk = nats_bound(model, prior, x, batch_size=batch_size)
    bound = recon + log_pk
    stats = eval_report.Stats()
    stats.add(bound[None], recon=recon, kl={"codes": -log_pk}, z_mean={})
    report = eval_report.make_report({1: bound}, stats, x_dim=x[0].numel(), threshold=0.01,
                                     seconds=time.perf_counter() - t0, batch_size=batch_size)
    usage = code_metrics(model, x, batch_size=batch_size)
    report.update(model="vqvae", bound="log p(x|z_q(x)) + log p(k(x)); q one-hot so L_K = L_1",
                  codebook={"num_codes": model.num_codes, "grid": list(model.grid_shape),
                            "perplexity": usage["perplexity"], "codes_used": usage["codes_used"]},
                  prior_conditional=prior.conditional)
    return report


def evaluate_vq_run(run_dir, *, device: str = "auto", limit: int | None = None,
                    batch_size: int = 500) -> dict:
    from pyrovae import eval_report

    run = load_vq_run(run_dir, device=device, need_prior=True)
    x = run.data.test_x[:limit] if limit else run.data.test_x
    report = evaluate_vq(run.model, run.prior, x, batch_size=batch_size)
    report.update(run=str(run_dir), dataset=run.config.dataset)
    paths = eval_report.write_report(report, run.dir)
    c = report["codebook"]
    note = (f"\nVQ-VAE: q(k|x) is one-hot, so every K gives the same bound "
            f"log p(x|z_q(x)) + log p(k(x)); the KL row is -log p(k(x)) under the "
            f"{'class-conditional (marginalized)' if run.prior.conditional else 'learned'} "
            f"prior. Codebook: {c['num_codes']} codes on a {c['grid'][0]}x{c['grid'][1]} grid, "
            f"test perplexity {c['perplexity']:.1f}, {100 * c['codes_used']:.1f}% used.\n")
    with open(run.dir / "eval.md", "a") as f:
        f.write(note)
    print(eval_report.markdown_table(report) + note)
    print("wrote " + ", ".join(str(p) for p in paths))
    return report


# --- figures --------------------------------------------------------------------------

@torch.no_grad()
def write_reconstructions(model: VQVAE, x: torch.Tensor, path, *, n: int = 16) -> Path:
    from pyrovae.plots import save_image_grid

    x = x[torch.linspace(0, len(x) - 1, n).long()]  # spread over the (class-sorted) test set
    return save_image_grid(torch.cat([x, model.reconstruct(x)]), path, nrow=n,
                           title="test images (top) and VQ-VAE reconstructions (bottom)")


@torch.no_grad()
def write_samples(model: VQVAE, prior: CodePrior, path, *, n: int = 64, label: int | None = None,
                  by_class: bool = False, seed: int = 0, temperature: float = 1.0,
                  names: list[str] | None = None, per_row: int = 10) -> Path:
    """Decoded prior samples in an 8-wide grid: from p(k), or from p(k | y = label); with
    ``by_class`` (conditional priors) one row of ``per_row`` per class instead."""
    from pyrovae.plots import save_image_grid

    device = prior.pos.device
    gen = torch.Generator(device=device).manual_seed(seed)
    if (label is not None or by_class) and not prior.conditional:
        raise PyroVAEError("class-conditional samples need a conditional prior "
                           "(pyrovae train-prior RUN --conditional --overwrite)")
    if label is not None and not 0 <= label < prior.num_classes:
        raise PyroVAEError(f"--label must lie in 0..{prior.num_classes - 1}; got {label}")
    if by_class:
        y = torch.arange(prior.num_classes, device=device).repeat_interleave(per_row)
        codes = prior.sample(len(y), y, temperature=temperature, generator=gen)
        return save_image_grid(model.decode(codes), path, nrow=per_row,
                               row_labels=names or [str(c) for c in range(prior.num_classes)],
                               title="class-conditional prior samples (one row per class)")
    y = None
    if prior.conditional:  # p(k) = sum_y p(y) p(k | y): draw y uniformly unless given
        y = (torch.full((n,), label, device=device) if label is not None else
             torch.randint(prior.num_classes, (n,), device=device, generator=gen))
    codes = prior.sample(n, y, temperature=temperature, generator=gen)
    title = "prior samples" + (f", class {label}" if label is not None else "")
    return save_image_grid(model.decode(codes), path, nrow=8, title=title)


def write_codebook_figure(model: VQVAE, x: torch.Tensor, history: list[dict], path) -> Path:
    """Codebook usage: perplexity and fraction used per epoch; sorted test code frequencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    codes = torch.cat([model.encode(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    freq = torch.bincount(codes.flatten(), minlength=model.num_codes).double()
    freq = (freq / freq.sum()).sort(descending=True).values.cpu().numpy()
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3), dpi=100)
    a.plot(epochs, [r["test_perplexity"] for r in history], "o-", label="test perplexity")
    a.axhline(model.num_codes, ls="--", c="gray", lw=0.8, label=f"K = {model.num_codes}")
    a.set_xlabel("epoch"), a.set_ylabel("perplexity")
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a2 = a.twinx()
    a2.plot(epochs, [100 * r["test_codes_used"] for r in history], "s-", c="C1",
            label="codes used (%)")
    a2.set_ylabel("codes used (%)")
    a2.set_ylim(0, 105)
    handles = [sum(v, []) for v in zip(a.get_legend_handles_labels(),
                                       a2.get_legend_handles_labels())]
    a.legend(*handles, fontsize=7, loc="lower right")
    b.bar(range(len(freq)), freq, width=1.0)
    b.set_xlabel("code (sorted by test frequency)"), b.set_ylabel("frequency")
    b.set_title("test-set code usage", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
