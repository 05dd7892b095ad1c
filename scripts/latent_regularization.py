"""What the KL term does to a latent space: three VAEs with a 2-D latent, side by side.

Each trains the same architecture on the same data with a different handler over the
same Pyro ELBO (no model knows which):

- reconstruction only: ``scale_latents(0)``   -> maximise E_q[log p(x | z)]
- KL only:             ``scale_observed(0)``  -> minimise KL(q(z | x) || p(z))
- full ELBO:           no scaling             -> E_q[log p(x | z)] - KL

and the test set's posterior means E_q[z | x], coloured by class, are drawn in one
figure.  The expected picture (e.g. Rocca, "Understanding Variational Autoencoders",
2019): reconstruction alone gives separated but irregular clusters far from the prior's
mass; the KL alone maps every digit onto the prior (one blob, no information); the ELBO
gives a regular space, covering the prior, whose classes overlap at their borders.  The
full-ELBO model's decoded manifold (Kingma & Welling 2014, fig. 4) is drawn too.

    python scripts/latent_regularization.py --epochs 40 --out docs/figures

Writes ``OUT/latent_regularization.png``, ``OUT/manifold_2d.png`` and
``OUT/latent_regularization.{json,md}`` (test ELBO terms at β = 1); the three runs are
kept as ordinary run directories under ``--runs`` (``pyrovae traverse RUN`` works on them).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import pyrovae
from pyrovae import (ModelConfig, RunConfig, TrainConfig, build_pair, fit, load_dataset,
                     scale_observed)

VARIANTS = [  # (name, title, beta, extra training handlers)
    ("recon_only", "reconstruction only (β = 0)", 0.0, lambda: (), ),
    ("kl_only", "KL only (likelihood scaled by 0)", 1.0, lambda: (scale_observed(0.0),)),
    ("elbo", "full ELBO (β = 1)", 1.0, lambda: ()),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/latent_regularization", help="run directories")
    p.add_argument("--out", default="docs/figures", help="figures and tables")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def train_variant(name, beta, handlers, data, args):
    cfg = RunConfig(dataset=args.dataset, data_dir=args.data_dir,
                    model=ModelConfig(latent_dim=2, hidden=args.hidden),
                    train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                      lr=args.lr, seed=args.seed, beta=beta))
    run_dir = Path(args.runs) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "checkpoint.pt"):
        (run_dir / stale).unlink(missing_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    torch.manual_seed(args.seed)  # same initial weights for the three variants
    model, guide = build_pair(cfg.model, x_dim=data.x_dim, num_classes=data.num_classes)
    print(f"training {name} ({args.epochs} epochs) -> {run_dir}")
    history = fit(model, guide, data, cfg.train, run_dir=run_dir, config_json=cfg.to_json(),
                  progress=not args.no_progress, handlers=handlers)
    return model.eval(), guide.eval(), history[-1]


def main(argv=None) -> int:
    args = parse_args(argv)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    out = Path(args.out)
    panels, rows, full = [], [], None
    for name, title, beta, handlers in VARIANTS:
        model, guide, last = train_variant(name, beta, handlers(), data, args)
        z = pyrovae.posterior_means(guide, data.test_x)
        panels.append((title, z, data.test_y))
        rows.append({"variant": name, "title": title, "test_elbo": last["test_elbo"],
                     "test_recon": last["test_recon"], "test_kl": last["test_kl"],
                     "mean_abs_z": float(z.abs().mean()),
                     "active_units": int((pyrovae.activity(z) > 0.01).sum())})
        if name == "elbo":
            full = model
    names = pyrovae.class_names(args.dataset, data.num_classes)
    fig = pyrovae.plot_latent_scatter(
        panels, out / "latent_regularization.png", names=names,
        title=f"test-set posterior means E_q[z | x], 2-D latent, {args.dataset}, "
              f"{args.epochs} epochs")
    manifold = pyrovae.plot_manifold(full, out / "manifold_2d.png", n=20,
                                          x_dim=data.x_dim)
    (out / "latent_regularization.json").write_text(json.dumps(
        {"dataset": args.dataset, "epochs": args.epochs, "hidden": args.hidden,
         "variants": rows}, indent=2))
    table = ["| variant | test ELBO | reconstruction | KL | mean abs z | active units |",
             "|---|---:|---:|---:|---:|---:|"]
    table += [f"| {r['title']} | {r['test_elbo']:.1f} | {r['test_recon']:.1f} | "
              f"{r['test_kl']:.2f} | {r['mean_abs_z']:.2f} | {r['active_units']} / 2 |"
              for r in rows]
    (out / "latent_regularization.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"wrote {fig}, {manifold}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
