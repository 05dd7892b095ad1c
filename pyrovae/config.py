"""Frozen run configuration, built once by the composition root (``pyrovae.cli``) or a script.

Saved as ``config.json`` and inside every checkpoint, so a run can be rebuilt and
resumed from its directory alone.  Every field carries a help line (``metadata["help"]``),
from which the command line's flags are generated (:mod:`pyrovae.options`).
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from pyrovae import registry
from pyrovae.checks import Check, Int, OneOf, Real, Rule, validate
from pyrovae.data import LIKELIHOOD_TRANSFORMS
from pyrovae.errors import PyroVAEError
from pyrovae.infer.objectives import make_objective
from pyrovae.infer.schedules import SCHEDULES, BetaSchedule
from pyrovae.nets import ACTIVATIONS, SCALE_FNS


def option(default, help: str, rule: Rule | None = None):
    """A config field with the help line its command-line flag shows and the rule its
    values must follow (:mod:`pyrovae.checks`)."""
    return field(default=default, metadata={"help": help, "rule": rule})


POSITIVE = Int(low=1)


def _model_names():
    return registry.names("model") + registry.names("runner")


@dataclass(frozen=True)
class ModelConfig:
    """What to build: names resolved through the registry plus network sizes."""

    model: str = option("vae", "model half p(z) p(x|z) by registered name (vae, cvae, vqvae)",
                        OneOf(_model_names))
    prior: str = option("standard", "prior p(z): standard, mog, vamp, flow",
                        OneOf(lambda: registry.names("prior")))
    guide: str = option("diagonal", "guide q(z|x): diagonal, fullcov, iaf",
                        OneOf(lambda: registry.names("guide")))
    likelihood: str = option("bernoulli", "observation model p(x|z): bernoulli (binarized "
                                          "pixels), gaussian (dequantized pixels, learned "
                                          "variance), logistic (discretized, 256 levels)",
                             OneOf(LIKELIHOOD_TRANSFORMS))
    network: str = option("mlp", "encoder/decoder networks: mlp, or conv (the conv stack of "
                                 "Higgins et al. / Locatello et al. for square binary images)",
                          OneOf(("mlp", "conv")))
    latent_dim: int = option(50, "dimension of z", POSITIVE)
    hidden: int = option(400, "width of the hidden layer of encoder and decoder MLPs", POSITIVE)
    # relu and sigma = exp(raw / 2) measured best for the Bernoulli MLP VAE (softplus
    # hidden units cost ~2 nats at 10 epochs); see docs/quality.md
    activation: str = option("relu", "hidden activation: relu, leaky_relu, elu, softplus, "
                                     "tanh, gelu", OneOf(ACTIVATIONS))
    scale: str = option("exp", "guide sigma parameterization: exp (log-variance) or softplus",
                        OneOf(SCALE_FNS))
    # starting below the prior's 1 measured +0.4 nats (docs/quality.md)
    init_scale: float = option(0.1, "guide sigma at initialization (0: PyTorch's init, ~1)",
                               Real(low=0))
    # "data": the decoder's output bias starts at the pixels' marginals (+0.3 nats)
    output_bias: str = option("data", "decoder output bias at the start: data (each "
                                      "pixel's marginal over the training set) or default",
                              OneOf(("data", "default")))
    num_components: int = option(10, "mixture components of the mog prior", POSITIVE)
    num_pseudo_inputs: int = option(500, "pseudo-inputs of the vamp prior", POSITIVE)
    flow_layers: int = option(2, "autoregressive layers of the flow prior / iaf guide", POSITIVE)

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loop reads nothing else."""

    epochs: int = option(10, "passes over the training set", POSITIVE)
    batch_size: int = option(128, "datapoints per optimizer step", POSITIVE)
    lr: float = option(1e-3, "Adam learning rate", Real(low=0, strict=True))
    seed: int = option(0, "seed of initialization, minibatch order and noise",
                       Int(low=0, high=2**32 - 1))
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N",
                         Check(lambda d: _check_device(d), "a device name"))
    objective: str = option("elbo", "training objective, e.g. elbo, iwae:5, dreg:5, renyi:0.5:5",
                            Check(lambda name: make_objective(name), "an objective name"))
    beta: float = option(1.0, "KL weight beta of the beta-VAE (>= 0)", Real(low=0))
    alpha: float = option(0.0, "weight of the classification loss on labelled data "
                               "(semi-supervised models; Kingma et al. 2014 use 0.1 x N)",
                          Real(low=0))
    label_passes: int = option(1, "passes over the labelled images per epoch (semi-supervised "
                               "models): 1 as Pyro's M2 example; more when labels are few",
                               POSITIVE)
    beta_schedule: str = option("constant", "beta over training: constant, linear, cyclical",
                                OneOf(SCHEDULES))
    warmup_epochs: float = option(10.0, "epochs of the linear beta warm-up", Real(low=0))
    cycles: int = option(4, "cycles of the cyclical beta schedule", POSITIVE)
    log_every: int = option(50, "steps between loss checks on the progress bar", POSITIVE)
    eval_batch_size: int = option(1000, "datapoints per pass of the per-epoch test ELBO",
                                  POSITIVE)
    # "auto": trace the loss once per batch shape where that is checked to be safe, else
    # eager; "jit" insists on tracing (train/step.py)
    engine: str = option("auto", "auto (trace the loss once per batch shape where checked "
                         "safe), eager, or jit", OneOf(("auto", "eager", "jit")))

    def __post_init__(self):
        validate(self)
        BetaSchedule.from_config(self)  # the fields that only make sense together


def _check_device(name: str) -> None:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        raise PyroVAEError(f"TrainConfig.device (--device) = {name!r} is invalid: it must be "
                           f"auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    labels: int | None = None  # training labels kept (semi-supervised models); None: all
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        try:
            return cls(dataset=d["dataset"], data_dir=d.get("data_dir"), labels=d.get("labels"),
                       model=config_section(ModelConfig, d.get("model", {})),
                       train=config_section(TrainConfig, d.get("train", {})))
        except (KeyError, TypeError) as e:
            raise PyroVAEError(f"run configuration is incomplete or malformed: {e}") from None


def config_section(cls, d: dict[str, Any]):
    """``cls(**d)`` for a section of a config.json, validated like any config.

    A run written by another pyrovae version may lack fields added since (they take
    their defaults) or hold fields removed since (they are ignored); either is said in a
    warning, so a resumed run never changes silently.
    """
    if not isinstance(d, dict):
        raise PyroVAEError(f"the {cls.__name__} section of config.json is not an object")
    names = {f.name for f in dataclasses.fields(cls)}
    missing, unknown = sorted(names - set(d)), sorted(set(d) - names)
    if missing or unknown:
        warnings.warn(f"config.json ({cls.__name__}) was written by another pyrovae version: "
                      + "; ".join(part for part in (
                          f"missing {', '.join(missing)} (defaults used)" if missing else "",
                          f"ignored {', '.join(unknown)}" if unknown else "") if part),
                      stacklevel=2)
    return cls(**{k: v for k, v in d.items() if k in names})
