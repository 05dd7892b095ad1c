"""Compare inference objectives: same architecture, data, seed and epochs; one evaluator.

Each objective (``pyrovae.make_objective``) trains the same VAE with :func:`pyrovae.fit`;
every trained pair is then scored by the same test bound, :func:`pyrovae.evaluate`
with ``K = --eval-k`` particles, whatever it was trained with.  Reported per objective:
test ELBO and IWAE_K (± SE over test datapoints), active units, PSIS k̂ of the K weights,
wall time per epoch, and the signal-to-noise ratio of its own gradient estimator,

    SNR_j = |E[g_j]| / std(g_j)   per parameter component, median over the encoder's
                                  (guide's) and over the decoder's (model's) components,

from ``--snr-reps`` draws at the trained parameters on one fixed test minibatch.  A second
panel holds the parameters fixed (the first objective's trained pair) and compares the
estimators ``iwae:K`` and ``dreg:K`` across K, the setting of Rainforth et al. (2018) and
Tucker et al. (2019).

Published orderings (Burda et al. 2016, Table 1; Rainforth et al. 2018; Tucker et al. 2019):
iwae:K beats elbo in test log-likelihood and keeps more active units, increasingly with K;
IWAE's encoder SNR falls as K grows while DReG's does not.

    python scripts/compare_objectives.py --dataset mnist-sample --epochs 20 \\
        --objectives elbo,stl,iwae:5,dreg:5,iwae:50,dreg:50 --eval-k 5000 --out runs/objectives

Writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/compare_objectives.png``; each
finished objective is kept in ``OUT/<name>.json`` + ``.pt`` and reused with ``--resume``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import pyro
import torch

from pyrovae import (ModelConfig, TrainConfig, build_pair, evaluate, fit, load_dataset,
                     log_likelihood_bound, make_objective, save_figure)
from study import prepare


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist-sample")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--objectives", default="elbo,stl,iwae:5,dreg:5,iwae:50,dreg:50")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--eval-k", type=int, default=5000, help="particles of the test IWAE bound")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate the first N test images")
    p.add_argument("--pair-k", type=int, default=100,
                   help="K of the paired (same images, same noise) difference to the first objective")
    p.add_argument("--snr-reps", type=int, default=100, help="gradient draws per SNR estimate")
    p.add_argument("--snr-batch", type=int, default=32, help="test images in the SNR minibatch")
    p.add_argument("--snr-ks", default="1,5,50", help="K for the fixed-parameter SNR panel")
    p.add_argument("--out", default="runs/compare_objectives")
    p.add_argument("--resume", action="store_true", help="reuse finished objectives in OUT")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def gradient_snr(model, guide, name: str, x, y, *, reps: int) -> dict[str, float]:
    """Median over parameter components of |mean| / std of ``reps`` gradient draws."""
    objective = make_objective(name)
    groups = {"encoder": list(guide.parameters()), "decoder": list(model.parameters())}
    sums = {k: [torch.zeros_like(p, dtype=torch.float64) for p in ps] for k, ps in groups.items()}
    squares = {k: [torch.zeros_like(s) for s in v] for k, v in sums.items()}
    with pyro.validation_enabled(False):
        for _ in range(reps):
            for ps in groups.values():
                for p in ps:
                    p.grad = None
            objective.differentiable_loss(model, guide, x, y).backward()
            for k, ps in groups.items():
                for p, s, q in zip(ps, sums[k], squares[k]):
                    g = torch.zeros_like(s) if p.grad is None else p.grad.double()
                    s += g
                    q += g * g
    out = {}
    for k in groups:
        mean = torch.cat([s.flatten() for s in sums[k]]) / reps
        var = torch.cat([q.flatten() for q in squares[k]]) / reps - mean ** 2
        var = var * reps / max(reps - 1, 1)
        keep = var > 0  # components the estimator never moves carry no information
        out[k] = float((mean[keep].abs() / var[keep].sqrt()).median()) if keep.any() else float("nan")
    for ps in groups.values():
        for p in ps:
            p.grad = None
    return out


def _stem(out: Path, name: str) -> Path:
    return out / name.replace(":", "_")


def new_pair(data, args):
    torch.manual_seed(args.seed)  # every objective starts from the same initialization
    model_cfg = ModelConfig(latent_dim=args.latent_dim, hidden=args.hidden)
    return build_pair(model_cfg, x_dim=data.x_dim, num_classes=data.num_classes)


def run_one(name: str, data, args, out: Path) -> tuple[dict, object, object]:
    model, guide = new_pair(data, args)
    train_cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, device="cpu", objective=name)
    history = fit(model, guide, data, train_cfg, progress=not args.no_progress)
    x, y = data.test_x, data.test_y
    report = evaluate(model, guide, x, y, num_particles=(1, args.eval_k),
                      progress=not args.no_progress)
    rows = {r["K"]: r for r in report["bounds"]}
    torch.manual_seed(args.seed + 7)
    snr = gradient_snr(model, guide, name, data.test_x[:args.snr_batch],
                       data.test_y[:args.snr_batch], reps=args.snr_reps)
    units = report["active_units"].get("z", {})
    result = {
        "objective": name,
        "test_elbo": rows[1]["mean"], "test_elbo_se": rows[1]["se"],
        "test_iwae": rows[args.eval_k]["mean"], "test_iwae_se": rows[args.eval_k]["se"],
        "eval_k": args.eval_k, "active_units": units.get("active"), "latent_dim": units.get("dims"),
        "khat_median": report.get("psis", {}).get("khat_median"),
        "khat_frac_above_0.7": report.get("psis", {}).get("frac_above_0.7"),
        "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
        "snr_encoder": snr["encoder"], "snr_decoder": snr["decoder"],
        "final_train_loss": history[-1]["train_loss"],
        "history_test_elbo": [h["test_elbo"] for h in history],
    }
    _write_json(_stem(out, name).with_suffix(".json"), {"result": result, "report": report})
    tmp = _stem(out, name).with_suffix(".pt.tmp")
    torch.save({"model": model.state_dict(), "guide": guide.state_dict()}, tmp)
    os.replace(tmp, _stem(out, name).with_suffix(".pt"))
    return result, model, guide


def load_one(name: str, data, args, out: Path) -> tuple[dict, object, object]:
    """A finished objective's result and trained pair from OUT (``--resume``)."""
    model, guide = new_pair(data, args)
    state = torch.load(_stem(out, name).with_suffix(".pt"), weights_only=True)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    result = json.loads(_stem(out, name).with_suffix(".json").read_text())["result"]
    return result, model, guide


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def paired_differences(results, pairs, data, args) -> None:
    """``IWAE_pair_k(objective) - IWAE_pair_k(first objective)`` per test image, with the
    same particles' noise for every pair: its SE is far below the unpaired SEs."""
    x, y = data.test_x, data.test_y
    base = None
    for result, (model, guide) in zip(results, pairs):
        torch.manual_seed(args.seed + 13)
        b = log_likelihood_bound(model, guide, x, y, num_particles=args.pair_k).double()
        base = b if base is None else base
        d = b - base
        result["pair_k"] = args.pair_k
        result["delta_pair"] = float(d.mean())
        result["delta_pair_se"] = float(d.std() / math.sqrt(d.numel()))


