"""The semi-supervised VAE (Kingma, Rezende, Mohamed & Welling 2014, model M2).

    p(x, y, z) = Cat(y; uniform) p(z) p(x | decoder(z, onehot(y)))

The label is a latent variable that is observed where it is known: ``model(x, y)`` on
labelled batches, ``model(x)`` on unlabelled ones, where the guide's classifier q(y | x)
proposes it and ``TraceEnum_ELBO`` (objective ``enum``) sums it out exactly (``elbo``
samples it instead).  The classification loss on labelled data is the effect handler
:func:`pyrovae.infer.handlers.classify_labels`, not part of the model.  The evaluator sums
the enumerated label too, so the bound on log p(x) stands beside the VAE's.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.data import labels_one_hot, one_hot_any
from pyrovae.infer.sites import batch_plate
from pyrovae.models.cvae import build_conditional
from pyrovae.models.vae import VAE
from pyrovae.nets import ConditionedMLP
from pyrovae.registry import register


class SSVAE(VAE):
    """Model ``model(x, y=None)``: ``y ~ Cat(1/C)`` (observed when given), ``z ~ prior``,
    ``x ~ likelihood(decoder(z, onehot(y)))``."""

    def __init__(self, decoder: ConditionedMLP, prior: nn.Module, **options):
        super().__init__(decoder, prior, num_classes=decoder.num_classes, **options)
        self.register_buffer("class_logits", torch.zeros(decoder.num_classes))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        if y is not None:
            labels_one_hot(y, self.num_classes, x.shape[0], who="the semi-supervised model")
        with batch_plate(x):
            y = pyro.sample("y", dist.Categorical(logits=self.class_logits), obs=y)
            z = pyro.sample("z", self.prior())
            out = self.decoder(z, one_hot_any(y, self.num_classes, x.shape[0]).to(z.dtype))
            return pyro.sample("x", self.likelihood(out), obs=x)


@register("model", "ssvae", labels="optional", guide="ssvae")
def ssvae(cfg, *, x_dim: int, num_classes: int, prior: nn.Module):
    return build_conditional(SSVAE, cfg, x_dim=x_dim, num_classes=num_classes, prior=prior)
