"""Swap priors and guides: every prior x every guide, same data, budget, seed and evaluator.

Each pair is built from names (``ModelConfig(prior=..., guide=...)``), trained by
:func:`pyrovae.fit` into a run directory ``OUT/<prior>-<guide>/`` (loadable with
``pyrovae.load_run``, reusable by ``scripts/amortization_gap.py``), then scored by
one test bound, :func:`pyrovae.evaluate` with K = ``--eval-k`` particles.
Reported per pair: test ELBO and IWAE_K (± SE over test images), the gap IWAE_K − ELBO
(paired SE), IWAE_K minus the same guide's standard-prior IWAE_K (paired SE over the
same images, from a second per-image pass), active units, PSIS k̂, training seconds.

Published orderings to check:
- richer guides shrink the ELBO-to-IWAE gap (Kingma et al. 2016 for IAF; Cremer et al. 2018);
- VampPrior and mixture priors beat N(0, I) in test log-likelihood (Tomczak & Welling 2018).

    python scripts/swap_priors_and_guides.py --dataset mnist-sample --epochs 30 \\
        --eval-k 1000 --out runs/swap

Writes ``OUT/swap.md``, ``OUT/swap.json`` and ``OUT/swap.png``; finished pairs are reused
with ``--resume``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from pyrovae import (ModelConfig, RunConfig, TrainConfig, build_pair, evaluate, fit,
                     load_dataset, log_likelihood_bound, registry, save_figure)
from study import prepare


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default="vae", help="vae or cvae")
    p.add_argument("--priors", default="standard,mog,vamp,flow")
    p.add_argument("--guides", default="diagonal,fullcov,iaf")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--num-components", type=int, default=10, help="mog prior")
    p.add_argument("--num-pseudo-inputs", type=int, default=100, help="vamp prior")
    p.add_argument("--flow-layers", type=int, default=2, help="flow prior and iaf guide")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--eval-k", type=int, default=1000, help="particles of the test IWAE bound")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N test images")
    p.add_argument("--out", default="runs/swap")
    p.add_argument("--resume", action="store_true", help="reuse finished pairs in OUT")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run_config(prior: str, guide: str, args) -> RunConfig:
    model = ModelConfig(model=args.model, prior=prior, guide=guide, latent_dim=args.latent_dim,
                        hidden=args.hidden, num_components=args.num_components,
                        num_pseudo_inputs=args.num_pseudo_inputs, flow_layers=args.flow_layers)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, device="cpu")
    return RunConfig(dataset=args.dataset, data_dir=args.data_dir, model=model, train=train)


def test_set(data, args):
    x, y = data.test_x, data.test_y
    return (x[:args.eval_limit], y[:args.eval_limit]) if args.eval_limit else (x, y)


def run_one(prior: str, guide_name: str, data, args, out: Path) -> dict:
    cfg = run_config(prior, guide_name, args)
    run_dir = out / f"{prior}-{guide_name}"
    if run_dir.exists():  # a rerun starts clean (fit appends to metrics.jsonl)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(cfg.to_json())
    torch.manual_seed(args.seed)  # the same initialization stream for every pair
    model, guide = build_pair(cfg.model, x_dim=data.x_dim, num_classes=data.num_classes)
    history = fit(model, guide, data, cfg.train, run_dir=run_dir, config_json=cfg.to_json(),
                  progress=not args.no_progress)
    x, y = test_set(data, args)
    torch.manual_seed(args.seed + 1)
    report = evaluate(model, guide, x, y, num_particles=(1, args.eval_k),
                      progress=not args.no_progress)
    torch.manual_seed(args.seed + 2)
    per_image = log_likelihood_bound(model, guide, x, y, num_particles=args.eval_k).double()
    torch.save(per_image.cpu(), run_dir / "iwae_per_image.pt")
    rows = {r["K"]: r for r in report["bounds"]}
    units = report["active_units"].get("z", {})
    psis = report.get("psis", {})
    result = {
        "prior": prior, "guide": guide_name, "run_dir": str(run_dir),
        "test_elbo": rows[1]["mean"], "test_elbo_se": rows[1]["se"],
        "test_iwae": rows[args.eval_k]["mean"], "test_iwae_se": rows[args.eval_k]["se"],
        "gap": rows[args.eval_k]["gain"], "gap_se": rows[args.eval_k]["gain_se"],
        "kl": report.get("kl", {}).get("mean"),
        "active_units": units.get("active"), "latent_dim": units.get("dims"),
        "khat_median": psis.get("khat_median"), "khat_frac_above_0.7": psis.get("frac_above_0.7"),
        "train_seconds": sum(h["seconds"] for h in history),
        "history_test_elbo": [h["test_elbo"] for h in history],
    }
    _write_json(run_dir / "swap_result.json", {"result": result, "report": report})
    return result


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def add_paired_differences(results: list[dict], out: Path) -> None:
    """IWAE_K of each pair minus the standard prior's with the same guide, per image."""
    base = {r["guide"]: torch.load(Path(r["run_dir"]) / "iwae_per_image.pt", weights_only=True)
            for r in results if r["prior"] == "standard"}
    for r in results:
        if r["guide"] in base and r["prior"] != "standard":
            d = torch.load(Path(r["run_dir"]) / "iwae_per_image.pt", weights_only=True) - base[r["guide"]]
            r["vs_standard"], r["vs_standard_se"] = float(d.mean()), float(d.std() / len(d) ** 0.5)


