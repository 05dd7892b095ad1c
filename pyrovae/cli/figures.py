"""``pyrovae sample | traverse | interpolate RUN``: figures of a trained run."""
from __future__ import annotations

from pathlib import Path

import torch

from pyrovae.build import model_takes_labels
from pyrovae.data import class_names, one_hot
from pyrovae.errors import PyroVAEError
from pyrovae.options import positive_float, positive_int
from pyrovae.plots.latent import plot_class_grid, plot_interpolation, plot_traversal
from pyrovae.plots.run import plot_samples
from pyrovae.registry import Command
from pyrovae.runs import load_run, runner_of


def _run_flags(p, out: str) -> None:
    p.add_argument("run", help="run directory (from `pyrovae train`)")
    p.add_argument("--out", default=None, help=f"output PNG (default: RUN/{out})")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def add_sample_flags(p) -> None:
    _run_flags(p, "samples.png")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--label", type=int, default=None,
                   help="conditional models: draw every sample with this class")
    p.add_argument("--grid", action="store_true",
                   help="conditional models: one row per class (the default without --label)")
    p.add_argument("--per-row", type=positive_int, default=12, help="samples per class row (--grid)")


def cmd_sample(args) -> int:
    runner = runner_of(args.run)
    if runner is not None:
        return runner.sample(args)
    run = load_run(args.run, device=args.device)
    dev = run.data.test_x.device
    conditional = model_takes_labels(run.config.model.model)
    if (args.label is not None or args.grid) and not conditional:
        raise PyroVAEError(f"--label and --grid need a conditional model (train one with "
                           f"--model cvae); {run.dir} holds a {run.config.model.model!r} model")
    if args.grid or (conditional and args.label is None):  # a CVAE without --label: all classes
        out = Path(args.out) if args.out else run.dir / "class_grid.png"
        plot_class_grid(run.model, out, num_classes=run.data.num_classes, per_row=args.per_row,
                        x_dim=run.data.x_dim, device=dev,
                        names=class_names(run.config.dataset, run.data.num_classes))
    else:
        y = None if args.label is None else torch.full((args.n,), args.label, device=dev)
        if y is not None:  # checked here: Pyro appends trace shapes to errors raised in a model
            one_hot(y, run.data.num_classes)
        out = Path(args.out) if args.out else run.dir / (
            "samples.png" if y is None else f"samples_label{args.label}.png")
        plot_samples(run.model, out, n=args.n, x_dim=run.data.x_dim, y=y, device=dev,
                     title="decoded prior samples" + (f", label {args.label}"
                                                      if y is not None else ""))
    print(f"wrote {out}")
    return 0


def _labels(run):
    return run.data.test_y if model_takes_labels(run.config.model.model) else None


def add_traverse_flags(p) -> None:
    _run_flags(p, "traversal.png")
    p.add_argument("--index", type=int, default=0, help="test datapoint whose posterior mean "
                   "holds the other units (default 0)")
    p.add_argument("--span", type=positive_float, default=3.0, help="sweep each unit over [-span, span]")
    p.add_argument("--steps", type=positive_int, default=11, help="images per unit (default 11)")
    p.add_argument("--max-units", type=positive_int, default=None, help="show only the N units "
                   "with the largest KL")


def cmd_traverse(args) -> int:
    run = load_run(args.run, device=args.device)
    out = Path(args.out) if args.out else run.dir / "traversal.png"
    plot_traversal(run.model, run.guide, run.data.test_x, out, y=_labels(run), index=args.index,
                   span=args.span, steps=args.steps, max_units=args.max_units)
    print(f"wrote {out}")
    return 0


def add_interpolate_flags(p) -> None:
    _run_flags(p, "interpolation.png")
    p.add_argument("--pairs", type=int, nargs="+", default=[0, 500, 100, 900, 250, 750],
                   help="test-set indices A B [A B ...]: one row per pair")
    p.add_argument("--steps", type=positive_int, default=11, help="images between the ends (default 11)")


def cmd_interpolate(args) -> int:
    run = load_run(args.run, device=args.device)
    idx = args.pairs
    if len(idx) % 2 or any(not 0 <= i < len(run.data.test_x) for i in idx):
        raise PyroVAEError(f"--pairs takes test-set indices in pairs (A B A B ...), each in "
                           f"0..{len(run.data.test_x) - 1}; got {idx}")
    a, b = idx[0::2], idx[1::2]
    y = _labels(run)
    out = Path(args.out) if args.out else run.dir / "interpolation.png"
    plot_interpolation(run.model, run.guide, run.data.test_x[a], run.data.test_x[b], out,
                       y_a=None if y is None else y[a], y_b=None if y is None else y[b],
                       steps=args.steps)
    print(f"wrote {out}")
    return 0


COMMANDS = {
    "sample": Command("decode prior samples of a trained run", add_sample_flags, cmd_sample),
    "traverse": Command("latent traversal: each unit swept with the others at a test "
                        "datapoint's posterior mean", add_traverse_flags, cmd_traverse),
    "interpolate": Command("decode the straight line between two test datapoints' posterior "
                           "means", add_interpolate_flags, cmd_interpolate),
}
