"""β-VAE sweep: the same VAE trained at several β, every model scored at β = 1.

β scales the KL term through an effect handler over the unchanged Pyro ELBO
(``pyrovae.scale_latents``; Higgins et al., "β-VAE", ICLR 2017):

    L_β = E_q[log p(x | z)] - β KL(q(z | x) || p(z)).

For each β the test set gets one evaluation by :func:`pyrovae.evaluate`
(importance-weighted, always at β = 1): reconstruction E_q[log p(x | z)], KL, active
units (Burda et al. 2016: Cov_x E_q[z_u | x] > 0.01), the ELBO and the IWAE bound L_K.
Expected: as β grows, KL and active units fall, reconstruction worsens, and the β = 1
bound is highest near β = 1 (β ≠ 1 optimizes a different objective); traversals of
large-β models show fewer, smoother factors.

    python scripts/beta_sweep.py --betas 0.5,1,2,4,8 --epochs 40 --out docs/figures

Writes ``OUT/beta_sweep.{json,md,png}`` and ``OUT/traversal_beta<β>.png`` per model;
the runs are ordinary run directories under ``--runs`` (``pyrovae traverse RUN``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import pyrovae  # noqa: E402
from pyrovae import (ModelConfig, RunConfig, TrainConfig, build_pair, evaluate,  # noqa: E402
                     fit, load_dataset)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--betas", default="0.5,1,2,4,8")
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-k", type=int, default=1000, help="particles of the IWAE bound")
    p.add_argument("--index", type=int, default=550, help="test digit held in the traversals")
    p.add_argument("--runs", default="runs/beta_sweep")
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run_one(beta: float, data, args) -> dict:
    cfg = RunConfig(dataset=args.dataset, data_dir=args.data_dir,
                    model=ModelConfig(latent_dim=args.latent_dim, hidden=args.hidden),
                    train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                      lr=args.lr, seed=args.seed, beta=beta))
    run_dir = Path(args.runs) / f"beta{beta:g}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "checkpoint.pt"):
        (run_dir / stale).unlink(missing_ok=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    torch.manual_seed(args.seed)  # same initial weights at every β
    model, guide = build_pair(cfg.model, x_dim=data.x_dim, num_classes=data.num_classes)
    print(f"β = {beta:g}: training {args.epochs} epochs -> {run_dir}")
    history = fit(model, guide, data, cfg.train, run_dir=run_dir, config_json=cfg.to_json(),
                  progress=not args.no_progress)
    model.eval(), guide.eval()
    report = evaluate(model, guide, data.test_x, num_particles=(1, args.eval_k),
                      progress=not args.no_progress)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    fig = pyrovae.plot_traversal(
        model, guide, data.test_x, Path(args.out) / f"traversal_beta{beta:g}.png",
        index=args.index, title=f"β = {beta:g}: traversal of test digit #{args.index} "
                                f"(rows by KL; grey = inactive)")
    elbo, iwae = report["bounds"][0], report["bounds"][-1]
    # the traversal greys units by the guide's exact mean; the evaluator averages K draws
    # (its Cov_x estimate carries an extra Var_q / K), so the two counts may differ
    exact = int((pyrovae.activity(pyrovae.posterior_means(guide, data.test_x))
                 > pyrovae.INACTIVE).sum())
    return {"beta": beta, "recon": report["recon"]["mean"], "kl": report["kl"]["mean"],
            "active_units": report["active_units"]["z"]["active"],
            "active_units_exact_mean": exact,
            "elbo": elbo["mean"], "elbo_se": elbo["se"], "iwae": iwae["mean"],
            "iwae_se": iwae["se"], "K": iwae["K"], "train_seconds": sum(
                r["seconds"] for r in history), "traversal": str(fig)}


def table(rows, latent_dim: int) -> str:
    k = rows[0]["K"]
    lines = [f"| β | reconstruction E_q log p(x\\|z) | KL | active units | ELBO | IWAE (K={k}) |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['beta']:g} | {r['recon']:.1f} | {r['kl']:.1f} | {r['active_units']} / "
              f"{latent_dim} | {r['elbo']:.1f} ± {r['elbo_se']:.1f} | "
              f"{r['iwae']:.1f} ± {r['iwae_se']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows, path: Path, latent_dim: int) -> Path:
    b = [r["beta"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), dpi=100)
    panels = [("reconstruction E_q[log p(x|z)]", "recon"), ("KL(q(z|x) || p(z))", "kl"),
              (f"active units (of {latent_dim})", "active_units")]
    for ax, (title, key) in zip(axes, panels):
        ax.plot(b, [r[key] for r in rows], "o-")
        ax.set_title(title, fontsize=9)
    axes[3].errorbar(b, [r["elbo"] for r in rows], [r["elbo_se"] for r in rows], fmt="o-",
                     label="ELBO", capsize=2)
    axes[3].errorbar(b, [r["iwae"] for r in rows], [r["iwae_se"] for r in rows], fmt="s-",
                     label=f"IWAE K={rows[0]['K']}", capsize=2)
    axes[3].set_title("test bounds on log p(x) (β = 1)", fontsize=9)
    axes[3].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(b, [f"{v:g}" for v in b])
        ax.set_xlabel("β", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    betas = [float(b) for b in args.betas.split(",")]
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_one(beta, data, args) for beta in betas]
    md = table(rows, args.latent_dim)
    (out / "beta_sweep.md").write_text(md)
    (out / "beta_sweep.json").write_text(json.dumps(
        {"dataset": args.dataset, "epochs": args.epochs, "latent_dim": args.latent_dim,
         "hidden": args.hidden, "rows": rows}, indent=2))
    fig = plot(rows, out / "beta_sweep.png", args.latent_dim)
    print(md)
    print(f"wrote {fig}, {out / 'beta_sweep.md'}, {out / 'beta_sweep.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