def markdown(results: list[dict], args, n_train: int, n_test: int) -> str:
    lines = [f"Dataset `{args.dataset}` ({n_train} training images, dynamic binarization; "
             f"{n_test} fixed-binarized test images), model `{args.model}`, MLP 784-"
             f"{args.hidden}-{args.latent_dim}, {args.epochs} epochs, batch {args.batch_size}, "
             f"lr {args.lr}, seed {args.seed} for every pair; mog K={args.num_components}, vamp "
             f"{args.num_pseudo_inputs} pseudo-inputs, {args.flow_layers} flow layers (flow prior "
             f"and IAF guide).  Nats per image, ± one SE over test images; the gap and Δ columns "
             f"are paired over the same images.", "",
             f"| prior | guide | test ELBO | test IWAE_{args.eval_k} | gap IWAE − ELBO | "
             f"Δ IWAE vs standard prior | KL | active units | PSIS k̂ median (>0.7) | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        vs = (f"{r['vs_standard']:+.2f} ± {r['vs_standard_se']:.2f}" if "vs_standard" in r else "–")
        k = ("–" if r["khat_median"] is None else
             f"{r['khat_median']:.2f} ({100 * r['khat_frac_above_0.7']:.0f}%)")
        lines.append(f"| {r['prior']} | {r['guide']} | {r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f} "
                     f"| {r['test_iwae']:.2f} ± {r['test_iwae_se']:.2f} | {r['gap']:.2f} ± "
                     f"{r['gap_se']:.2f} | {vs} | {r['kl']:.2f} | {r['active_units']} / "
                     f"{r['latent_dim']} | {k} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path, eval_k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priors = list(dict.fromkeys(r["prior"] for r in results))
    guides = list(dict.fromkeys(r["guide"] for r in results))
    by = {(r["prior"], r["guide"]): r for r in results}
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(guides)
    for j, g in enumerate(guides):
        pos = [i + (j - (len(guides) - 1) / 2) * width for i in range(len(priors))]
        rs = [by.get((p, g)) for p in priors]
        ax[0].errorbar(pos, [r["test_iwae"] if r else float("nan") for r in rs],
                       yerr=[r["test_iwae_se"] if r else 0 for r in rs], fmt="o", label=g)
        ax[1].bar(pos, [r["gap"] if r else 0 for r in rs], width,
                  yerr=[r["gap_se"] if r else 0 for r in rs], label=g)
    for a, title in ((ax[0], f"test IWAE_{eval_k} (nats / image, ± SE)"),
                     (ax[1], f"gap IWAE_{eval_k} − ELBO (nats, paired SE)")):
        a.set_xticks(range(len(priors)))
        a.set_xticklabels(priors)
        a.set_xlabel("prior")
        a.set_title(title, fontsize=10)
        a.legend(title="guide", fontsize=8)
        a.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    prepare(args)
    priors = [s.strip() for s in args.priors.split(",") if s.strip()]
    guides = [s.strip() for s in args.guides.split(",") if s.strip()]
    for p in priors:
        registry.get("prior", p)  # fail on a typo before any training
    for g in guides:
        registry.get("guide", g)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, data_dir=args.data_dir, device="cpu")
    if args.train_limit:
        data = dataclasses.replace(data, train_x=data.train_x[:args.train_limit],
                                   train_y=data.train_y[:args.train_limit])
    results = []
    for prior in priors:
        for guide in guides:
            done = out / f"{prior}-{guide}" / "swap_result.json"
            if args.resume and done.exists():
                results.append(json.loads(done.read_text())["result"])
                continue
            print(f"== prior {prior}, guide {guide}", file=sys.stderr)
            results.append(run_one(prior, guide, data, args, out))
    add_paired_differences(results, out)
    table = markdown(results, args, len(data.train_x), len(test_set(data, args)[0]))
    (out / "swap.md").write_text(table)
    _write_json(out / "swap.json", {"args": vars(args), "results": results})
    plot(results, out / "swap.png", args.eval_k)
    print(table)
    print(f"wrote {out / 'swap.md'}, {out / 'swap.json'}, {out / 'swap.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
