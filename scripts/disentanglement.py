#!/usr/bin/env python
"""The lecture's claim, measured: does a larger β disentangle?  β-VAE at several β and
β-TCVAE on procedurally rendered dSprites (the reduced 32 x 32 grid unless --dataset
sprites64), scored with MIG (Chen et al. 2018) and the FactorVAE score (Kim & Mnih 2018)
beside reconstruction, KL and active units; the trade-off figure and traversals whose rows
are labelled by the factor each latent carries most information about.

    python scripts/disentanglement.py --betas 1 2 4 8 16 --tcvae 4 8 --seeds 0 1 --epochs 10

Lanes run side by side (one per core, each with its own --out) are joined with --merge;
--baseline draws this budget's metrics against another run's (e.g. 15 vs 150 epochs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyrovae import (ModelConfig, TrainConfig, activity, build_pair, elbo_terms, factorvae_score,
                     fit, load_dataset, mig, plot_traversal, posterior_means,
                     save_figure)
from study import write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--dataset", default="sprites", help="sprites (32x32) or sprites64")
    p.add_argument("--betas", type=float, nargs="*", default=[1, 2, 4, 8, 16],
                   help="β-VAE betas (none: a β-TCVAE-only study)")
    p.add_argument("--tcvae", type=float, nargs="*", default=[4, 8], help="β-TCVAE betas")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--train-size", type=int, default=None,
                   help="train on this many images, evenly spaced over the grid (default all)")
    p.add_argument("--votes", type=int, default=800, help="FactorVAE train and eval votes")
    p.add_argument("--out", default="results/disentanglement")
    p.add_argument("--figures", default="docs/figures")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                   help="train nothing: join these results files (lanes of one study)")
    p.add_argument("--baseline", metavar="JSON", default=None,
                   help="another budget's results: adds disentanglement_budget.png")
    return p.parse_args(argv)


def read_study(path) -> dict:
    """One results file of this script, or a one-line error."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: not a readable results file of this script ({e})") from None
    if not isinstance(r, dict) or "rows" not in r or "args" not in r:
        raise SystemExit(f"{path}: no 'rows' and 'args'; give a JSON this script wrote")
    return r


def merged_rows(paths, args) -> list[dict]:
    """The rows of several lanes; their dataset, epochs and latents must agree, and
    ``args`` takes them."""
    studies = [read_study(p) for p in paths]
    keys = ("dataset", "epochs", "latent_dim", "train_size", "votes")
    first = {k: studies[0]["args"].get(k) for k in keys}
    for path, r in zip(paths, studies):
        other = {k: r["args"].get(k) for k in keys}
        if other != first:
            raise SystemExit(f"{path}: {other} differs from {paths[0]}'s {first}; "
                             "merge only lanes of one study")
    rows, seen = [], {}
    for path, r in zip(paths, studies):
        for row in r["rows"]:
            key = (row["objective"], row["beta"], row["seed"])
            if key in seen:
                raise SystemExit(f"{path}: {key[0]} at β = {key[1]:g}, seed {key[2]} is also in "
                                 f"{seen[key]}; merge each run once")
            seen[key] = path
            rows.append(row)
    for k, v in first.items():
        setattr(args, k, v)
    args.seeds = sorted({r["seed"] for r in rows})
    args.betas = sorted({r["beta"] for r in rows if r["objective"] == "elbo"})
    args.tcvae = sorted({r["beta"] for r in rows if r["objective"] != "elbo"})
    return rows


def run(data, objective: str, beta: float, seed: int, args) -> tuple[dict, object, object]:
    pyro.set_rng_seed(seed)
    model, guide = build_pair(ModelConfig(network="conv", latent_dim=args.latent_dim),
                              x_dim=data.x_dim, num_classes=data.num_classes)
    train_x = data.train_x
    if args.train_size is not None:
        train_x = train_x[torch.linspace(0, len(train_x) - 1, args.train_size).long()]
    history = fit(model, guide, (train_x,), TrainConfig(
        epochs=args.epochs, batch_size=64, lr=1e-3, seed=seed, objective=objective,
        beta=beta if objective == "elbo" else 1.0), progress=not args.no_progress)
    x = data.test_x
    torch.manual_seed(seed)
    terms = elbo_terms(model, guide, x)
    codes = posterior_means(guide, x).double().cpu()
    m = mig(codes, data.test_factors.cpu())
    fvae = factorvae_score(lambda imgs: posterior_means(guide, imgs), data.factor_source,
                           num_train_votes=args.votes, num_eval_votes=args.votes,
                           generator=torch.Generator().manual_seed(seed))
    row = {"objective": objective, "beta": beta, "seed": seed,
           "recon": float(terms["recon"].mean()), "kl": float(terms["kl"].mean()),
           "elbo": float(terms["elbo"].mean()),
           "active_units": int((activity(codes.float()) > 0.01).sum()),
           "mig": m.score, "mig_per_factor": dict(zip(data.factor_names, m.per_factor)),
           "factorvae": fvae.score, "train_seconds": sum(h["seconds"] for h in history)}
    # the factor each unit carries most information about (rows of the traversal)
    mi = m.mutual_information  # [L, K]
    row["unit_factor"] = {int(u): f"{data.factor_names[int(mi[u].argmax())]} "
                                  f"({float(mi[u].max()):.2f})" for u in range(mi.shape[0])}
    return row, model, guide


