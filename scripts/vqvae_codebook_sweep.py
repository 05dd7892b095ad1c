"""Codebook-size sweep of trained VQ-VAE runs: one figure and one Markdown table.

Each run must have been trained, given a prior and evaluated, e.g. for K in 2 4 8 16 128:

    pyrovae train --model vqvae --num-codes K --epochs 30 --run-dir runs/vqvaeK-mnist-sample
    pyrovae train-prior runs/vqvaeK-mnist-sample --epochs 20
    pyrovae evaluate runs/vqvaeK-mnist-sample

then ``python scripts/vqvae_codebook_sweep.py runs/vqvae{2,4,8,16,128}-mnist-sample``
draws test images, then per run its reconstructions and prior samples
(``--out``, default ``docs/figures/vqvae_codebook_sweep.png``), and prints the bound,
reconstruction and rate (-log p(k)) of each run's ``eval.json``: the rate–distortion
trade-off of the codebook size.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from pyrovae import tile_images
from pyrovae.models.vqvae import load_vq_run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="evaluated VQ-VAE run directories")
    p.add_argument("--out", default="docs/figures/vqvae_codebook_sweep.png")
    p.add_argument("--n", type=int, default=12, help="images per row")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows, labels, table = [], [], []
    for i, run_dir in enumerate(args.runs):
        run = load_vq_run(run_dir, need_prior=True)
        x = run.data.test_x
        x = x[torch.linspace(0, len(x) - 1, args.n).long()]
        if i == 0:
            rows.append(x)
            labels.append("test")
        k = run.model.num_codes
        gen = torch.Generator(device=x.device).manual_seed(args.seed)
        y = (torch.randint(run.prior.num_classes, (args.n,), generator=gen, device=x.device)
             if run.prior.conditional else None)
        rows += [run.model.reconstruct(x), run.model.decode(run.prior.sample(args.n, y, generator=gen))]
        labels += [f"K={k} rec", f"K={k} gen"]  # short: the label margin is narrow
        report = json.loads((Path(run_dir) / "eval.json").read_text())
        b = report["bounds"][0]
        table.append(f"| {k} | {b['mean']:.2f} ± {b['se']:.2f} | {report['recon']['mean']:.2f} | "
                     f"{report['kl']['mean']:.2f} | {report['codebook']['perplexity']:.1f} | "
                     f"{run_dir} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tile_images(torch.cat(rows), args.out, per_row=args.n, row_labels=labels, tile=0.5,
                title="VQ-VAE codebook size K: test images, reconstructions (rec), prior samples (gen)")
    print("| codes K | bound (nats) | log p(x\\|z_q) | rate −log p(k) | perplexity | run |")
    print("|---:|---:|---:|---:|---:|---|")
    print("\n".join(table))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
