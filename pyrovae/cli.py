"""``pyrovae`` command line: the composition root.

Parses flags into frozen configs, builds objects through the registry, and calls the
trainer/evaluator.  Nothing else in the package reads ``sys.argv``.  Every user-fixable
problem surfaces as a one-line ``pyrovae: error: ...`` and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from pyrovae import checkpoint
from pyrovae.config import ModelConfig, RunConfig, TrainConfig, build_pair
from pyrovae.errors import PyroVAEError


# --- runs on disk -------------------------------------------------------------------

@dataclass
class Run:
    """A run directory brought back to life: config, data, model and guide on ``device``."""

    dir: Path
    config: RunConfig
    data: object
    model: object
    guide: object
    state: dict


def prepare_run_dir(path, *, resume: bool, overwrite: bool) -> Path:
    path = Path(path)
    if resume:
        if not (path / "checkpoint.pt").is_file():
            raise PyroVAEError(f"--resume: no checkpoint in {path}; start a new run without --resume")
        return path
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise PyroVAEError(f"run directory {path} already exists; pass --resume to continue it, "
                               f"--overwrite to replace it, or choose another --run-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise PyroVAEError(f"{run_dir} is not a pyrovae run directory (no config.json)")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise PyroVAEError(f"{path} is not valid JSON: {e}") from None


def load_run(run_dir, *, device: str = "auto") -> Run:
    """Rebuild a trained run (its dataset, model and guide with the checkpoint's weights)."""
    from pyrovae.data import load_dataset
    from pyrovae.train import resolve_device

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PyroVAEError(f"run directory {run_dir} does not exist")
    cfg = read_config(run_dir)
    dev = resolve_device(device)
    state = checkpoint.load(run_dir / "checkpoint.pt", map_location=dev)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=dev)
    model, guide = build_pair(cfg.model, x_dim=data.x_dim, num_classes=data.num_classes)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (KeyError, RuntimeError) as e:
        raise PyroVAEError(f"checkpoint in {run_dir} does not match its config.json "
                           f"({str(e).splitlines()[0][:200]})") from None
    model.to(dev).eval()
    guide.to(dev).eval()
    return Run(run_dir, cfg, data, model, guide, state)


# --- flags <-> configs ----------------------------------------------------------------

