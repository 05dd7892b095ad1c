"""``pyrovae train`` and ``pyrovae demo``."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pyro

from pyrovae import registry
from pyrovae.build import build_pair, model_takes_labels
from pyrovae.config import ModelConfig, RunConfig, TrainConfig
from pyrovae.data import load_dataset, with_labels
from pyrovae.files import write_json
from pyrovae.evaluation.run import evaluate_run
from pyrovae.errors import PyroVAEError
from pyrovae.options import add_config_flags, config_from_args, positive_int
from pyrovae.plots.run import plot_training_figures
from pyrovae.registry import Command
from pyrovae.runs import prepare_run_dir, read_config, resolve_device, run_lock, write_config
from pyrovae import distributed
from pyrovae.train.fit import fit


def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="mnist-sample (default: embedded, no "
                   "install), mnist, fashion-mnist")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files (mnist, "
                   "fashion-mnist)")
    p.add_argument("--labels", type=positive_int, default=None, help="keep only N training "
                   "labels (stratified, seeded): semi-supervised training (--model ssvae)")
    p.add_argument("--run-dir", default=None, help="where the run is written (default: "
                   "runs/<model>-<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir "
                   "from its last checkpoint (only --epochs may change)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(p.add_argument_group("model"), ModelConfig)
    add_config_flags(p.add_argument_group("training"), TrainConfig)
    for name in registry.names("runner"):  # models with their own loop bring their options
        registry.get("runner", name).add_train_flags(p)


def run_config_from_args(args) -> RunConfig:
    return RunConfig(dataset=args.dataset or "mnist-sample", data_dir=args.data_dir,
                     labels=args.labels,
                     model=config_from_args(args, ModelConfig),
                     train=config_from_args(args, TrainConfig))


def cmd_train(args) -> int:
    cfg = run_config_from_args(args)
    run_dir = Path(args.run_dir or f"runs/{cfg.model.model}-{cfg.dataset}")
    if distributed.launched(os.environ) and int(os.environ.get("RANK", "0")) != 0:
        return _train(args, cfg, run_dir)  # only rank 0 writes, so only rank 0 locks
    with run_lock(run_dir):  # a second process gets a one-line error naming this one
        return _train(args, cfg, run_dir)


def _train(args, cfg: RunConfig, run_dir: Path) -> int:
    if args.resume:
        prepare_run_dir(run_dir, resume=True, overwrite=False)
        old = read_config(run_dir)
        # a resumed run keeps its configuration; only the epoch budget may grow
        cfg = RunConfig(dataset=old.dataset, data_dir=old.data_dir, labels=old.labels,
                        model=old.model,
                        train=config_from_args(args, TrainConfig, base=old.train)
                        if args.epochs is not None else old.train)
    runner = registry.find("runner", cfg.model.model)
    if runner is not None:  # a model with its own training loop (the VQ-VAE)
        if distributed.launched(os.environ):
            raise PyroVAEError(f"{cfg.model.model} trains in one process; run it without torchrun")
        return runner.train(args, cfg, run_dir)
    # under torchrun: one process per device, data-parallel (see pyrovae/distributed.py)
    world, device = distributed.setup(os.environ, resolve_device(cfg.train.device))
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=device,
                        likelihood=cfg.model.likelihood)
    if cfg.labels is not None:
        if registry.option("model", cfg.model.model, "labels") != "optional":
            raise PyroVAEError(f"--labels needs a semi-supervised model (--model ssvae); "
                               f"{cfg.model.model!r} uses every label or none")
        data = with_labels(data, cfg.labels, seed=cfg.train.seed)
    pyro.set_rng_seed(cfg.train.seed)  # --seed sets the networks' initialization too
    model, guide = build_pair(cfg.model, x_dim=data.x_dim, num_classes=data.num_classes)
    if world.is_main:  # only rank 0 writes
        run_dir = prepare_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
        write_config(run_dir, cfg.to_dict())
        if data.labelled is not None:  # the split, for the record (it follows from the seed)
            write_json(run_dir / "labels.json", {"labelled": data.labelled.tolist()})
        print(f"training {cfg.model.model} (prior {cfg.model.prior}, guide {cfg.model.guide}) on "
              f"{cfg.dataset} [{len(data.train_x)} train / {len(data.test_x)} test] on {device}"
              f"{f' x {world.size} processes' if world.size > 1 else ''}, "
              f"objective {cfg.train.objective}; run directory {run_dir}")
    history = fit(model, guide, data, cfg.train, run_dir=run_dir, config_json=cfg.to_json(),
                  resume=args.resume, progress=not args.no_progress)
    if not world.is_main:
        return 0
    figures = plot_training_figures(model, guide, data, history, run_dir,
                                    conditional=model_takes_labels(cfg.model.model),
                                    style=data.labelled is not None)
    last = history[-1]
    print(f"epoch {last['epoch']}: test ELBO {last['test_elbo']:.2f} nats "
          f"(reconstruction {last['test_recon']:.2f}, KL {last['test_kl']:.2f})")
    print("figures: " + ", ".join(str(f) for f in figures))
    return 0


def add_demo_flags(p) -> None:
    p.add_argument("--run-dir", default="runs/demo", help="where the demo run is written")
    p.add_argument("--epochs", type=positive_int, default=40, help="training epochs (default 40)")
    p.add_argument("--max-k", type=positive_int, default=1000, help="largest IWAE K (default 1000)")
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate only the first N "
                   "test digits (default: all 1,000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo run")


def cmd_demo(args) -> int:
    """Train the default VAE on the embedded sample, evaluate it, and say where things are."""
    train = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
    add_train_flags(train)
    code = cmd_train(train.parse_args(
        ["--run-dir", args.run_dir, "--epochs", str(args.epochs), "--dataset", "mnist-sample"]
        + (["--overwrite"] if args.overwrite else [])))
    if code != 0:
        return code
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


COMMANDS = {
    "train": Command("train a model/guide pair (or a model with its own loop, e.g. vqvae)",
                     add_train_flags, cmd_train),
    "demo": Command("train + evaluate the default VAE on the embedded MNIST sample",
                    add_demo_flags, cmd_demo),
}
