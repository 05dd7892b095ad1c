"""Frozen run configuration, built once by the composition root (``pyrovae.cli``) or a script.

Saved as ``config.json`` and inside every checkpoint, so a run can be rebuilt and
resumed from its directory alone.  Every field carries a help line (``metadata["help"]``),
from which the command line's flags are generated (:mod:`pyrovae.options`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pyrovae.errors import PyroVAEError


def option(default, help: str):
    """A config field with the help line its command-line flag shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelConfig:
    """What to build: names resolved through the registry plus network sizes."""

    model: str = option("vae", "model half p(z) p(x|z) by registered name (vae, cvae, ...)")
    prior: str = option("standard", "prior p(z): standard, mog, vamp, flow")
    guide: str = option("diagonal", "guide q(z|x): diagonal, fullcov, iaf")
    likelihood: str = option("bernoulli", "observation model p(x|z): bernoulli (binarized "
                                          "pixels), gaussian (dequantized pixels, learned "
                                          "variance), logistic (discretized, 256 levels)")
    latent_dim: int = option(50, "dimension of z")
    hidden: int = option(400, "width of the hidden layer of encoder and decoder MLPs")
    # relu and sigma = exp(raw / 2) measured best for the Bernoulli MLP VAE (softplus
    # hidden units cost ~2 nats at 10 epochs); see docs/quality.md
    activation: str = option("relu", "hidden activation: relu, leaky_relu, elu, softplus, "
                                     "tanh, gelu")
    scale: str = option("exp", "guide sigma parameterization: exp (log-variance) or softplus")
    # starting below the prior's 1 measured +0.4 nats (docs/quality.md)
    init_scale: float = option(0.1, "guide sigma at initialization (0: PyTorch's init, ~1)")
    # "data": the decoder's output bias starts at logit(mean training pixel) (+0.3 nats)
    output_bias: str = option("data", "decoder output bias at the start: data (each "
                                      "pixel's marginal over the training set) or default")
    num_components: int = option(10, "mixture components of the mog prior")
    num_pseudo_inputs: int = option(500, "pseudo-inputs of the vamp prior")
    flow_layers: int = option(2, "autoregressive layers of the flow prior / iaf guide")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loop reads nothing else."""

    epochs: int = option(10, "passes over the training set")
    batch_size: int = option(128, "datapoints per optimizer step")
    lr: float = option(1e-3, "Adam learning rate")
    seed: int = option(0, "seed of initialization, minibatch order and noise")
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N")
    objective: str = option("elbo", "training objective, e.g. elbo, iwae:5, dreg:5, renyi:0.5:5")
    beta: float = option(1.0, "KL weight beta of the beta-VAE (>= 0)")
    beta_schedule: str = option("constant", "beta over training: constant, linear, cyclical")
    warmup_epochs: float = option(10.0, "epochs of the linear beta warm-up")
    cycles: int = option(4, "cycles of the cyclical beta schedule")
    log_every: int = option(50, "steps between loss checks on the progress bar")
    eval_batch_size: int = option(1000, "datapoints per pass of the per-epoch test ELBO")
    # "jit": trace the loss once per batch shape (static pairs, one process; train/step.py)
    engine: str = option("eager", "eager, or jit (trace the loss once per batch shape)")


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        try:
            return cls(dataset=d["dataset"], data_dir=d.get("data_dir"),
                       model=config_section(ModelConfig, d.get("model", {})),
                       train=config_section(TrainConfig, d.get("train", {})))
        except (KeyError, TypeError) as e:
            raise PyroVAEError(f"run configuration is incomplete or malformed: {e}") from None


def config_section(cls, d: dict[str, Any]):
    """``cls(**d)`` keeping only ``cls``'s fields: tolerates fields added or removed since
    the run was written (missing ones take their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})
