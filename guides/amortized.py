"""The shape every guide in this package shares.

    q(z | x) = family(phi),   phi = features(x [, y])

:class:`Guide` is the contract half every guide implements -- ``guide(x, y=None)``
samples ``z ~ posterior(x, y)`` inside the data plate -- plus ``encode`` (the posterior
mean, by Monte Carlo where it has no closed form).  :class:`AmortizedGuide` splits the
posterior into an encoder network and a family: keeping the two apart is what lets the
non-amortized guide of ``guides/local.py`` replace ``features(x)`` by a free vector per
datapoint while reusing the family unchanged (Cremer, Li & Duvenaud, "Inference
Suboptimality in VAEs", 2018).
"""
from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from pyrovae.conv_nets import ConvEncoder, image_side
from pyrovae.data import labels_one_hot
from pyrovae.errors import PyroVAEError
from pyrovae.infer.sites import batch_plate
from pyrovae.nets import MLP, ConditionedMLP, unique_name


class Guide(PyroModule):
    """``guide(x, y=None)``: ``z ~ posterior(x, y)`` in the ``data`` plate."""

    def __init__(self):
        # a name of its own: guides never share parameters in Pyro's global store
        super().__init__(name=unique_name(type(self).__name__))

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x [, y]) as a distribution with batch shape ``x.shape[:-1]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        q = self.posterior(x, y)
        with batch_plate(x):
            return pyro.sample("z", q)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
               num_samples: int = 64) -> torch.Tensor:
        """Posterior mean E_q[z | x] (latent plots, active units); a Monte Carlo mean of
        ``num_samples`` draws for families without a closed form (flows)."""
        q = self.posterior(x, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((num_samples,)).mean(0)


class AmortizedGuide(Guide):
    """``posterior(x, y) = posterior_from_features(features(x, y))``.

    Subclasses implement :meth:`posterior_from_features`.

    :param encoder: ``x -> features`` (``num_classes == 0``) or ``(x, one_hot(y)) ->
        features`` (a :class:`pyrovae.nets.ConditionedMLP`, ``num_classes > 0``).
    :param latent_dim: dimension of ``z``.
    :param num_classes: condition on the label ``y`` when > 0.
    """

    traceable = True  # structure independent of data values: fit may trace its loss

    def __init__(self, encoder: nn.Module, latent_dim: int, *, num_classes: int = 0):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.num_classes = num_classes

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not self.num_classes:
            return self.encoder(x)
        y1 = labels_one_hot(y, self.num_classes, x.shape[0],
                            who=f"the conditional {type(self).__name__}")
        return self.encoder(x, y1.to(x.device, x.dtype))

    def posterior_from_features(self, h: torch.Tensor):
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return self.posterior_from_features(self.features(x, y))


def encoder_for(cfg, *, x_dim: int, num_classes: int, out_dim: int) -> nn.Module:
    """The encoder of a registered guide: an MLP (``ConditionedMLP`` when labels are used),
    or the conv stack for ``cfg.network == "conv"``."""
    if cfg.network == "conv":
        if num_classes:
            raise PyroVAEError("--network conv is for unconditional models; use mlp")
        return ConvEncoder(image_side(x_dim), out_dim)
    if num_classes:
        return ConditionedMLP(x_dim, num_classes, cfg.hidden, out_dim, activation=cfg.activation)
    return MLP(x_dim, cfg.hidden, out_dim, activation=cfg.activation)
