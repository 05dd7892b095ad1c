"""Build a model/guide pair from registered halves.

    (model, guide) = build_pair(ModelConfig(model="vae", prior="vamp", guide="iaf"), x_dim=784)

The guide is built first because some priors (the VampPrior) use its encoder.  A model
registered with ``labels=True`` (the CVAE) gets a guide conditioned on the label; every
other model gets ``num_classes=0`` guides and priors.  Nothing here knows a particular model.
"""
from __future__ import annotations

from pyrovae import registry
from pyrovae.config import ModelConfig
from pyrovae.errors import PyroVAEError


def model_takes_labels(name: str) -> bool:
    """Whether the registered model ``name`` is conditional (declared ``labels=True``)."""
    return bool(registry.option("model", name, "labels", False))


def build_pair(cfg: ModelConfig, *, x_dim: int, num_classes: int = 10, train_x=None):
    """``(model, guide)`` for ``cfg``: PyroModules following the pair contract.

    :param x_dim: size of a flattened datapoint.
    :param num_classes: label classes of the data (conditional models only).
    :param train_x: with ``cfg.output_bias == "data"``, a model offering ``init_from_data``
        starts its decoder at the training pixels' marginal frequencies.
    """
    if cfg.output_bias not in ("data", "default"):
        raise PyroVAEError(f"unknown output_bias {cfg.output_bias!r}; valid: data, default")
    classes = num_classes if model_takes_labels(cfg.model) else 0
    guide = registry.get("guide", cfg.guide)(cfg, x_dim=x_dim, num_classes=classes)
    prior = registry.get("prior", cfg.prior)(cfg, x_dim=x_dim, num_classes=classes, guide=guide)
    model = registry.get("model", cfg.model)(cfg, x_dim=x_dim, num_classes=num_classes,
                                             prior=prior)
    if train_x is not None and cfg.output_bias == "data" and hasattr(model, "init_from_data"):
        model.init_from_data(train_x)
    return model, guide
