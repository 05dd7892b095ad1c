"""``pyrovae evaluate RUN`` (IWAE_K and AIS rows, eval.json / eval.md) and ``pyrovae bdmc RUN``.

``torchrun --nproc_per_node N -m pyrovae.cli evaluate RUN ...`` shares the test set among N
processes (gloo on CPU, NCCL with one GPU each); rank 0 writes."""
from __future__ import annotations

import os

import torch

from pyrovae import distributed

from pyrovae.build import model_takes_labels
from pyrovae.evaluation.bounds import particle_ladder
from pyrovae.evaluation.marginal import bdmc
from pyrovae.files import write_json
from pyrovae.machine import machine_info
from pyrovae.evaluation.run import evaluate_run
from pyrovae.options import positive_int
from pyrovae.registry import Command
from pyrovae.runs import load_run, resolve_device, runner_of


def add_evaluate_flags(p) -> None:
    p.add_argument("run", help="run directory (from `pyrovae train`)")
    p.add_argument("--num-particles", type=positive_int, nargs="+", default=[5000], metavar="K",
                   help="largest K (the table also shows 1, 10, 100, ... below it), or "
                        "several K to show exactly those (default: 5000)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N test datapoints only")
    p.add_argument("--batch-size", type=positive_int, default=32, help="datapoints per pass (default 32)")
    p.add_argument("--ais", type=positive_int, nargs="+", default=[], metavar="STEPS",
                   help="also annealed importance sampling with this many steps (one row "
                        "each; ~chains x steps x 11 log-joint evaluations per datapoint)")
    p.add_argument("--chains", type=positive_int, default=16, help="AIS chains per datapoint "
                   "(default 16)")
    p.add_argument("--ais-batch-size", type=positive_int, default=100,
                   help="datapoints per AIS pass (default 100)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="IWAE's CPU GEMM inputs: float32 (default) or bfloat16 (faster on "
                        "CPUs with AMX; bias measured in docs/performance.md)")
    _common_flags(p)


def _common_flags(p) -> None:
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def cmd_evaluate(args) -> int:
    runner = runner_of(args.run)
    if runner is not None:  # a model with its own loop evaluates itself (the VQ-VAE)
        return runner.evaluate(args)
    ks = args.num_particles
    device = args.device
    if distributed.launched(os.environ):  # torchrun: datapoints shared among the ranks
        world, dev = distributed.setup(os.environ, resolve_device(device))
        device = str(dev)
        torch.manual_seed(world.seed(torch.initial_seed()))  # independent draws per rank
    evaluate_run(args.run, num_particles=particle_ladder(ks[0]) if len(ks) == 1 else ks,
                 limit=args.limit, batch_size=args.batch_size, device=device,
                 progress=not args.no_progress, ais_steps=args.ais, ais_chains=args.chains,
                 ais_batch_size=args.ais_batch_size, precision=args.precision)
    return 0


def add_bdmc_flags(p) -> None:
    p.add_argument("run", help="run directory (from `pyrovae train`)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[100], metavar="T",
                   help="annealing steps; one sandwich per value (default 100)")
    p.add_argument("--num", type=positive_int, default=100, help="datapoints simulated from "
                   "the model (default 100)")
    p.add_argument("--chains", type=positive_int, default=16, help="AIS chains per datapoint")
    _common_flags(p)


def cmd_bdmc(args) -> int:
    run = load_run(args.run, device=args.device)
    x = run.data.test_x[:args.num]
    y = run.data.test_y[:args.num] if model_takes_labels(run.config.model.model) else None
    rows = []
    for steps in args.steps:
        torch.manual_seed(steps)
        res = bdmc(run.model, run.guide, x, y, num_steps=steps, num_chains=args.chains,
                   progress=not args.no_progress)
        rows.append({"steps": steps, "chains": args.chains, "num": len(x),
                     "lower": float(res["lower"].mean()), "upper": float(res["upper"].mean()),
                     "width": float((res["upper"] - res["lower"]).mean()),
                     "width_se": float((res["upper"] - res["lower"]).std() / len(x) ** 0.5),
                     "seconds": res["seconds"]})
        print(f"BDMC T={steps}: lower {rows[-1]['lower']:.3f}, upper {rows[-1]['upper']:.3f}, "
              f"width {rows[-1]['width']:.3f} ± {rows[-1]['width_se']:.3f} nats "
              f"({len(x)} simulated datapoints, {res['seconds']:.0f} s)")
    path = write_json(run.dir / "bdmc.json", {"rows": rows, "machine": machine_info(x.device)})
    print(f"wrote {path}")
    return 0


COMMANDS = {
    "evaluate": Command("bounds on log p(x) for a run's test set: IWAE_K, optionally AIS "
                        "(eval.json/.md)", add_evaluate_flags, cmd_evaluate),
    "bdmc": Command("BDMC sandwich: forward and reverse AIS on data simulated from the model "
                    "(bdmc.json)", add_bdmc_flags, cmd_bdmc),
}
