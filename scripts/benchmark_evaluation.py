"""How fast is ``pyrovae.evaluate``?  IWAE_5000 on 1,000 test digits, against the GEMM peak.

For the default 784-400-50 VAE (untrained weights unless ``--run`` names a trained run;
the cost does not depend on the weights) this measures, in one process:

  (a) the fp32 GEMM peak of this machine: a plain 2048³ matmul and the decoder's own
      [rows x 400] @ [400 x 784] GEMM at the evaluator's chunk size, with torch's MKL and,
      where ``pyrovae.gemm`` measured it faster, oneDNN's packed linear (best of all, before
      and after the evaluation, so a busier moment cannot flatter the ratio);
  (b) ``evaluate(model, guide, x, num_particles=(1, 10, 100, 1000, 5000))`` -- the whole
      report, PSIS included -- and its achieved GFLOP/s, counting every encoder and
      decoder GEMM it runs (probes included): decoder 2(L·H + H·D) per particle and
      datapoint, encoder 2(D·H + H·2L) per datapoint per chunk of particles;
  (c) the same evaluator with Pyro's ``Bernoulli(logits).to_event(1)`` as the observation
      (what ``pyrovae.distributions.IndependentBernoulli`` replaces), on a subset;
  (d) a naive loop: one datapoint, one particle, one pair of Pyro traces at a time;
  (e) Pyro's ``vectorized_importance_weights``, one datapoint at a time (K vectorized);
  (f) AIS (``ais_log_likelihood``, ``--ais-data`` datapoints x ``--ais-chains`` chains as
      one batch, ``--ais-steps`` steps of 10 leapfrogs): decoder passes per second and the
      fraction of the GEMM peak, counting each log-joint gradient as a decoder forward plus
      its input gradient, 2 x 2(L·H + H·D) flops (weight gradients are not needed).
  (g) ``evaluate`` with ``num_particles=--target-particles`` (1000) alone on the N digits
      (median of ``--rounds`` runs),
      beside (h) Pyro's ``RenyiELBO(alpha=0, num_particles=K)`` on the same weights (for
      this pair minus the sum of the same per-datapoint bounds), on ``--renyi-data``
      datapoints, 10 per call; and the fp32 floor: the decoder's GEMM flops at peak (a).
      (h) is timed side by side: ``--rounds`` interleaved rounds of evaluate and Renyi on
      the same datapoints, medians, for this pair and for the pair of (c), and the
      evaluator with torch's MKL GEMM beside its measured choice (pyrovae.gemm).
      Where the CPU has bf16 instructions, (g) and (h) also run ``precision="bfloat16"``
      (opt-in: GEMM inputs rounded to bf16, float32 sums) and the JSON gives the paired
      change of the bound it causes (same seed, same noise draws).
(c)-(e) and (h) run on fewer datapoints/particles and are extrapolated linearly to N x K.
Targets (issue 4): (b) >= 60% of (a), and >= 10x faster than (d); (issue 19): (g) <= 3 s
wall at two threads.

With one thread (the default) every time is this thread's CPU time, which is what the work
costs whatever else shares the cores; with more threads, wall time.

    python scripts/benchmark_evaluation.py                      # ~2 CPU-minutes, 1 thread
    python scripts/benchmark_evaluation.py --threads 2          # wall clock, both cores
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import RenyiELBO
from pyro.infer.importance import vectorized_importance_weights

from pyrovae import (ModelConfig, ais_log_likelihood, build_pair, evaluate, load_dataset,
                     machine_info, make_plan)
from pyrovae.gemm import bf16_supported, cpu_gemm, fast_linear, set_cpu_gemm
from pyrovae.models import VAE


class PyroBernoulliVAE(VAE):
    """The same VAE with Pyro's Bernoulli observation, for comparison (c)."""

    def forward(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


def gemm_peak(clock, *, rows: int, repeats: int = 5, device="cpu") -> dict:
    """Best GFLOP/s of a 2048³ matmul and of the decoder's output-layer GEMM shape."""
    out = {}
    for name, (m, k, n) in {"2048^3": (2048, 2048, 2048),
                            f"decoder {rows}x400x784": (rows, 400, 784)}.items():
        a, b, bias = (torch.randn(m, k, device=device), torch.randn(n, k, device=device),
                      torch.randn(n, device=device))
        best = float("inf")
        for _ in range(repeats):
            t = clock()
            torch.addmm(bias, a, b.T)
            best = min(best, clock() - t)
        out[name] = 2 * m * k * n / best / 1e9
        if name.startswith("decoder") and torch.device(device).type == "cpu" \
                and cpu_gemm() == "onednn":  # the library the evaluator measured faster
            best = float("inf")
            lin = torch.nn.Linear(k, n, device=device)
            with torch.no_grad(), fast_linear(lin):
                lin.weight.copy_(b), lin.bias.copy_(bias)
                for _ in range(repeats):
                    t = clock()
                    lin(a)
                    best = min(best, clock() - t)
            out[name + " onednn"] = 2 * m * k * n / best / 1e9
    return out


def naive_loop(model, guide, x, num_particles: int) -> torch.Tensor:
    """log p̂_K(x) one datapoint and one particle at a time (what (d) times)."""
    out = []
    for i in range(len(x)):
        xi, lw = x[i:i + 1], []
        for _ in range(num_particles):
            g = poutine.trace(guide).get_trace(xi)
            m = poutine.trace(poutine.replay(model, trace=g)).get_trace(xi)
            lw.append(m.log_prob_sum() - g.log_prob_sum())
        out.append(torch.logsumexp(torch.stack(lw), 0) - math.log(num_particles))
    return torch.stack(out)


def pyro_vectorized(model, guide, x, num_particles: int) -> torch.Tensor:
    """Pyro's own vectorized weights; one joint weight per batch, so one datapoint a time."""
    out = []
    for i in range(len(x)):
        lw, _, _ = vectorized_importance_weights(model, guide, x[i:i + 1], None,
                                                 num_samples=num_particles, max_plate_nesting=1)
        out.append(torch.logsumexp(lw, 0) - math.log(num_particles))
    return torch.stack(out)


def timed(clock, fn, *args, **kwargs):
    t = clock()
    result = fn(*args, **kwargs)
    return result, clock() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-data", type=int, default=1000)
    p.add_argument("--num-particles", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pyro-bernoulli-data", type=int, default=64, help="datapoints for (c)")
    p.add_argument("--naive-data", type=int, default=2, help="datapoints for (d)")
    p.add_argument("--naive-particles", type=int, default=100, help="particles for (d)")
    p.add_argument("--vectorized-data", type=int, default=8, help="datapoints for (e)")
    p.add_argument("--ais-data", type=int, default=100, help="datapoints for (f)")
    p.add_argument("--ais-chains", type=int, default=16)
    p.add_argument("--ais-steps", type=int, default=10)
    p.add_argument("--target-particles", type=int, default=1000, help="K of (g) and (h)")
    p.add_argument("--renyi-data", type=int, default=200, help="datapoints for (h)")
    p.add_argument("--rounds", type=int, default=5, help="runs of (g), interleaved rounds of (h)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: wall clock, "
                   "synchronised")
    p.add_argument("--out", default="results/benchmark_evaluation.json")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        def clock():
            torch.cuda.synchronize()
            return time.perf_counter()
    else:
        clock = time.thread_time if args.threads == 1 else time.perf_counter
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    data = load_dataset("mnist-sample", device=device)
    x = data.test_x[:args.num_data]
    n, big_k = len(x), args.num_particles
    cfg = ModelConfig()
    model, guide = build_pair(cfg, x_dim=data.x_dim, num_classes=data.num_classes)
    model.to(device), guide.to(device)
    D, H, L = data.x_dim, cfg.hidden, cfg.latent_dim
    with torch.no_grad():
        chunk = make_plan(model, guide, (x[:args.batch_size],)).auto_chunk_size()
    rows = chunk * args.batch_size
    load = [os.getloadavg()[0]]

    evaluate(model, guide, x[:2], num_particles=(1, 2), progress=False)  # imports, warm-up
    gemm_choice = cpu_gemm() if device.type == "cpu" else "device"
    peaks = [gemm_peak(clock, rows=rows, device=device)]
    ks = tuple(k for k in (1, 10, 100, 1000, 5000) if k < big_k) + (big_k,)
    report, t_eval = timed(clock, evaluate, model, guide, x, num_particles=ks,
                           batch_size=args.batch_size)
    kt = args.target_particles
    target_runs = [timed(clock, evaluate, model, guide, x, num_particles=kt,
                         batch_size=args.batch_size, progress=False) for _ in range(args.rounds)]
    report_t, t_target = target_runs[0][0], statistics.median(t for _, t in target_runs)
    # opt-in bf16 GEMM inputs where the CPU has bf16 instructions: time, and the paired
    # change of the bound (same seed, so the same noise draws) against float32
    bf16 = device.type == "cpu" and bf16_supported()
    if bf16:
        bf16_runs = [timed(clock, evaluate, model, guide, x, num_particles=kt,
                           batch_size=args.batch_size, progress=False, precision="bfloat16")
                     for _ in range(args.rounds)]
        paired = {}
        for precision in ("float32", "bfloat16"):
            torch.manual_seed(7)
            paired[precision] = torch.tensor(evaluate(
                model, guide, x, num_particles=kt, batch_size=args.batch_size,
                progress=False, precision=precision)["per_datapoint"]["iwae"])
        shift = paired["bfloat16"] - paired["float32"]
    renyi = RenyiELBO(alpha=0, num_particles=kt, vectorize_particles=True, max_plate_nesting=1)
    nr = min(args.renyi_data, n)
    pyro_pair = PyroBernoulliVAE(model.decoder, model.prior)

    def renyi_bound(m):  # minus RenyiELBO(alpha=0)'s loss, summed over calls of 10 datapoints
        with torch.no_grad():
            return sum(-renyi.loss(m, guide, x[i:min(i + 10, nr)]) for i in range(0, nr, 10))

    # side by side on the same nr datapoints, interleaved rounds, medians: our likelihood
    # and Pyro's Bernoulli(logits).to_event(1) (a pair written as Pyro's tutorials write it)
    names = ("evaluate", "evaluate_mkl", "renyi", "evaluate_pyro_bernoulli",
             "renyi_pyro_bernoulli")
    names += ("evaluate_bf16",) if bf16 else ()
    side = {name: [] for name in names if device.type == "cpu" or name != "evaluate_mkl"}

    def evaluate_mkl():  # the evaluator with torch's default GEMM (MKL), whatever was chosen
        set_cpu_gemm("mkl")
        try:
            return evaluate(model, guide, x[:nr], num_particles=kt, batch_size=args.batch_size,
                            progress=False)
        finally:
            set_cpu_gemm(gemm_choice)

    for _ in range(args.rounds):
        for name, fn in (("evaluate", lambda: evaluate(model, guide, x[:nr], num_particles=kt,
                                                       batch_size=args.batch_size,
                                                       progress=False)),
                         ("evaluate_mkl", evaluate_mkl),
                         ("evaluate_bf16", lambda: evaluate(
                             model, guide, x[:nr], num_particles=kt, batch_size=args.batch_size,
                             progress=False, precision="bfloat16")),
                         ("renyi", lambda: renyi_bound(model)),
                         ("evaluate_pyro_bernoulli", lambda: evaluate(
                             pyro_pair, guide, x[:nr], num_particles=kt,
                             batch_size=args.batch_size, progress=False)),
                         ("renyi_pyro_bernoulli", lambda: renyi_bound(pyro_pair))):
            if name not in side:  # MKL and bf16 only where the CPU has them
                continue
            out, t = timed(clock, fn)
            side[name].append(t)
            if name == "renyi":
                renyi_sum = out
    med = {name: statistics.median(ts) for name, ts in side.items()}
    t_renyi = med["renyi"]
    peaks.append(gemm_peak(clock, rows=rows, device=device))
    peak = max(max(pk.values()) for pk in peaks)

    chunks = math.ceil(big_k / chunk)
    dec_flops = 2 * (L * H + H * D) * n * (big_k + 3)  # + the 1- and 2-particle probes
    enc_flops = 2 * (D * H + H * 2 * L) * n * (chunks + 2)
    achieved = (dec_flops + enc_flops) / t_eval / 1e9
    target_dec = 2 * (L * H + H * D) * n * (kt + 3)
    target_flops = target_dec + 2 * (D * H + H * 2 * L) * n * (math.ceil(kt / chunk) + 2)
    target = {"K": kt, "seconds": t_target, "runs_seconds": [t for _, t in target_runs],
              "mean_bound": report_t["bounds"][-1]["mean"], "gflop": target_flops / 1e9,
              "gflops": target_flops / t_target / 1e9,
              "fraction_of_peak": target_flops / t_target / 1e9 / peak,
              "decoder_gemm_floor_seconds": target_dec / peak / 1e9,
              "renyi_alpha0": {"datapoints": nr, "seconds": t_renyi,
                               "extrapolated_seconds": t_renyi * n / nr,
                               "mean_bound": float(renyi_sum) / nr},
              "renyi_over_evaluator": t_renyi * n / nr / t_target,
              "side_by_side": {"datapoints": nr, "rounds": args.rounds, "seconds": side,
                               "median_seconds": med,
                               "renyi_over_evaluate": med["renyi"] / med["evaluate"],
                               "mkl_over_evaluate": med["evaluate_mkl"] / med["evaluate"]
                               if "evaluate_mkl" in med else None,
                               "renyi_over_evaluate_pyro_bernoulli":
                                   med["renyi_pyro_bernoulli"] / med["evaluate_pyro_bernoulli"],
                               "float32_over_bfloat16": med["evaluate"] / med["evaluate_bf16"]
                               if bf16 else None}}
    if bf16:
        t_bf16 = statistics.median(t for _, t in bf16_runs)
        target["bfloat16"] = {
            "seconds": t_bf16, "runs_seconds": [t for _, t in bf16_runs],
            "mean_bound": bf16_runs[0][0]["bounds"][-1]["mean"],
            "paired_shift_nats": float(shift.mean()),
            "paired_shift_se": float(shift.std() / len(shift) ** 0.5),
            "bound_se": float(paired["float32"].std() / len(shift) ** 0.5)}

    m = args.pyro_bernoulli_data
    _, t_pyro_b = timed(clock, evaluate, pyro_pair, guide, x[:m], num_particles=(big_k,),
                        batch_size=args.batch_size, progress=False)
    with torch.no_grad():
        nd, nk = args.naive_data, args.naive_particles
        _, t_naive = timed(clock, naive_loop, model, guide, x[:nd], nk)
        nv = args.vectorized_data
        _, t_vec = timed(clock, pyro_vectorized, model, guide, x[:nv], big_k)
    torch.manual_seed(0)
    ais_est, t_ais = timed(clock, ais_log_likelihood, model, guide, x[:args.ais_data],
                           num_steps=args.ais_steps, num_chains=args.ais_chains)
    passes = ais_est.evaluations * args.ais_data
    ais_gflops = 2 * 2 * (L * H + H * D) * passes / t_ais / 1e9
    load.append(os.getloadavg()[0])
    per = n * big_k  # extrapolate everything to N x K particle-datapoints
    est = {"pyro_bernoulli": t_pyro_b * n / m, "naive": t_naive * per / (nd * nk),
           "pyro_vectorized": t_vec * n / nv}
    result = {
        "machine": machine_info(device), "threads": args.threads,
        "clock": "thread CPU time" if args.threads == 1 and device.type == "cpu" else "wall",
        "torch": torch.__version__, "pyro": pyro.__version__, "load_average": load,
        "model": f"{D}-{H}-{L} MLP VAE, Bernoulli decoder, untrained",
        "num_data": n, "num_particles": big_k, "batch_size": args.batch_size,
        "chunk_particles": chunk, "gemm_rows_per_chunk": rows, "cpu_gemm": gemm_choice,
        "gemm_peak_gflops": peaks, "peak_gflops": peak,
        "evaluator_seconds": t_eval, "evaluator_gflop": (dec_flops + enc_flops) / 1e9,
        "evaluator_gflops": achieved, "fraction_of_peak": achieved / peak,
        "extrapolated_seconds": est,
        "speedup": {name: t / t_eval for name, t in est.items()},
        "iwae_nats": {str(r["K"]): r["mean"] for r in report["bounds"]},
        "target": target,
        "ais": {"datapoints": args.ais_data, "chains": args.ais_chains, "steps": args.ais_steps,
                "seconds": t_ais, "decoder_passes": passes,
                "decoder_passes_per_second": passes / t_ais, "gflops": ais_gflops,
                "fraction_of_peak": ais_gflops / peak},
    }
    print(f"\n{result['machine'].get('gpu') or result['machine']['cpu']}, "
          f"{args.threads} thread(s), {result['clock']}; "
          f"load average {load[0]:.1f} -> {load[1]:.1f}")
    each = ", ".join(f"{k} {v:.1f}" for pk in peaks for k, v in pk.items())
    print(f"fp32 GEMM peak: {peak:.1f} GFLOP/s  ({each})")
    print(f"evaluator: IWAE_{big_k} on {n} digits in {t_eval:.1f} s = {achieved:.1f} GFLOP/s "
          f"= {100 * achieved / peak:.0f}% of peak (chunks of {chunk} particles x "
          f"{args.batch_size} datapoints)")
    print(f"IWAE_{kt} alone on {n} digits (median of {args.rounds}): {t_target:.2f} s = "
          f"{target['gflops']:.1f} GFLOP/s "
          f"= {100 * target['fraction_of_peak']:.0f}% of peak; the decoder GEMMs alone at peak: "
          f"{target['decoder_gemm_floor_seconds']:.2f} s; RenyiELBO(alpha=0) "
          f"{t_renyi * n / nr:.1f} s (extrapolated from {nr}) = "
          f"{target['renyi_over_evaluator']:.1f}x the evaluator")
    if bf16:
        b = target["bfloat16"]
        print(f"IWAE_{kt} with bf16 GEMM inputs (median of {args.rounds}): {b['seconds']:.2f} s; "
              f"bound moved by {b['paired_shift_nats']:+.4f} ± {b['paired_shift_se']:.4f} nats "
              f"(paired, same noise; the bound's SE over datapoints: {b['bound_se']:.2f})")
    sb = target["side_by_side"]
    print(f"side by side on {nr} digits, K={kt}, median of {args.rounds} interleaved rounds: "
          f"RenyiELBO(alpha=0) / evaluate = {sb['renyi_over_evaluate']:.2f}x with pyrovae's "
          f"likelihood, {sb['renyi_over_evaluate_pyro_bernoulli']:.2f}x with Pyro's Bernoulli"
          + (f"; evaluate with MKL / with {gemm_choice} = {sb['mkl_over_evaluate']:.2f}x"
             if sb["mkl_over_evaluate"] else "")
          + (f"; float32 / bf16 = {sb['float32_over_bfloat16']:.2f}x"
             if sb["float32_over_bfloat16"] else ""))
    for name, t in est.items():
        print(f"  {name:16s} {t:10.1f} s (extrapolated)  -> evaluator is "
              f"{t / t_eval:.1f}x faster")
    print(f"AIS: {args.ais_data} datapoints x {args.ais_chains} chains x {args.ais_steps} steps "
          f"in {t_ais:.1f} s = {passes / t_ais:,.0f} decoder passes/s = {ais_gflops:.1f} GFLOP/s "
          f"= {100 * ais_gflops / peak:.0f}% of peak")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
