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
    """Whether the registered model ``name`` reads labels (declared ``labels=True``, or
    ``labels="optional"`` for a semi-supervised model that also runs without them)."""
    return bool(registry.option("model", name, "labels", False))


def model_needs_labels(name: str) -> bool:
    """Whether ``name`` cannot run without labels (a conditional model, not a semi-supervised one)."""
    return registry.option("model", name, "labels", False) is True


def build_pair(cfg: ModelConfig, *, x_dim: int, num_classes: int = 10):
    """``(model, guide)`` for ``cfg``: PyroModules following the pair contract.

    Data-dependent initialization (``cfg.output_bias == "data"``) happens where data first
    meets the model, in :func:`pyrovae.fit`, so this pair, a hand-composed one and the
    CLI's start from the same place for the same seed.

    :param x_dim: size of a flattened datapoint.
    :param num_classes: label classes of the data (conditional models only).
    """
    needs = registry.option("model", cfg.model, "guide")
    if needs is not None and cfg.guide != needs:
        raise PyroVAEError(f"--model {cfg.model} needs --guide {needs} (got {cfg.guide!r})")
    classes = num_classes if model_takes_labels(cfg.model) else 0
    guide = registry.get("guide", cfg.guide)(cfg, x_dim=x_dim, num_classes=classes)
    prior = registry.get("prior", cfg.prior)(cfg, x_dim=x_dim, num_classes=classes, guide=guide)
    model = registry.get("model", cfg.model)(cfg, x_dim=x_dim, num_classes=num_classes,
                                             prior=prior)
    return model, guide


def registered_pairs() -> list[tuple[str, str]]:
    """Every (model, guide) the registry can build from a config: a model that declares the
    guide it needs gets only that one; guides that need data (``needs_data``) are left out."""
    required = {registry.option("model", m, "guide") for m in registry.names("model")} - {None}
    pairs = []
    for m in registry.names("model"):
        need = registry.option("model", m, "guide")
        pairs += [(m, need)] if need else [
            (m, g) for g in registry.names("guide") if g not in required
            and not getattr(registry.get("guide", g), "needs_data", False)]
    return pairs
