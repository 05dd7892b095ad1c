#!/usr/bin/env python
"""M2 at 100 labels, seed by seed: Pyro's example, pyrovae with one pass over the labels,
and pyrovae with ``--label-passes``, from the JSON lines the runs wrote (docs/ssvae.md).

    python scripts/ssvae_seeds_figure.py        # -> docs/figures/ssvae_seeds_100.png
"""
from __future__ import annotations

import argparse
import statistics
import sys

import matplotlib.pyplot as plt

from pyrovae import save_figure
from study import read_jsonl


def groups(args) -> dict[str, list[float]]:
    """Test accuracies per seed, by who trained and how."""
    example = {r["seed"]: r["test_accuracy"][-1] for r in read_jsonl(args.example)}
    for r in read_jsonl(args.baseline):  # the example's seed-0 run
        if r["sup"] == args.labels and r["enum"] == "parallel":
            example.setdefault(r.get("seed", 0), r["test_accuracy"][-1])
    one = [r["test_accuracy"] for r in read_jsonl(args.one_pass)
           if r["labels"] == args.labels and r["train_size"] == 60000]
    passes = [r["accuracy"] for r in read_jsonl(args.passes)
              if r["labels"] == args.labels and r["label_passes"] == args.label_passes]
    return {"Pyro's ss_vae_M2.py\n(one pass)": list(example.values()),
            "pyrovae\none pass": one,
            f"pyrovae\n--label-passes {args.label_passes}": passes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--example", default="results/ssvae_pyro_seeds.jsonl")
    p.add_argument("--baseline", default="results/ssvae_pyro_baseline.jsonl")
    p.add_argument("--one-pass", default="results/ssvae_seeds_100.jsonl")
    p.add_argument("--passes", default="results/ssvae_label_passes.jsonl")
    p.add_argument("--labels", type=int, default=100)
    p.add_argument("--label-passes", type=int, default=100)
    p.add_argument("--out", default="docs/figures/ssvae_seeds_100.png")
    args = p.parse_args(argv)
    data = groups(args)
    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=110)
    for i, (name, acc) in enumerate(data.items()):
        if not acc:
            raise SystemExit(f"no runs for {name!r} in the given files")
        ax.plot([i + 0.06 * ((j % 5) - 2) for j in range(len(acc))], acc, "o", alpha=0.6)
        mean = statistics.mean(acc)
        se = statistics.stdev(acc) / len(acc) ** 0.5 if len(acc) > 1 else 0.0
        ax.errorbar(i + 0.3, mean, yerr=se, fmt="k_", capsize=4)
        ax.annotate(f"{mean:.3f}\n± {se:.3f}\n({len(acc)} seeds)", (i + 0.36, mean),
                    fontsize=7, va="center")
    ax.set_xticks(range(len(data)), list(data), fontsize=7)
    ax.set_xlim(-0.4, len(data) + 0.1)
    ax.set_ylabel("test accuracy of q(y|x)")
    ax.set_title(f"M2, Fashion-MNIST, {args.labels} labels, 5 epochs: one point per seed",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
