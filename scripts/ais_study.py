#!/usr/bin/env python
"""How far IWAE_K is from log p(x): AIS beside IWAE on a trained run's test images, BDMC
sandwiches on data simulated from the model, and where the per-image gap is largest.

    pyrovae train --dataset fashion-mnist --data-dir DIR --epochs 10 --run-dir runs/fm-vae
    python scripts/ais_study.py runs/fm-vae --num-test 1000 --ais-steps 100 500

Writes the run's eval.json/eval.md (IWAE_K and AIS rows), ``OUT.json``/``OUT.md`` and
``FIGURES/ais_gap.png`` (histogram of AIS - IWAE per image, the images with the largest
and smallest gap).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from pyrovae import (bdmc, evaluate_run, load_run, machine_info, save_figure, tile_images)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run", help="a trained run directory")
    p.add_argument("--num-test", type=int, default=1000, help="test images (the first N)")
    p.add_argument("--k", type=int, default=5000, help="largest IWAE K")
    p.add_argument("--ais-steps", type=int, nargs="+", default=[100, 500], help="AIS steps")
    p.add_argument("--chains", type=int, default=16, help="AIS chains per datapoint")
    p.add_argument("--bdmc-steps", type=int, nargs="+", default=[100, 500], help="BDMC steps")
    p.add_argument("--bdmc-num", type=int, default=100, help="simulated datapoints for BDMC")
    p.add_argument("--out", default="results/ais_fashion", help="output stem (.json, .md)")
    p.add_argument("--figures", default="docs/figures", help="folder of the figure")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def figure(report: dict, x: torch.Tensor, path: Path) -> Path:
    ais = report["ais"][-1]
    gap = torch.tensor(ais["per_datapoint"]) - torch.tensor(report["per_datapoint"]["iwae"])
    order = gap.argsort()
    fig, ax = plt.subplots(figsize=(5, 3), dpi=110)
    ax.hist(gap.numpy(), bins=50)
    ax.set_xlabel(f"AIS (T={ais['steps']}) − IWAE_{report['per_datapoint']['K']} per image (nats)")
    ax.set_ylabel("test images")
    ax.set_title(f"mean {gap.mean():+.2f}, median {gap.median():+.2f} nats", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path.with_name(path.stem + "_hist.png"))
    pick = torch.cat([order.flip(0)[:10], order[:10]])
    return tile_images(x[pick], path, per_row=10, row_labels=["largest gap", "smallest gap"],
                       title="test images where AIS gains most / least over IWAE")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(2)
    ks = tuple(k for k in (1, 10, 100, 1000) if k < args.k) + (args.k,)
    report = evaluate_run(args.run, num_particles=ks, limit=args.num_test,
                          progress=not args.no_progress, ais_steps=args.ais_steps,
                          ais_chains=args.chains)
    run = load_run(args.run, device="cpu")
    sandwiches = []
    for steps in args.bdmc_steps:
        torch.manual_seed(steps)
        res = bdmc(run.model, run.guide, run.data.test_x[:args.bdmc_num], num_steps=steps,
                   num_chains=args.chains, progress=not args.no_progress)
        width = res["upper"] - res["lower"]
        sandwiches.append({"steps": steps, "num": args.bdmc_num, "chains": args.chains,
                           "lower": float(res["lower"].mean()), "upper": float(res["upper"].mean()),
                           "width": float(width.mean()),
                           "width_se": float(width.std() / len(width) ** 0.5),
                           "seconds": res["seconds"]})
        print(f"BDMC T={steps}: width {sandwiches[-1]['width']:.3f} nats")
    fig = figure(report, run.data.test_x[:args.num_test], Path(args.figures) / "ais_gap.png")
    iwae_s = report["seconds"]
    rows = {r["K"]: r for r in report["bounds"]}
    lines = [f"{run.config.dataset}, run `{args.run}`, first {args.num_test} test images; "
             f"nats per image, ± one SE over images; cost in log-joint evaluations per image.",
             "", "| estimator | log p(x) estimate | ± SE | MC SE | gap to IWAE_K | cost | "
             "seconds |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k in ks[1:]:
        r = rows[k]
        lines.append(f"| IWAE_{k} | {r['mean']:.3f} | {r['se']:.3f} | {r['mc_se']:.3f} | | {k} | |")
    lines[-1] = lines[-1][:-3] + f"| {iwae_s:.0f} (all K) |"
    for a in report["ais"]:
        g = a["gap_vs_iwae"]
        lines.append(f"| AIS T={a['steps']} × {a['chains']} | {a['mean']:.3f} | {a['se']:.3f} | "
                     f"{a['mc_se']:.3f} | {g['mean']:+.3f} ± {g['se']:.3f} | {a['evaluations']} "
                     f"| {a['seconds']:.0f} |")
    lines += ["", "BDMC on data simulated from the model (forward AIS from the guide, reverse "
              "AIS from the generating latents):", "",
              "| steps | simulated points | lower | upper | width | seconds |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {b['steps']} | {b['num']} | {b['lower']:.3f} | {b['upper']:.3f} | "
              f"{b['width']:.3f} ± {b['width_se']:.3f} | {b['seconds']:.0f} |" for b in sandwiches]
    info = machine_info()
    lines += ["", f"{info['cpu']} ({info['cpu_count']} cores), torch {info['torch']}."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(
        {"iwae": report["bounds"], "ais": [{k: v for k, v in a.items() if k != "per_datapoint"}
                                           for a in report["ais"]],
         "bdmc": sandwiches, "psis": report["psis"], "machine": info, "args": vars(args)},
        indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"figures: {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
