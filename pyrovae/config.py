"""Frozen run configuration, built once by the composition root (``cli.py``) or a script.

Saved as ``config.json`` and inside every checkpoint, so a run can be rebuilt and
resumed from its directory alone.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pyrovae import registry
from pyrovae.errors import PyroVAEError


@dataclass(frozen=True)
class ModelConfig:
    """What to build: names resolved through the registry plus network sizes."""

    model: str = "vae"
    prior: str = "standard"
    guide: str = "diagonal"
    latent_dim: int = 50
    hidden: int = 400
    # relu and sigma = exp(raw / 2) measured best for the Bernoulli MLP VAE (softplus
    # hidden units cost ~2 nats at 10 epochs); see results/quality_ablation.md
    activation: str = "relu"
    scale: str = "exp"
    # sigma of the diagonal guide at initialization (0: PyTorch's init, sigma ~ 1);
    # starting below the prior's 1 measured +0.4 nats (results/quality_ablation.md)
    init_scale: float = 0.1
    # "data": the decoder's output bias starts at logit(mean training pixel); "default":
    # PyTorch's initialization (README, results quality: +0.3 nats at 10 epochs)
    output_bias: str = "data"
    # options read only by particular priors/guides (e.g. mixture components)
    num_components: int = 10
    num_pseudo_inputs: int = 500
    flow_layers: int = 2


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loop reads nothing else."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    objective: str = "elbo"
    beta: float = 1.0
    beta_schedule: str = "constant"
    warmup_epochs: float = 10.0
    cycles: int = 4
    log_every: int = 50
    eval_batch_size: int = 1000
    # "jit": trace the loss once per batch shape (static pairs, one process; pyrovae/step.py)
    engine: str = "eager"


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
            return cls(
                dataset=d["dataset"],
                data_dir=d.get("data_dir"),
                model=_known(ModelConfig, d.get("model", {})),
                train=_known(TrainConfig, d.get("train", {})),
            )
        except (KeyError, TypeError) as e:
            raise PyroVAEError(f"run configuration is incomplete or malformed: {e}") from None


def _known(cls, d: dict[str, Any]):
    # tolerate fields added or removed since the run was written
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def build_pair(cfg: ModelConfig, *, x_dim: int, num_classes: int, train_x=None):
    """Build ``(model, guide)`` from registered constructors.

    The guide is built first because some priors (VampPrior) use its encoder.  With
    ``train_x`` and ``cfg.output_bias == "data"``, a model offering ``init_from_data``
    starts its decoder at the training pixels' marginal frequencies.
    """
    if cfg.output_bias not in ("data", "default"):
        raise PyroVAEError(f"unknown output_bias {cfg.output_bias!r}; valid: data, default")
    guide = registry.get("guide", cfg.guide)(cfg, x_dim=x_dim, num_classes=num_classes)
    prior = registry.get("prior", cfg.prior)(cfg, x_dim=x_dim, num_classes=num_classes,
                                             guide=guide)
    model = registry.get("model", cfg.model)(cfg, x_dim=x_dim, num_classes=num_classes,
                                             prior=prior)
    if train_x is not None and cfg.output_bias == "data" and hasattr(model, "init_from_data"):
        model.init_from_data(train_x)
    return model, guide