def markdown(results: list[dict], snr_panel: dict, args) -> str:
    n = args.eval_limit or "all"
    lines = [f"Dataset `{args.dataset}`, {args.epochs} epochs, batch {args.batch_size}, "
             f"lr {args.lr}, seed {args.seed}, MLP 784-{args.hidden}-{args.latent_dim} "
             f"(Bernoulli decoder); test bounds over {n} test images, nats per image "
             f"± one SE over images.", "",
             f"| objective | test ELBO | test IWAE_{args.eval_k} | Δ IWAE_{args.pair_k} vs "
             f"`{results[0]['objective']}` (paired) | active units | PSIS k̂ (median) | "
             f"s / epoch | encoder SNR | decoder SNR |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        k = "–" if r["khat_median"] is None else f"{r['khat_median']:.2f}"
        lines.append(
            f"| `{r['objective']}` | {r['test_elbo']:.2f} ± {r['test_elbo_se']:.2f} | "
            f"{r['test_iwae']:.2f} ± {r['test_iwae_se']:.2f} | "
            f"{r['delta_pair']:+.2f} ± {r['delta_pair_se']:.2f} | {r['active_units']} / "
            f"{r['latent_dim']} | {k} | {r['seconds_per_epoch']:.2f} | "
            f"{r['snr_encoder']:.3f} | {r['snr_decoder']:.3f} |")
    if snr_panel:
        lines += ["", f"Gradient SNR (median over components, {args.snr_reps} draws) of each "
                      f"estimator at one fixed parameter point (the `{results[0]['objective']}`"
                      f"-trained pair):", "", "| estimator | encoder SNR | decoder SNR |",
                  "|---|---:|---:|"]
        lines += [f"| `{k}` | {v['encoder']:.3f} | {v['decoder']:.3f} |"
                  for k, v in snr_panel.items()]
    floor = math.sqrt(2 / math.pi) / math.sqrt(args.snr_reps)
    lines += ["", f"SNR noise floor: a component with zero true mean reads about {floor:.3f} "
                  f"with {args.snr_reps} draws."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], snr_panel: dict, path: Path, eval_k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["objective"] for r in results]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    pos = range(len(names))
    ax[0].errorbar(pos, [r["test_iwae"] for r in results], yerr=[r["test_iwae_se"] for r in results],
                   fmt="o", label=f"IWAE_{eval_k}")
    ax[0].errorbar(pos, [r["test_elbo"] for r in results], yerr=[r["test_elbo_se"] for r in results],
                   fmt="s", label="ELBO")
    ax[0].set(xticks=list(pos), ylabel="test bound (nats / image)", title="test log-likelihood bounds")
    ax[0].set_xticklabels(names, rotation=30)
    ax[0].legend()
    ax[1].bar(pos, [r["active_units"] or 0 for r in results])
    ax[1].set(xticks=list(pos), ylabel="active units", title="active units (Cov_x E_q[z] > 0.01)")
    ax[1].set_xticklabels(names, rotation=30)
    for est, marker in (("iwae", "o"), ("dreg", "s")):
        ks = sorted(int(k.split(":")[1]) for k in snr_panel if k.startswith(est + ":"))
        ax[2].plot(ks, [snr_panel[f"{est}:{k}"]["encoder"] for k in ks], "-", marker=marker,
                   label=f"{est} encoder")
    ks = sorted(int(k.split(":")[1]) for k in snr_panel if k.startswith("iwae:"))
    # DReG changes only the guide's gradient: the model's is IWAE's, draw by draw
    ax[2].plot(ks, [snr_panel[f"iwae:{k}"]["decoder"] for k in ks], "--", marker="^",
               color="grey", label="decoder (iwae = dreg)")
    ax[2].set(xscale="log", yscale="log", xlabel="K", ylabel="gradient SNR (median)",
              title="estimator SNR at fixed parameters")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = prepare(args)
    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    for n in names:
        make_objective(n)  # fail on a typo before any training
    data = load_dataset(args.dataset, data_dir=args.data_dir, device="cpu")
    if args.train_limit:
        data = dataclasses.replace(data, train_x=data.train_x[:args.train_limit],
                                   train_y=data.train_y[:args.train_limit])
    if args.eval_limit:  # also what fit's per-epoch test ELBO sees
        data = dataclasses.replace(data, test_x=data.test_x[:args.eval_limit],
                                   test_y=data.test_y[:args.eval_limit])
    results, pairs, first = [], [], None
    for name in names:
        done = all(_stem(out, name).with_suffix(s).exists() for s in (".json", ".pt"))
        if args.resume and done:
            result, model, guide = load_one(name, data, args, out)
        else:
            print(f"== {name}", file=sys.stderr)
            result, model, guide = run_one(name, data, args, out)
        results.append(result)
        pairs.append((model, guide))
        if first is None:
            first = (model, guide)
    paired_differences(results, pairs, data, args)
    snr_panel = {}
    x, y = data.test_x[:args.snr_batch], data.test_y[:args.snr_batch]
    for k in (int(s) for s in args.snr_ks.split(",") if s.strip()):
        for est in ("iwae", "dreg"):
            torch.manual_seed(args.seed + 11)
            snr_panel[f"{est}:{k}"] = gradient_snr(*first, f"{est}:{k}", x, y, reps=args.snr_reps)
    table = markdown(results, snr_panel, args)
    (out / "results.md").write_text(table)
    _write_json(out / "results.json", {"args": vars(args), "results": results, "snr_panel": snr_panel})
    plot(results, snr_panel, out / "compare_objectives.png", args.eval_k)
    print(table)
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'compare_objectives.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
