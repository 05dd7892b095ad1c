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

import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator

from pyrovae.config import config_section
from pyrovae.errors import PyroVAEError
from pyrovae.evaluation import report as eval_report
from pyrovae.models.vqvae.model import VQVAE, VQVAEConfig, build_vqvae
from pyrovae.models.vqvae.prior import CodePrior, PriorConfig, build_prior
from pyrovae.models.vqvae.train import code_metrics
from pyrovae.plots.tiles import save_figure, tile_images
from pyrovae.runs import Run, load_modules, open_run


def load_vq_run(run_dir, *, device: str = "auto", need_prior: bool = False) -> Run:
    """A VQ-VAE run: data, trained model (``run.model``) and, once fitted, code prior
    (``run.guide`` stays None; ``run.prior``), all in eval mode."""
    run = open_run(run_dir, device=device)
    if "vqvae" not in run.raw:
        raise PyroVAEError(f"{run_dir} is not a VQ-VAE run (no 'vqvae' section in config.json)")
    run.model = build_vqvae(config_section(VQVAEConfig, run.raw["vqvae"]),
                            image_shape=run.data.image_shape)
    run.state = load_modules(run, {"model": run.model})
    run.prior = None
    if (run.dir / "prior.pt").is_file() and "prior" in run.raw:
        run.prior = build_prior(config_section(PriorConfig, run.raw["prior"]),
                                num_codes=run.model.num_codes, grid_shape=run.model.grid_shape,
                                num_classes=run.data.num_classes)
        load_modules(run, {"prior": run.prior}, "prior.pt")
    elif need_prior:
        raise PyroVAEError(f"{run_dir} has no trained prior; "
                           f"run `pyrovae train-prior {run_dir}` first")
    return run


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
    t0 = time.perf_counter()
    recon, log_pk = nats_bound(model, prior, x, batch_size=batch_size)
    bound = recon + log_pk
    stats = eval_report.Stats()
    stats.add(bound[None], recon=recon, kl={"codes": -log_pk}, z_mean={})
    report = eval_report.make_report({1: (bound, torch.zeros_like(bound))}, stats,
                                     x_dim=x[0].numel(), threshold=0.01,
                                     seconds=time.perf_counter() - t0, batch_size=batch_size)
    usage = code_metrics(model, x, batch_size=batch_size)
    report.update(model="vqvae", bound="log p(x|z_q(x)) + log p(k(x)); q one-hot so L_K = L_1",
                  codebook={"num_codes": model.num_codes, "grid": list(model.grid_shape),
                            "perplexity": usage["perplexity"], "codes_used": usage["codes_used"]},
                  prior_conditional=prior.conditional)
    return report


def evaluate_vq_run(run_dir, *, device: str = "auto", limit: int | None = None,
                    batch_size: int = 500) -> dict:
    run = load_vq_run(run_dir, device=device, need_prior=True)
    x = run.data.test_x[:limit] if limit else run.data.test_x
    report = evaluate_vq(run.model, run.prior, x, batch_size=batch_size)
    report.update(run=str(run_dir), dataset=run.config.dataset)
    c = report["codebook"]
    note = (f"\nVQ-VAE: q(k|x) is one-hot, so every K gives the same bound "
            f"log p(x|z_q(x)) + log p(k(x)); the KL row is -log p(k(x)) under the "
            f"{'class-conditional (marginalized)' if run.prior.conditional else 'learned'} "
            f"prior. Codebook: {c['num_codes']} codes on a {c['grid'][0]}x{c['grid'][1]} grid, "
            f"test perplexity {c['perplexity']:.1f}, {100 * c['codes_used']:.1f}% used.\n")
    paths = eval_report.write_report(report, run.dir, note=note)
    print(eval_report.markdown_table(report) + note)
    print("wrote " + ", ".join(str(p) for p in paths))
    return report


# --- figures --------------------------------------------------------------------------

@torch.no_grad()
def write_reconstructions(model: VQVAE, x: torch.Tensor, path, *, n: int = 16) -> Path:
    x = x[torch.linspace(0, len(x) - 1, n).long()]  # spread over the test set
    return tile_images(torch.cat([x, model.reconstruct(x)]), path, per_row=n,
                       title="test images (top) and VQ-VAE reconstructions (bottom)")


@torch.no_grad()
def write_samples(model: VQVAE, prior: CodePrior, path, *, n: int = 64, label: int | None = None,
                  by_class: bool = False, seed: int = 0, temperature: float = 1.0,
                  names: list[str] | None = None, per_row: int = 10) -> Path:
    """Decoded prior samples in an 8-wide grid: from p(k), or from p(k | y = label); with
    ``by_class`` (conditional priors) one row of ``per_row`` per class instead."""
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
        return tile_images(model.decode(codes), path, per_row=per_row,
                               row_labels=names or [str(c) for c in range(prior.num_classes)],
                               title="class-conditional prior samples (one row per class)")
    y = None
    if prior.conditional:  # p(k) = sum_y p(y) p(k | y): draw y uniformly unless given
        y = (torch.full((n,), label, device=device) if label is not None else
             torch.randint(prior.num_classes, (n,), device=device, generator=gen))
    codes = prior.sample(n, y, temperature=temperature, generator=gen)
    title = "prior samples" + (f", class {label}" if label is not None else "")
    return tile_images(model.decode(codes), path, per_row=8, title=title)


def write_codebook_figure(model: VQVAE, x: torch.Tensor, history: list[dict], path) -> Path:
    """Codebook usage: perplexity and fraction used per epoch; sorted test code frequencies."""
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
    return save_figure(fig, path)
