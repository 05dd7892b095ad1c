"""Amortization gap (Cremer, Li & Duvenaud, "Inference Suboptimality in Variational
Autoencoders", ICML 2018): how much of a trained VAE's ELBO shortfall is the guide
*family* and how much is the *encoder*.

For each trained run and a subset of test images,

    inference gap      log p(x) - ELBO[q_amortized]
  = approximation gap  log p(x) - ELBO[q_local*]             (the family's best is not p(z|x))
  + amortization gap   ELBO[q_local*] - ELBO[q_amortized]    (the encoder misses that best)

where ``q_local*`` is the non-amortized guide of ``guides/local.py`` -- one free member of
the same family per image, started at the encoder's output and optimized with the model
held fixed -- and log p(x) is estimated by IWAE_K with large K, taking for each image the
larger of the estimates with the amortized and the local proposal (both are stochastic
lower bounds of log p(x); their spread at this K is far below the gaps).  Every term is
a per-image mean, with a paired SE over the same images.

    python scripts/amortization_gap.py runs/swap/standard-diagonal runs/swap/standard-fullcov \\
        runs/swap/standard-iaf --n-test 100 --steps 2000 --eval-k 5000 --out runs/amortization

Writes ``OUT/amortization_gap.md``, ``.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from pyrovae import (ais_log_likelihood, elbo_terms, load_run, log_likelihood_bound,
                     machine_info, save_figure)
from pyrovae.guides.local import LocalGuide, optimize_local
from study import prepare


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="trained run directories (e.g. from the swap grid)")
    p.add_argument("--n-test", type=int, default=100, help="test images, evenly spaced")
    p.add_argument("--steps", type=int, default=2000, help="local optimization steps")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--particles", type=int, default=8, help="ELBO samples per local step")
    p.add_argument("--elbo-samples", type=int, default=1000, help="samples per ELBO estimate")
    p.add_argument("--eval-k", type=int, default=5000, help="K of the log p(x) estimate")
    p.add_argument("--ais", type=int, default=0, help="estimate log p(x) by AIS with this "
                   "many steps instead of IWAE (0: IWAE)")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/amortization")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def gaps_for_run(run_dir: str, args) -> dict:
    run = load_run(run_dir, device="cpu")
    x_all, y_all = run.data.test_x, run.data.test_y
    idx = torch.linspace(0, len(x_all) - 1, min(args.n_test, len(x_all))).long()
    x, y = x_all[idx], y_all[idx]
    model, guide = run.model, run.guide
    progress = not args.no_progress

    torch.manual_seed(args.seed)
    elbo_amortized = elbo_terms(model, guide, x, y, num_particles=args.elbo_samples)["elbo"]
    iwae_amortized = log_likelihood_bound(model, guide, x, y, num_particles=args.eval_k)

    local = LocalGuide(guide, x, y)
    torch.manual_seed(args.seed + 1)
    trace = optimize_local(model, local, x, y, steps=args.steps, lr=args.lr,
                           num_particles=args.particles, progress=progress)
    torch.manual_seed(args.seed + 2)
    local.eval()
    elbo_local = elbo_terms(model, local, x, y, num_particles=args.elbo_samples)["elbo"]
    iwae_local = log_likelihood_bound(model, local, x, y, num_particles=args.eval_k)
    log_px = torch.maximum(iwae_amortized, iwae_local)
    if args.ais:  # annealed importance sampling: a much tighter estimate of log p(x)
        torch.manual_seed(args.seed + 3)
        log_px = ais_log_likelihood(model, guide, x, y, num_steps=args.ais,
                                    num_chains=args.chains, progress=progress).log_px.float()

    tenth = max(len(trace) // 10, 1)
    terms = {
        "log_px": log_px, "elbo_amortized": elbo_amortized, "elbo_local": elbo_local,
        "iwae_amortized": iwae_amortized, "iwae_local": iwae_local,
        "inference_gap": log_px - elbo_amortized,
        "approximation_gap": log_px - elbo_local,
        "amortization_gap": elbo_local - elbo_amortized,
    }
    result = {"run": str(run_dir), "prior": run.config.model.prior,
              "guide": run.config.model.guide, "dataset": run.config.dataset,
              "n_test": len(x), "eval_k": args.eval_k, "steps": args.steps,
              "log_px_estimator": (f"AIS T={args.ais} x {args.chains} chains" if args.ais else
                                   f"max(IWAE_{args.eval_k} amortized, local)"),
              # still climbing? compare the last tenth of the optimization with the one before
              "local_elbo_last_tenth": sum(trace[-tenth:]) / tenth,
              "local_elbo_previous_tenth": sum(trace[-2 * tenth:-tenth]) / tenth
              if len(trace) >= 2 * tenth else float("nan")}
    for name, v in terms.items():
        result[name], result[name + "_se"] = mean_se(v)
    return result


def markdown(results: list[dict], args) -> str:
    r0 = results[0]
    lines = [f"Dataset `{r0['dataset']}`, {r0['n_test']} test images (evenly spaced); "
             f"log p(x) ≈ {r0['log_px_estimator']} (per image); ELBOs from {args.elbo_samples} samples; local guide: "
             f"{args.steps} Adam steps (lr {args.lr}, {args.particles} samples/step) per run, "
             f"model fixed.  Nats per image, ± paired SE over the images.", "",
             "| prior | guide | log p(x) | ELBO amortized | ELBO local | inference gap | "
             "approximation gap | amortization gap | local ELBO, last vs previous tenth |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        def f(k):
            return f"{r[k]:.2f} ± {r[k + '_se']:.2f}"

        lines.append(f"| {r['prior']} | {r['guide']} | {f('log_px')} | {f('elbo_amortized')} | "
                     f"{f('elbo_local')} | {f('inference_gap')} | {f('approximation_gap')} | "
                     f"{f('amortization_gap')} | {r['local_elbo_last_tenth']:.2f} vs "
                     f"{r['local_elbo_previous_tenth']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['guide']}\n({r['prior']} prior)" for r in results]
    pos = range(len(results))
    approx = [r["approximation_gap"] for r in results]
    amort = [r["amortization_gap"] for r in results]
    fig, ax = plt.subplots(figsize=(1.9 * len(results) + 2, 3.8))
    ax.bar(pos, approx, 0.6, yerr=[r["approximation_gap_se"] for r in results],
           label="approximation gap")
    ax.bar(pos, amort, 0.6, bottom=approx, yerr=[r["amortization_gap_se"] for r in results],
           label="amortization gap")
    ax.set_xticks(list(pos))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("nats per image")
    ax.set_title("inference gap = approximation + amortization (Cremer et al. 2018)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = prepare(args)
    results = []
    for run_dir in args.runs:
        print(f"== {run_dir}", file=sys.stderr)
        results.append(gaps_for_run(run_dir, args))
    table = markdown(results, args)
    (out / "amortization_gap.md").write_text(table)
    (out / "amortization_gap.json").write_text(json.dumps(
        {"args": vars(args), "results": results, "machine": machine_info()}, indent=2))
    plot(results, out / "amortization_gap.png")
    print(table)
    print(f"wrote {out / 'amortization_gap.md'}, {out / 'amortization_gap.json'}, "
          f"{out / 'amortization_gap.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
