"""The VQ-VAE's side of the command line, declared to the engine through the registry.

``pyrovae train --model vqvae`` reaches :meth:`VQVAERunner.train` (registry kind
``runner``); ``sample`` and ``evaluate`` on a VQ-VAE run reach :meth:`~VQVAERunner.sample`
and :meth:`~VQVAERunner.evaluate`; ``pyrovae train-prior`` is a plugin command (kind
``command``).  Options are the fields of :class:`VQVAEConfig` / :class:`PriorConfig`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pyrovae.config import RunConfig, config_section
from pyrovae.data import class_names, load_dataset
from pyrovae.errors import PyroVAEError
from pyrovae.models.vqvae.model import VQVAEConfig, build_vqvae
from pyrovae.models.vqvae.prior import PriorConfig, build_prior
from pyrovae.models.vqvae.run import (evaluate_vq_run, load_vq_run, write_codebook_figure,
                                      write_reconstructions, write_samples)
from pyrovae.models.vqvae.train import train_prior, train_vqvae
from pyrovae.options import add_config_flags, config_from_args, given
from pyrovae.registry import Command
from pyrovae.runs import prepare_run_dir, read_raw_config, resolve_device, write_config


def _names(run) -> list[str]:
    return class_names(run.config.dataset, run.data.num_classes)


class VQVAERunner:
    """The :class:`pyrovae.runs.ModelRunner` of the VQ-VAE."""

    def add_train_flags(self, parser) -> None:
        """``--num-codes``, ``--code-dim``, ``--quantizer ema|loss``, ... on ``pyrovae train``."""
        add_config_flags(parser.add_argument_group("VQ-VAE (with --model vqvae)"), VQVAEConfig)

    def train(self, args, cfg: RunConfig, run_dir: Path) -> int:
        run_dir = Path(run_dir)
        if args.resume:  # a resumed run keeps its architecture
            vq = config_section(VQVAEConfig, read_raw_config(run_dir).get("vqvae", {}))
        else:
            vq = config_from_args(args, VQVAEConfig)
        device = resolve_device(cfg.train.device)
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=device)
        model = build_vqvae(vq, image_shape=data.image_shape)
        run_dir = prepare_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
        raw = {**cfg.to_dict(), "vqvae": dataclasses.asdict(vq)}
        write_config(run_dir, raw)
        if args.resume and (run_dir / "prior.pt").is_file():
            print(f"note: {run_dir / 'prior.pt'} was fitted to the old codes; "
                  f"retrain it with `pyrovae train-prior {run_dir} --overwrite`")
        print(f"training vqvae ({vq.num_codes} codes x {vq.code_dim} dims, {vq.quantizer} "
              f"codebook) on {cfg.dataset} [{len(data.train_x)} train / {len(data.test_x)} "
              f"test] on {device}; run directory {run_dir}")
        history = train_vqvae(model, data, cfg.train, restart_every=vq.restart_every,
                              restart_threshold=vq.restart_threshold, run_dir=run_dir,
                              config_json=json.dumps(raw), resume=args.resume,
                              progress=not args.no_progress)
        model.eval()
        figures = [write_reconstructions(model, data.test_x, run_dir / "reconstructions.png"),
                   write_codebook_figure(model, data.test_x, history, run_dir / "codebook.png")]
        last = history[-1]
        print(f"epoch {last['epoch']}: test reconstruction {last['test_nats']:.2f} nats, "
              f"code perplexity {last['test_perplexity']:.1f} of {vq.num_codes}, "
              f"{100 * last['test_codes_used']:.0f}% of codes used")
        print("figures: " + ", ".join(str(f) for f in figures))
        print(f"next: pyrovae train-prior {run_dir}")
        return 0

    def sample(self, args) -> int:
        run = load_vq_run(args.run, device=args.device, need_prior=True)
        out = Path(args.out) if args.out else run.dir / (
            "class_grid.png" if args.grid else
            "samples.png" if args.label is None else f"samples_label{args.label}.png")
        write_samples(run.model, run.prior, out, n=args.n, label=args.label, by_class=args.grid,
                      seed=0, names=_names(run), per_row=args.per_row)
        print(f"wrote {out}")
        return 0

    def evaluate(self, args) -> int:
        evaluate_vq_run(args.run, device=args.device, limit=args.limit)
        return 0


def add_prior_flags(p) -> None:
    p.add_argument("run", help="a VQ-VAE run directory (pyrovae train --model vqvae)")
    add_config_flags(p, PriorConfig)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue RUN/prior.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN/prior.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_train_prior(args) -> int:
    """Fit the autoregressive code prior of a trained VQ-VAE run, then draw ``samples.png``."""
    run = load_vq_run(args.run, device=args.device)
    if (run.dir / "prior.pt").is_file() and not (args.resume or args.overwrite):
        raise PyroVAEError(f"{run.dir / 'prior.pt'} exists; pass --resume to continue it "
                           f"or --overwrite to fit a new one")
    if args.resume:
        if "prior" not in run.raw:
            raise PyroVAEError(f"--resume: {run.dir} has no prior to continue")
        old = config_section(PriorConfig, run.raw["prior"])
        # a resumed prior keeps its architecture; only the epoch budget may grow
        pcfg = dataclasses.replace(old, epochs=args.epochs or old.epochs)
    else:
        pcfg = PriorConfig(**given(args, PriorConfig))
    prior = build_prior(pcfg, num_codes=run.model.num_codes, grid_shape=run.model.grid_shape,
                        num_classes=run.data.num_classes)
    raw = {**run.raw, "prior": dataclasses.asdict(pcfg)}
    write_config(run.dir, raw)
    print(f"training a {'class-conditional ' if pcfg.conditional else ''}causal-transformer "
          f"prior ({pcfg.layers} layers, d={pcfg.d_model}) on the codes of {run.dir}")
    history = train_prior(prior, run.model, run.data, epochs=pcfg.epochs,
                          batch_size=pcfg.batch_size, lr=pcfg.lr, seed=pcfg.seed,
                          run_dir=run.dir, config_json=json.dumps(raw), resume=args.resume,
                          progress=not args.no_progress)
    prior.eval()
    figures = [write_samples(run.model, prior, run.dir / "samples.png", seed=pcfg.seed)]
    if prior.conditional:
        figures.append(write_samples(run.model, prior, run.dir / "class_grid.png",
                                     by_class=True, seed=pcfg.seed, names=_names(run)))
    last = history[-1]
    print(f"epoch {last['epoch']}: test -log p(codes) {last['test_nll']:.2f} nats per image")
    print("figures: " + ", ".join(str(f) for f in figures))
    print(f"next: pyrovae evaluate {run.dir}")
    return 0


TRAIN_PRIOR = Command("fit the autoregressive code prior of a VQ-VAE run (then samples.png)",
                      add_prior_flags, cmd_train_prior)
