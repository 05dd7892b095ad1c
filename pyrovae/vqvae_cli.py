"""The VQ-VAE's side of the command line.

``pyrovae train --model vqvae`` reaches :func:`cli_train` through the ``cli_train``
attribute of the registered ``vqvae`` model; ``sample`` and ``evaluate`` reach
:func:`cli_sample` / :func:`cli_evaluate` when the run's config names a model with those
attributes; ``train-prior`` is VQ-only (:func:`add_prior_flags`, :func:`cmd_train_prior`).
Options are the fields of :class:`VQVAEConfig` / :class:`PriorConfig`, one flag each.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pyrovae.errors import PyroVAEError
from pyrovae.models.vq_prior import CodePrior, PriorConfig, build_prior
from pyrovae.models.vqvae import VQVAEConfig, build_vqvae
from pyrovae.vqvae_run import (_section, _write_json, evaluate_vq_run, load_vq_run,
                               write_codebook_figure, write_reconstructions, write_samples)

PRIOR_FLAGS = [f for f in dataclasses.fields(PriorConfig) if f.name != "conditional"]


def add_train_flags(parser) -> None:
    """``--num-codes``, ``--code-dim``, ``--quantizer ema|loss``, ... on ``pyrovae train``."""
    from pyrovae.cli import _add_config_flags

    group = parser.add_argument_group("VQ-VAE (with --model vqvae)")
    _add_config_flags(group, VQVAEConfig)


def cli_train(args, cfg, run_dir: Path) -> int:
    from pyrovae.cli import _config_from_args, prepare_run_dir
    from pyrovae.data import load_dataset
    from pyrovae.train import resolve_device
    from pyrovae.vqvae_train import train_vqvae

    run_dir = Path(run_dir)
    if args.resume:
        # a resumed run keeps its architecture (cmd_train already checked the checkpoint)
        raw = json.loads((run_dir / "config.json").read_text())
        vq = _section(VQVAEConfig, raw.get("vqvae", {}))
    else:
        vq = _config_from_args(args, VQVAEConfig)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, device=device)
    model = build_vqvae(vq, image_shape=data.image_shape)
    run_dir = prepare_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
    raw = {**cfg.to_dict(), "vqvae": dataclasses.asdict(vq)}
    _write_json(run_dir / "config.json", raw)
    if args.resume and (run_dir / "prior.pt").is_file():
        print(f"note: {run_dir / 'prior.pt'} was fitted to the old codes; "
              f"retrain it with `pyrovae train-prior {run_dir} --overwrite`")
    print(f"training vqvae ({vq.num_codes} codes x {vq.code_dim} dims, {vq.quantizer} codebook) "
          f"on {cfg.dataset} [{len(data.train_x)} train / {len(data.test_x)} test] on {device}; "
          f"run directory {run_dir}")
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


def add_prior_flags(p) -> None:
    p.add_argument("run", help="a VQ-VAE run directory (pyrovae train --model vqvae)")
    for f in PRIOR_FLAGS:
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default),
                       default=None, help=f"default: {f.default}")
    p.add_argument("--conditional", action="store_true",
                   help="class-conditional prior (one start token per label)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue RUN/prior.pt")
    p.add_argument("--overwrite", action="store_true", help="replace an existing RUN/prior.pt")
    p.add_argument("--no-progress", action="store_true")


def cmd_train_prior(args) -> int:
    """Fit the autoregressive code prior of a trained VQ-VAE run, then draw ``samples.png``."""
    from pyrovae.vqvae_train import train_prior

    run = load_vq_run(args.run, device=args.device)
    if (run.dir / "prior.pt").is_file() and not (args.resume or args.overwrite):
        raise PyroVAEError(f"{run.dir / 'prior.pt'} exists; pass --resume to continue it "
                           f"or --overwrite to fit a new one")
    if args.resume:
        if "prior" not in run.raw:
            raise PyroVAEError(f"--resume: {run.dir} has no prior to continue")
        old = _section(PriorConfig, run.raw["prior"])
        # a resumed prior keeps its architecture; only the epoch budget may grow
        pcfg = dataclasses.replace(old, epochs=args.epochs or old.epochs)
    else:
        given = {f.name: getattr(args, f.name) for f in PRIOR_FLAGS
                 if getattr(args, f.name) is not None}
        pcfg = PriorConfig(**given, conditional=args.conditional)
    prior: CodePrior = build_prior(pcfg, num_codes=run.model.num_codes,
                                   grid_shape=run.model.grid_shape,
                                   num_classes=run.data.num_classes)
    raw = {**run.raw, "prior": {**dataclasses.asdict(pcfg), "seed": args.seed}}
    _write_json(run.dir / "config.json", raw)
    print(f"training a {'class-conditional ' if pcfg.conditional else ''}causal-transformer "
          f"prior ({pcfg.layers} layers, d={pcfg.d_model}) on the codes of {run.dir}")
    history = train_prior(prior, run.model, run.data, epochs=pcfg.epochs,
                          batch_size=pcfg.batch_size, lr=pcfg.lr, seed=args.seed,
                          run_dir=run.dir, config_json=json.dumps(raw), resume=args.resume,
                          progress=not args.no_progress)
    prior.eval()
    figures = [write_samples(run.model, prior, run.dir / "samples.png", seed=args.seed)]
    if prior.conditional:
        figures.append(write_samples(run.model, prior, run.dir / "class_grid.png",
                                     by_class=True, seed=args.seed, names=_names(run)))
    last = history[-1]
    print(f"epoch {last['epoch']}: test -log p(codes) {last['test_nll']:.2f} nats per image")
    print("figures: " + ", ".join(str(f) for f in figures))
    print(f"next: pyrovae evaluate {run.dir}")
    return 0


def _names(run) -> list[str]:
    from pyrovae.latent_plots import class_names

    return class_names(run.config.dataset, run.data.num_classes)


def cli_sample(args) -> int:
    run = load_vq_run(args.run, device=getattr(args, "device", "auto"), need_prior=True)
    label = getattr(args, "label", None)
    out = Path(args.out) if getattr(args, "out", None) else run.dir / "samples.png"
    grid = getattr(args, "grid", False)
    if grid and not getattr(args, "out", None):
        out = run.dir / "class_grid.png"
    elif label is not None and not getattr(args, "out", None):
        out = run.dir / f"samples_label{label}.png"
    write_samples(run.model, run.prior, out, n=getattr(args, "n", 64), label=label,
                  by_class=grid, seed=getattr(args, "seed", None) or 0, names=_names(run),
                  per_row=getattr(args, "per_row", None) or 10)
    print(f"wrote {out}")
    return 0


def cli_evaluate(args) -> int:
    evaluate_vq_run(args.run, device=getattr(args, "device", "auto"),
                    limit=getattr(args, "limit", None))
    return 0
