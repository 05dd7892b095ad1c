#!/usr/bin/env python
"""The semi-supervised VAE (M2) on Fashion-MNIST with few labels: accuracy and log p(x).

For each number of labels: train ``ssvae`` (labels summed by enumeration, objective
``enum``; optionally also sampled, ``elbo``) with the classification loss alpha per
labelled image, then report the test accuracy of q(y | x) on the whole test set, the
IWAE_K bound on log p(x) with y summed (first ``--num-test`` images), and seconds per
epoch.  ``--baseline FILE`` adds the rows of Pyro's own ``examples/vae/ss_vae_M2.py`` run
on the same IDX files (JSON lines, see docs/ssvae.md for how they were made).

    python scripts/ssvae_study.py --labels 100 600 1000 3000 --epochs 10 --sampled 600
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyrovae import (ModelConfig, TrainConfig, build_pair, class_names, evaluate, fit,
                     label_accuracy, load_dataset, plot_class_grid,
                     plot_style_transfer, save_figure, with_labels)
from study import read_jsonl, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--dataset", default="fashion-mnist", help="pyrovae dataset name")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--sampled", type=int, nargs="*", default=[600],
                   help="label counts also trained with y sampled (objective elbo)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--alpha", type=float, default=46.0, help="classification loss weight "
                   "per labelled image (Pyro's example uses 46)")
    p.add_argument("--hidden", type=int, default=500)
    p.add_argument("--activation", default="softplus", help="hidden activation (Pyro's "
                   "example: softplus)")
    p.add_argument("--lr", type=float, default=4.2e-4, help="Adam learning rate (Pyro's "
                   "example: 0.00042)")
    p.add_argument("--init-scale", type=float, default=0.1, help="q(z|x,y)'s sigma at "
                   "initialization (pyrovae's default 0.1); 0: PyTorch's init, sigma about 1, as "
                   "in Pyro's example (better at 100 labels, docs/ssvae.md)")
    p.add_argument("--likelihood", default="bernoulli", help="bernoulli (binarized images) or "
                   "logistic (the 256 grey levels, as Pyro's example's classifier sees them)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--k", type=int, default=100, help="IWAE particles for log p(x)")
    p.add_argument("--num-test", type=int, default=1000, help="test images for log p(x)")
    p.add_argument("--baseline", default=None, help="JSON lines of Pyro's example runs")
    p.add_argument("--out", default="results/ssvae")
    p.add_argument("--figures", default="docs/figures")
    p.add_argument("--seed", type=int, default=0, help="seed of initialization and minibatch "
                   "order (the labelled split stays seed 0's)")
    p.add_argument("--train-size", type=int, default=None, help="train on the first N training "
                   "images only (Pyro's example holds the last 10,000 out: 50000)")
    p.add_argument("--label-passes", type=int, default=1, help="passes over the labelled "
                   "images per epoch (1: Pyro's example)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(n_labels: int, objective: str, args, data, held=None) -> tuple[dict, object, object]:
    """Train and evaluate one M2; ``held``: ``(x, y)`` of held-out training images, whose
    accuracy is the validation accuracy (for choices that must not look at the test set)."""
    pyro.set_rng_seed(args.seed)
    model, guide = build_pair(ModelConfig(model="ssvae", guide="ssvae", hidden=args.hidden,
                                          likelihood=args.likelihood, activation=args.activation,
                                          init_scale=args.init_scale),
                              x_dim=data.x_dim)
    # never a batch larger than the labelled set, so that every step has one size (the
    # rule Pyro's example imposes: its labelled count must be a multiple of the batch)
    batch = min(args.batch_size, n_labels)
    cfg = TrainConfig(epochs=args.epochs, batch_size=batch, objective=objective,
                      alpha=args.alpha, lr=args.lr, seed=args.seed,
                      label_passes=args.label_passes)
    history = fit(model, guide, with_labels(data, n_labels, seed=0), cfg,
                  progress=not args.no_progress)
    acc = label_accuracy(guide, data.test_x, data.test_y)
    valid = label_accuracy(guide, *held)["accuracy"] if held is not None else None
    torch.manual_seed(0)
    report = evaluate(model, guide, data.test_x[:args.num_test], num_particles=(1, args.k),
                      progress=not args.no_progress)
    rows = {r["K"]: r for r in report["bounds"]}
    return ({"labels": n_labels, "y": "enumerated" if objective == "enum" else "sampled",
             "batch_size": batch, "label_passes": args.label_passes, "seed": args.seed,
             "validation_accuracy": valid,
             "accuracy": acc["accuracy"], "accuracy_se": acc["se"],
             "iwae": rows[args.k]["mean"], "iwae_se": rows[args.k]["se"],
             "elbo": rows[1]["mean"], "seconds_per_epoch": sum(h["seconds"] for h in history)
             / len(history)}, model, guide)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, data_dir=args.data_dir, likelihood=args.likelihood)
    held = None
    if args.train_size is not None:
        if not 0 < args.train_size <= len(data.train_x):
            raise SystemExit(f"--train-size must be in 1..{len(data.train_x)} (the training set), "
                             f"got {args.train_size}")
        if args.train_size < len(data.train_x):  # held out: a validation set, as the example's
            held = (data.train_x[args.train_size:], data.train_y[args.train_size:])
        data = dataclasses.replace(data, train_x=data.train_x[:args.train_size],
                                   train_y=data.train_y[:args.train_size],
                                   train_factors=None if data.train_factors is None
                                   else data.train_factors[:args.train_size])
    rows, last = [], None
    for n in args.labels:
        row, model, guide = run(n, "enum", args, data, held)
        rows.append(row)
        last = (model, guide)
        print(row)
    for n in args.sampled:
        rows.append(run(n, "elbo", args, data, held)[0])
        print(rows[-1])
    baseline = read_jsonl(args.baseline) if args.baseline else []
    names = class_names(args.dataset)
    figures = Path(args.figures)
    model, guide = last
    plot_class_grid(model, figures / "ssvae_class_grid.png", names=names,
                    title=f"M2, {args.labels[-1]} labels: one row per class, z shared per column")
    plot_style_transfer(model, guide, data.test_x[:8], data.test_y[:8],
                        figures / "ssvae_style_transfer.png", names=names)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    for kind, style in (("enumerated", "o-"), ("sampled", "s")):
        pts = [r for r in rows if r["y"] == kind]
        ax.plot([r["labels"] for r in pts], [r["accuracy"] for r in pts], style,
                label=f"pyrovae ssvae, y {kind}")
    for kind, style in (("parallel", "^--"), ("none", "v")):
        pts = [b for b in baseline if b["enum"] == kind]
        if pts:
            ax.plot([b["sup"] for b in pts], [b["test_accuracy"][-1] for b in pts], style,
                    label=f"Pyro ss_vae_M2.py, {'enumerated' if kind == 'parallel' else 'sampled'}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy of q(y|x)")
    ax.set_title(f"{args.dataset}, {args.epochs} epochs", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, figures / "ssvae_accuracy.png")
    lines = [f"{args.dataset} ({args.likelihood} likelihood), {args.epochs} epochs, batch "
             f"min({args.batch_size}, labels), alpha {args.alpha} per labelled image, "
             f"{args.activation}, Adam {args.lr:g}, initial guide sigma "
             f"{args.init_scale or 'PyTorch init'}; accuracy on the whole test set; log p(x) "
             f"bound IWAE_{args.k} with y summed, first {args.num_test} test images.", "",
             "| labels | y in training | batch | test accuracy | IWAE (nats) | ELBO | s / epoch |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['labels']} | {r['y']} | {r['batch_size']} | "
              f"{r['accuracy']:.4f} ± {r['accuracy_se']:.4f} | "
              f"{r['iwae']:.2f} ± {r['iwae_se']:.2f} | {r['elbo']:.2f} | "
              f"{r['seconds_per_epoch']:.0f} |" for r in rows]
    if baseline:
        lines += ["", "Pyro's `examples/vae/ss_vae_M2.py` on the same IDX files, same epochs "
                  "(its own defaults otherwise):", "",
                  "| labels | y | batch | test accuracy (last epoch) | s / epoch |",
                  "|---:|---|---:|---:|---:|"]
        lines += [f"| {b['sup']} | {'enumerated' if b['enum'] == 'parallel' else 'sampled'} | "
                  f"{b.get('batch_size', 200)} | {b['test_accuracy'][-1]:.4f} | "
                  f"{sum(b['seconds_per_epoch']) / len(b['seconds_per_epoch']):.0f} |"
                  for b in baseline]
    print(write_results(args.out, {"rows": rows, "baseline": baseline, "args": vars(args)}, lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
