"""The shape every amortized guide in this package shares.

    q(z | x) = family(phi),   phi = features(x [, y])

An encoder network maps the input to a feature vector, and a guide family turns features
into a distribution.  Keeping the two apart is what lets the non-amortized guide of
``guides/local.py`` replace ``features(x)`` by a free vector per datapoint while reusing
the family unchanged (Cremer, Li & Duvenaud, "Inference Suboptimality in VAEs", 2018).
"""
from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from pyrovae import registry


def guide_classes(cfg, num_classes: int) -> int:
    """How many classes a guide built for ``cfg`` conditions on: ``num_classes`` when the
    configured model is conditional (its factory says ``conditional = True``, as
    ``models/cvae.py`` does), else 0."""
    conditional = getattr(registry.get("model", cfg.model), "conditional", False)
    return num_classes if conditional else 0


class AmortizedGuide(PyroModule):
    """``guide(x, y=None)``: ``z ~ posterior_from_features(features(x, y))`` in the data plate.

    Subclasses implement :meth:`posterior_from_features`.

    :param encoder: ``x -> features`` (``num_classes == 0``) or ``(x, one_hot(y)) ->
        features`` (a :class:`pyrovae.nets.ConditionedMLP`, ``num_classes > 0``).
    :param latent_dim: dimension of ``z``.
    :param num_classes: condition on the label ``y`` when > 0.
    """

    def __init__(self, encoder: nn.Module, latent_dim: int, *, num_classes: int = 0):
        super().__init__()
        self.encoder = encoder
        self.conditional = num_classes > 0
        self.latent_dim = latent_dim
        self.num_classes = num_classes

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not self.num_classes:
            return self.encoder(x)
        from pyrovae.models.cvae import labels_one_hot

        y1 = labels_one_hot(y, self.num_classes, x.shape[0], who=f"the conditional "
                            f"{type(self).__name__}")
        return self.encoder(x, y1.to(x.device, x.dtype))

    def posterior_from_features(self, h: torch.Tensor):
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x [, y]) as a distribution with batch shape ``x.shape[:-1]``."""
        return self.posterior_from_features(self.features(x, y))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        q = self.posterior(x, y)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", q)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean E_q[z | x] (latent plots, active units)."""
        return self.posterior(x, y).mean
