"""``pyrovae evaluate RUN``: bounds on log p(x) for a run's test set (eval.json / eval.md)."""
from __future__ import annotations

from pyrovae.evaluation.bounds import particle_ladder
from pyrovae.evaluation.run import evaluate_run
from pyrovae.options import positive_int
from pyrovae.registry import Command
from pyrovae.runs import runner_of


def add_evaluate_flags(p) -> None:
    p.add_argument("run", help="run directory (from `pyrovae train`)")
    p.add_argument("--num-particles", type=positive_int, nargs="+", default=[5000], metavar="K",
                   help="largest K (the table also shows 1, 10, 100, ... below it), or "
                        "several K to show exactly those (default: 5000)")
    p.add_argument("--limit", type=positive_int, default=None, help="first N test datapoints only")
    p.add_argument("--batch-size", type=positive_int, default=32, help="datapoints per pass (default 32)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_evaluate(args) -> int:
    runner = runner_of(args.run)
    if runner is not None:  # a model with its own loop evaluates itself (the VQ-VAE)
        return runner.evaluate(args)
    ks = args.num_particles
    evaluate_run(args.run, num_particles=particle_ladder(ks[0]) if len(ks) == 1 else ks,
                 limit=args.limit, batch_size=args.batch_size, device=args.device,
                 progress=not args.no_progress)
    return 0


COMMANDS = {
    "evaluate": Command("importance-weighted bounds on log p(x) for a run's test set "
                        "(eval.json/.md)", add_evaluate_flags, cmd_evaluate),
}