def _add_config_flags(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    """One ``--flag`` per dataclass field, typed by its default."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f.name, type=type(f.default), default=None,
                            help=f"default: {f.default}")


def _config_from_args(args, cls, base=None):
    base = base or cls()
    changes = {f.name: getattr(args, f.name) for f in fields(cls)
               if getattr(args, f.name, None) is not None}
    return type(base)(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **changes})


def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="mnist-sample (default), mnist, fashion-mnist")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (mnist, fashion-mnist)")
    p.add_argument("--run-dir", default=None, help="default: runs/<model>-<dataset>")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(p, ModelConfig)
    _add_config_flags(p, TrainConfig)
    from pyrovae import registry

    for name in registry.names("model"):  # non-Pyro models bring options of their own (VQ-VAE)
        getattr(registry.get("model", name), "add_train_flags", lambda _: None)(p)


def run_config_from_args(args) -> RunConfig:
    return RunConfig(dataset=args.dataset or "mnist-sample", data_dir=args.data_dir,
                     model=_config_from_args(args, ModelConfig),
                     train=_config_from_args(args, TrainConfig))


# --- commands -------------------------------------------------------------------------

def cmd_train(args) -> int:
    from pyrovae import distributed, plots, registry
    from pyrovae.data import load_dataset
    from pyrovae.train import fit, resolve_device

    cfg = run_config_from_args(args)
    run_dir = Path(args.run_dir or f"runs/{cfg.model.model}-{cfg.dataset}")
    if args.resume:
        prepare_run_dir(run_dir, resume=True, overwrite=False)
        old = read_config(run_dir)
        # a resumed run keeps its configuration; only the epoch budget may grow
        cfg = RunConfig(dataset=old.dataset, data_dir=old.data_dir, model=old.model,
                        train=_config_from_args(args, TrainConfig, base=old.train)
                        if args.epochs is not None else old.train)
    factory = registry.get("model", cfg.model.model)
    if hasattr(factory, "cli_train"):  # non-Pyro models (VQ-VAE) bring their own loop
        if distributed.launched(os.environ):
            raise PyroVAEError(f"{cfg.model.model} trains in one process; run it without torchrun")
        return factory.cli_train(args, cfg, run_dir)
    from pyrovae.handlers import beta_at
    from pyrovae.objectives import make_objective

    make_objective(cfg.train.objective)  # a typo fails before any folder or data is touched
    beta_at(0.0, cfg.train)
    # under torchrun: one process per device, data-parallel (see pyrovae/distributed.py)
    world, device = distributed.setup(os.environ, resolve_device(cfg.train.device))
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=device)
    import pyro

    pyro.set_rng_seed(cfg.train.seed)  # --seed sets the networks' initialization too
    model, guide = build_pair(cfg.model, x_dim=data.x_dim, num_classes=data.num_classes,
                              train_x=data.train_x)
    if world.is_main:  # only rank 0 writes
        run_dir = prepare_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
        (run_dir / "config.json").write_text(cfg.to_json())
        print(f"training {cfg.model.model} (prior {cfg.model.prior}, guide {cfg.model.guide}) on "
              f"{cfg.dataset} [{len(data.train_x)} train / {len(data.test_x)} test] on {device}"
              f"{f' x {world.size} processes' if world.size > 1 else ''}, "
              f"objective {cfg.train.objective}; run directory {run_dir}")
    history = fit(model, guide, data, cfg.train, run_dir=run_dir, config_json=cfg.to_json(),
                  resume=args.resume, progress=not args.no_progress)
    if not world.is_main:
        return 0
    figures = write_training_figures(model, guide, data, history, run_dir)
    last = history[-1]
    print(f"epoch {last['epoch']}: test ELBO {last['test_elbo']:.2f} nats "
          f"(reconstruction {last['test_recon']:.2f}, KL {last['test_kl']:.2f})")
    print("figures: " + ", ".join(str(f) for f in figures))
    return 0


def write_training_figures(model, guide, data, history, run_dir: Path) -> list[Path]:
    import torch

    from pyrovae import plots

    y = torch.arange(64, device=data.test_y.device) % data.num_classes  # every class, for a CVAE
    return [
        plots.plot_samples(model, run_dir / "samples.png", x_dim=data.x_dim, y=y,
                           device=data.test_x.device),
        plots.plot_reconstructions(model, guide, data.test_x, run_dir / "reconstructions.png",
                                   y=data.test_y),
        plots.plot_loss(history, run_dir / "loss.png"),
    ] + ([_class_grid(model, data, run_dir / "class_grid.png")]
         if getattr(model, "conditional", False) else [])


def _class_grid(model, data, path):
    from pyrovae import latent_plots

    return latent_plots.plot_class_grid(model, path, num_classes=data.num_classes,
                                        x_dim=data.x_dim, device=data.test_x.device,
                                        names=latent_plots.class_names(data.name,
                                                                       data.num_classes))


def run_hook(run_dir, hook: str):
    """The handler a non-Pyro model (VQ-VAE) registers for this command, or None."""
    from pyrovae import registry

    if not (Path(run_dir) / "config.json").is_file():
        return None
    return getattr(registry.get("model", read_config(Path(run_dir)).model.model), hook, None)


def cmd_sample(args) -> int:
    import torch

    from pyrovae import latent_plots, plots
    from pyrovae.data import one_hot

    if hook := run_hook(args.run, "cli_sample"):
        return hook(args)
    run = load_run(args.run, device=args.device)
    dev = run.data.test_x.device
    conditional = getattr(run.model, "conditional", False)
    if (args.label is not None or args.grid) and not conditional:
        raise PyroVAEError(f"--label and --grid need a conditional model (train one with "
                           f"--model cvae); {run.dir} holds a {run.config.model.model!r} model")
    if args.grid or (conditional and args.label is None):  # a CVAE without --label: all classes
        out = Path(args.out) if args.out else run.dir / "class_grid.png"
        latent_plots.plot_class_grid(
            run.model, out, num_classes=run.data.num_classes, per_row=args.per_row,
            x_dim=run.data.x_dim, device=dev,
            names=latent_plots.class_names(run.config.dataset, run.data.num_classes))
    else:
        y = None if args.label is None else torch.full((args.n,), args.label, device=dev)
        if y is not None:  # checked here: Pyro appends trace shapes to errors raised in a model
            one_hot(y, run.data.num_classes)
        out = Path(args.out) if args.out else run.dir / (
            "samples.png" if y is None else f"samples_label{args.label}.png")
        plots.plot_samples(run.model, out, n=args.n, x_dim=run.data.x_dim, y=y, device=dev,
                           title="decoded prior samples" + (f", label {args.label}"
                                                            if y is not None else ""))
    print(f"wrote {out}")
    return 0


def cmd_traverse(args) -> int:
    from pyrovae import latent_plots

    run = load_run(args.run, device=args.device)
    y = run.data.test_y if getattr(run.model, "conditional", False) else None
    out = Path(args.out) if args.out else run.dir / "traversal.png"
    latent_plots.plot_traversal(run.model, run.guide, run.data.test_x, out, y=y,
                                index=args.index, span=args.span, steps=args.steps,
                                max_units=args.max_units)
    print(f"wrote {out}")
    return 0


def cmd_interpolate(args) -> int:
    from pyrovae import latent_plots

    run = load_run(args.run, device=args.device)
    idx = args.pairs
    if len(idx) % 2 or any(not 0 <= i < len(run.data.test_x) for i in idx):
        raise PyroVAEError(f"--pairs takes test-set indices in pairs (A B A B ...), each in "
                           f"0..{len(run.data.test_x) - 1}; got {idx}")
    a, b = idx[0::2], idx[1::2]
    y = run.data.test_y if getattr(run.model, "conditional", False) else None
    out = Path(args.out) if args.out else run.dir / "interpolation.png"
    latent_plots.plot_interpolation(run.model, run.guide, run.data.test_x[a], run.data.test_x[b],
                                    out, y_a=None if y is None else y[a],
                                    y_b=None if y is None else y[b], steps=args.steps)
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    """Train the default VAE on the embedded sample, evaluate it, and say where things are."""
    argv = ["train", "--run-dir", args.run_dir, "--epochs", str(args.epochs),
            "--dataset", "mnist-sample"] + (["--overwrite"] if args.overwrite else [])
    code = main(argv)
    if code != 0:
        return code
    from pyrovae.evaluate import evaluate_run

    ks = tuple(k for k in (1, 10, 100, 1000, 5000) if k < args.max_k) + (args.max_k,)
    report = evaluate_run(args.run_dir, num_particles=ks, limit=args.eval_limit)
    rows = {row["K"]: row for row in report["bounds"]}
    top = max(rows)
    run_dir = Path(args.run_dir)
    print(f"\ndemo done: test ELBO {rows[1]['mean']:.2f} ± {rows[1]['se']:.2f} nats, "
          f"IWAE_{top} {rows[top]['mean']:.2f} ± {rows[top]['se']:.2f} nats "
          f"({report['num_datapoints']} test digits)")
    print("figures: " + ", ".join(str(run_dir / f) for f in (
        "samples.png", "reconstructions.png", "loss.png", "k_curve.png")))
    return 0


def _vqvae_cli():
    from pyrovae import vqvae_cli

    return vqvae_cli


def _evaluate():
    from pyrovae import evaluate

    return evaluate


COMMANDS = {
    "train": (cmd_train, add_train_flags, "train a model/guide pair (or a VQ-VAE)"),
    "sample": (cmd_sample, lambda p: (
        p.add_argument("run", help="run directory"),
        p.add_argument("--n", type=int, default=64),
        p.add_argument("--out", default=None, help="default: RUN/samples.png"),
        p.add_argument("--label", type=int, default=None,
                       help="conditional models: draw every sample with this class"),
        p.add_argument("--grid", action="store_true",
                       help="conditional models: one row per class (the default without --label)"),
        p.add_argument("--per-row", type=int, default=12, help="samples per class row (--grid)"),
        p.add_argument("--device", default="auto")), "decode prior samples of a trained run"),
    "traverse": (cmd_traverse, lambda p: (
        p.add_argument("run", help="run directory"),
        p.add_argument("--index", type=int, default=0, help="test digit whose posterior mean "
                       "holds the other units"),
        p.add_argument("--span", type=float, default=3.0, help="sweep each unit over [-span, span]"),
        p.add_argument("--steps", type=int, default=11),
        p.add_argument("--max-units", type=int, default=None, help="show only the N units "
                       "with the largest KL"),
        p.add_argument("--out", default=None, help="default: RUN/traversal.png"),
        p.add_argument("--device", default="auto")),
        "latent traversal: each unit swept with the others at a test digit's posterior mean"),
    "interpolate": (cmd_interpolate, lambda p: (
        p.add_argument("run", help="run directory"),
        p.add_argument("--pairs", type=int, nargs="+", default=[0, 500, 100, 900, 250, 750],
                       help="test-set indices A B [A B ...]: one row per pair"),
        p.add_argument("--steps", type=int, default=11),
        p.add_argument("--out", default=None, help="default: RUN/interpolation.png"),
        p.add_argument("--device", default="auto")),
        "decode the straight line between two test digits' posterior means"),
    "evaluate": (lambda a: _evaluate().cmd_evaluate(a), lambda p: _evaluate().add_evaluate_flags(p),
                 "importance-weighted bounds on log p(x) for a run's test set (eval.json/.md)"),
    "train-prior": (lambda a: _vqvae_cli().cmd_train_prior(a),
                    lambda p: _vqvae_cli().add_prior_flags(p),
                    "fit the autoregressive code prior of a VQ-VAE run (then samples.png)"),
    "demo": (cmd_demo, lambda p: (
        p.add_argument("--run-dir", default="runs/demo"),
        p.add_argument("--epochs", type=int, default=40),
        p.add_argument("--max-k", type=int, default=1000, help="largest IWAE K"),
        p.add_argument("--eval-limit", type=int, default=None, help="evaluate N test digits"),
        p.add_argument("--overwrite", action="store_true")),
        "train + evaluate the default VAE on the embedded MNIST sample"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyrovae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (func, add_flags, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_flags(p)
        p.set_defaults(func=func)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PyroVAEError as e:
        # Pyro appends the trace's shapes to errors raised inside a model: keep our line only
        print(f"pyrovae: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyrovae: interrupted; the last checkpoint is kept -- continue with --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
