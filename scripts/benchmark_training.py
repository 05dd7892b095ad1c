"""How much does training through Pyro cost over hand-written torch?  Step time, side by side.

For the default 784-400-50 VAE (batch 128 and 512) this times, interleaved in one process
on the same data, one training step of

  (a) ``torch``  -- a hand-written plain-torch VAE: the same two MLPs, the Gaussian
      log-densities written out, the Bernoulli one as ``binary_cross_entropy_with_logits``
      (what a torch user writes), the same optimizer (it lives only here); and (a') the
      same with the Bernoulli code the registry's VAE uses, so that b/a' is the cost of
      Pyro's machinery alone;
  (b) ``pyrovae`` -- :class:`pyrovae.TrainStep`, the very object ``fit`` calls each
      step: the registry's pair, ``make_objective("elbo")``, loss from Pyro's traces,
      with the default engine (``auto``: the loss traced once per batch shape, checked
      against eager); (b') the same with ``--engine eager`` (Pyro's handlers every step);
  (c) ``pyro-idiom`` -- the common Pyro recipe (Pyro's VAE example): ``pyro.module`` in
      model/guide, ``SVI`` + ``Trace_ELBO`` + ``pyro.optim.Adam``, validation on;

plus ablations of (b') that each undo one of its savings, to show where overhead goes.
Every step includes what ``fit`` does around it (draw indices, binarize).  Rounds of
``--steps`` steps cycle through the variants; each ratio is taken within a round and the
median over rounds is reported (robust to a shared machine's drifting load).  On CPU both
wall time and this thread's CPU time are recorded (the CPU-time ratio is the one to trust
when other jobs share the cores).  Also reported: achieved GFLOP/s of each step as a
fraction of a measured fp32 GEMM peak.  Writes ``results/benchmark_training.json``.

    python scripts/benchmark_training.py                   # CPU, 1 thread, batch 128 and 512
    python scripts/benchmark_training.py --device cuda     # GPU (synchronised per round)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from torch import nn
from tqdm.auto import tqdm

from pyrovae import (ModelConfig, cpu_model, machine_info, TrainStep, bernoulli_log_prob, build_pair,
                     load_dataset, make_objective, make_optimizer, resolve_device)

LOG_2PI = 1.8378770664093453


# --- (a) the plain-torch reference ----------------------------------------------------

def textbook_log_lik(logits, x):
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="sum")


def model_log_lik(logits, x):
    """The Bernoulli log-density code the registry's VAE uses, called directly."""
    return bernoulli_log_prob(logits, x).sum()


class TorchVAE(nn.Module):
    """Kingma & Welling (2014) written out: -ELBO summed over the batch, one sample."""

    def __init__(self, encoder, decoder, latent_dim, log_lik=textbook_log_lik):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        self.log_lik = log_lik

    def forward(self, x):
        loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
        scale = F.softplus(raw) + 1e-5
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_px = self.log_lik(self.decoder(z), x)
        log_pz = -0.5 * (z.pow(2).sum() + z.numel() * LOG_2PI)
        log_qz = -0.5 * (eps.pow(2).sum() + z.numel() * LOG_2PI) - scale.log().sum()
        return -(log_px + log_pz - log_qz)


# --- (c) the common Pyro idiom (as in Pyro's VAE example) -----------------------------

class PyroExampleVAE(nn.Module):
    def __init__(self, encoder, decoder, latent_dim):
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim))
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).split(self.latent_dim, dim=-1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw) + 1e-5).to_event(1))


# --- the variants: each a function ``x -> None`` doing one optimizer step -------------