def summarize(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["objective"], r["beta"]), []).append(r)
    out = []
    for (obj, beta), rs in groups.items():
        agg = {"objective": obj, "beta": beta, "seeds": len(rs)}
        for key in ("mig", "factorvae", "recon", "kl", "active_units"):
            v = torch.tensor([float(r[key]) for r in rs], dtype=torch.float64)
            agg[key], agg[key + "_sd"] = float(v.mean()), float(v.std()) if len(v) > 1 else 0.0
        out.append(agg)
    return out


def beta_axis(a, summary):
    """A log-β axis ticked at the β values studied, written as numbers."""
    betas = sorted({s["beta"] for s in summary})
    a.set_xscale("log")
    a.set_xticks(betas, [f"{b:g}" for b in betas])
    a.minorticks_off()


def trade_off_figure(summary, path):
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    for obj, style in (("elbo", "o-"), ("tcvae", "s--")):
        pts = [s for s in summary if s["objective"].startswith(obj)]
        if not pts:
            continue
        label = "β-VAE" if obj == "elbo" else "β-TCVAE"
        for metric in ("mig", "factorvae"):
            ax[0].errorbar([p["beta"] for p in pts], [p[metric] for p in pts],
                           [p[metric + "_sd"] for p in pts], fmt=style, capsize=3,
                           label=f"{label} {'MIG' if metric == 'mig' else 'FactorVAE score'}")
        ax[1].errorbar([p["beta"] for p in pts], [p["recon"] for p in pts],
                       [p["recon_sd"] for p in pts], fmt=style, capsize=3, label=label)
    ax[0].set(xlabel="β", ylabel="disentanglement", title="disentanglement vs β")
    ax[1].set(xlabel="β", ylabel="E_q log p(x|z) (nats)", title="reconstruction vs β")
    for a in ax:
        beta_axis(a, summary)
        a.legend(fontsize=7)
        a.title.set_fontsize(9)
    fig.tight_layout()
    save_figure(fig, path)


def budget_figure(budgets: dict, path):
    """β-VAE's MIG, FactorVAE score and reconstruction against β, one line per budget."""
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.2), dpi=110)
    panels = (("mig", "MIG"), ("factorvae", "FactorVAE score"), ("recon", "E_q log p(x|z) (nats)"))
    for (name, summary), style in zip(budgets.items(), ("o-", "s--", "^:")):
        pts = [s for s in summary if s["objective"] == "elbo"]
        for a, (key, title) in zip(ax, panels):
            a.errorbar([p["beta"] for p in pts], [p[key] for p in pts],
                       [p[key + "_sd"] for p in pts], fmt=style, capsize=3,
                       label=f"{name} ({pts[0]['seeds'] if pts else 0} seeds)")
            a.set(xlabel="β", title=title)
            a.title.set_fontsize(9)
    for a in ax:
        beta_axis(a, [s for summary in budgets.values() for s in summary])
    ax[0].legend(fontsize=7)
    fig.suptitle("β-VAE on sprites: the same β at two training budgets", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    baseline = read_study(args.baseline) if args.baseline else None
    if args.merge:
        rows = merged_rows(args.merge, args)
    else:
        data = load_dataset(args.dataset)
        rows, kept = [], {}
        plan = [("elbo", b) for b in args.betas] + [("tcvae:" + f"{b:g}", b) for b in args.tcvae]
        for objective, beta in plan:
            for seed in args.seeds:
                row, model, guide = run(data, objective, beta, seed, args)
                rows.append(row)
                print({k: row[k] for k in ("objective", "beta", "seed", "mig", "factorvae",
                                           "recon")})
                if seed == args.seeds[0]:
                    kept[(objective, beta)] = (model, guide, row)
    summary = summarize(rows)
    figures = Path(args.figures)
    trade_off_figure(summary, figures / "disentanglement.png")
    if baseline is not None:
        budget_figure({f"baseline, {baseline['args']['epochs']} epochs":
                       summarize(baseline["rows"]), f"{args.epochs} epochs": summary},
                      figures / "disentanglement_budget.png")
    if not args.merge:
        betas = [b for (objective, b) in kept if objective == "elbo"]
        for (objective, beta), (model, guide, row) in kept.items():
            if objective == "elbo" and beta in (min(betas), max(betas)):
                plot_traversal(model, guide, data.test_x,
                               figures / f"sprites_traversal_beta{beta:g}.png",
                               index=0, span=2.5, steps=9, unit_names=row["unit_factor"],
                               title=f"β = {beta:g}: rows = latents, with their top-MI factor")
    lines = [f"{args.dataset}, conv VAE (latent {args.latent_dim}), {args.epochs} epochs, "
             f"seeds {args.seeds}; test set; mean ± sd over seeds; FactorVAE score from "
             f"{args.votes} train / {args.votes} eval votes of 64.", "",
             "| objective | β | MIG | FactorVAE | E log p(x|z) | KL | active units |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['objective']} | {s['beta']:g} | {s['mig']:.3f} ± {s['mig_sd']:.3f} | "
              f"{s['factorvae']:.3f} ± {s['factorvae_sd']:.3f} | {s['recon']:.2f} | "
              f"{s['kl']:.2f} | {s['active_units']:.1f} |" for s in summary]
    print(write_results(args.out, {"rows": rows, "summary": summary, "args": vars(args)}, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