def make_variants(cfg: ModelConfig, x_dim: int, device, *, ablations: bool) -> dict:
    model, guide = build_pair(cfg, x_dim=x_dim, num_classes=10)
    model.to(device), guide.to(device)
    nets = lambda: (copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder))  # noqa: E731

    def torch_step(log_lik):
        ref = TorchVAE(*nets(), cfg.latent_dim, log_lik)
        opt = make_optimizer(ref.parameters(), lr=1e-3)

        def step(x, y):
            loss = ref(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def trainer(pair, *, objective=None, direct=True, handlers=(), foreach=False,
                engine="auto"):
        params = [p for m in pair for p in m.parameters()]
        opt = (torch.optim.Adam(params, lr=1e-3, foreach=True) if foreach
               else make_optimizer(params, lr=1e-3))
        step = TrainStep(*pair, objective or make_objective("elbo"), opt, handlers=handlers,
                         engine=engine)
        if not direct:  # undo the PyroModule bypass
            step.loss_module._calls = pair
        return lambda x, y: step(x, y)

    copy_pair = lambda: (copy.deepcopy(model), copy.deepcopy(guide))  # noqa: E731
    variants = {"torch": torch_step(textbook_log_lik), "pyrovae": trainer((model, guide)),
                "pyrovae --engine eager": trainer(copy_pair(), engine="eager"),
                "torch, the model's Bernoulli code": torch_step(model_log_lik)}

    example = PyroExampleVAE(*nets(), cfg.latent_dim)
    pyro.clear_param_store()
    svi = SVI(example.model, example.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    variants["pyro-idiom"] = lambda x, y: svi.step(x)
    if ablations:
        idle = contextlib.nullcontext()  # any extra handler puts the β handler on the stack
        variants.update({
            "eager, Pyro's Trace_ELBO (host syncs)": trainer(copy_pair(), objective=_Plain(),
                                                            engine="eager"),
            "eager, PyroModule.__call__": trainer(copy_pair(), direct=False, engine="eager"),
            "eager, idle handler": trainer(copy_pair(), handlers=(idle,), engine="eager"),
            "eager, foreach Adam": trainer(copy_pair(), foreach=True, engine="eager"),
            "eager, none of the savings": trainer(copy_pair(), objective=_Plain(), direct=False,
                                                  handlers=(idle,), foreach=True, engine="eager"),
        })
    return variants


class _Plain(Trace_ELBO):
    """Pyro's own Trace_ELBO, kept from being swapped for the sync-free twin."""


# --- measurement -----------------------------------------------------------------------

def gemm_flops(cfg: ModelConfig, x_dim: int, batch: int) -> float:
    """Multiply-adds x 2 of one step's GEMMs: forward, weight grads, input grads (not x's)."""
    layers = [(x_dim, cfg.hidden), (cfg.hidden, 2 * cfg.latent_dim),
              (cfg.latent_dim, cfg.hidden), (cfg.hidden, x_dim)]
    return sum(2 * batch * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(layers))


def gemm_peak(device, clock, *, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n x n matmul on ``device``, timed by ``clock``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = clock()
        a @ b
        _sync(device)
        best = min(best, clock() - t)
    return 2 * n ** 3 / best / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(variants: dict, data, batch: int, *, rounds: int, steps: int, warmup: int) -> dict:
    """Per variant, lists over rounds of the mean step time (wall and thread CPU), seconds."""
    device, n = data.train_x.device, data.train_x.shape[0]
    gen = torch.Generator(device=device).manual_seed(0)

    def run(fn, k):
        for _ in range(k):
            idx = torch.randint(n, (batch,), generator=gen, device=device)
            fn(torch.bernoulli(data.train_x[idx], generator=gen), data.train_y[idx])

    for name, fn in variants.items():
        with pyro.validation_enabled(name == "pyro-idiom"):
            run(fn, warmup)
    times = {name: {"wall": [], "cpu": []} for name in variants}
    names = list(variants)
    for r in tqdm(range(rounds), desc=f"batch {batch}", leave=False):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            # fit trains with validation off; the Pyro idiom keeps Pyro's default (on)
            with pyro.validation_enabled(name == "pyro-idiom"):
                _sync(device)
                w, c = time.perf_counter(), time.thread_time()
                run(variants[name], steps)
                _sync(device)
            times[name]["wall"].append((time.perf_counter() - w) / steps)
            times[name]["cpu"].append((time.thread_time() - c) / steps)
    return times


def summarise(times: dict, flops: float, peak: float, clock: str) -> dict:
    out = {}
    for name, t in times.items():
        row = {}
        for clock in ("wall", "cpu"):
            ratios = [v / a for v, a in zip(t[clock], times["torch"][clock])]
            row[clock] = {"ms": 1e3 * statistics.median(t[clock]),
                          "ratio_to_torch": statistics.median(ratios),
                          "ratio_ci95": _bootstrap_median_ci(ratios)}
        row["gemm_fraction_of_peak"] = flops / (row[clock]["ms"] / 1e3) / 1e9 / peak
        out[name] = row
    return out


def _bootstrap_median_ci(values, *, resamples: int = 2000) -> list[float]:
    """95% bootstrap interval of the median over rounds."""
    g = torch.Generator().manual_seed(0)
    v = torch.tensor(values, dtype=torch.float64)
    idx = torch.randint(len(values), (resamples, len(values)), generator=g)
    medians = v[idx].median(dim=1).values
    return [float(medians.quantile(0.025)), float(medians.quantile(0.975))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--hidden", type=int, default=400)
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--out", default="results/benchmark_training.json")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_dataset("mnist-sample", device=device)
    cfg = ModelConfig(hidden=args.hidden, latent_dim=args.latent_dim)
    # one thread on a CPU: its CPU time is what the step costs, whatever else the cores run
    clock = "cpu" if device.type == "cpu" and args.threads == 1 else "wall"
    peak = gemm_peak(device, time.thread_time if clock == "cpu" else time.perf_counter)
    report = {"device": _device_name(device), "machine": machine_info(device),
              "threads": torch.get_num_threads(),
              "torch": torch.__version__, "pyro": pyro.__version__,
              "python": platform.python_version(), "gemm_peak_gflops": peak,
              "headline_clock": clock,
              "model": f"{data.x_dim}-{cfg.hidden}-{cfg.latent_dim} MLP VAE, Bernoulli decoder",
              "rounds": args.rounds, "steps_per_round": args.steps, "batches": {}}
    print(f"{report['device']}, {report['threads']} thread(s); fp32 GEMM peak {peak:.1f} GFLOP/s "
          f"({clock} clock)")
    for batch in args.batch_sizes:
        variants = make_variants(cfg, data.x_dim, device,
                                 ablations=not args.no_ablations and batch == 128)
        times = measure(variants, data, batch, rounds=args.rounds, steps=args.steps,
                        warmup=args.warmup)
        flops = gemm_flops(cfg, data.x_dim, batch)
        rows = summarise(times, flops, peak, clock)
        report["batches"][str(batch)] = {"gemm_gflop_per_step": flops / 1e9, "variants": rows}
        print(f"\nbatch {batch}: {'variant':<42}{'wall ms':>9}{'x torch':>9}{'cpu ms':>9}"
              f"{'x torch':>9}{'(95% CI)':>15}{'GEMM/peak':>11}")
        for name, r in rows.items():
            lo, hi = r[clock]["ratio_ci95"]
            print(f"{'':9}{name:<42}{r['wall']['ms']:9.2f}{r['wall']['ratio_to_torch']:9.3f}"
                  f"{r['cpu']['ms']:9.2f}{r['cpu']['ratio_to_torch']:9.3f}"
                  f"{f'({lo:.3f}-{hi:.3f})':>15}{r['gemm_fraction_of_peak']:11.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


def _device_name(device) -> str:
    return machine_info(device).get("gpu") or cpu_model()


if __name__ == "__main__":
    main()
