"""The guide of the semi-supervised VAE: a classifier q(y | x) and q(z | x, y).

On an unlabelled batch ``guide(x)`` samples y from the classifier at a site marked for
parallel enumeration, so ``TraceEnum_ELBO`` and the evaluator sum over its values; on a
labelled batch ``guide(x, y)`` encodes z given the label and says what the classifier
would have given it (:func:`~pyrovae.infer.handlers.label_likelihood`), which only the
classification-loss handler uses.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.data import one_hot_any
from pyrovae.guides.amortized import Guide, encoder_for
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.infer.handlers import label_likelihood
from pyrovae.infer.sites import batch_plate
from pyrovae.nets import MLP
from pyrovae.registry import register


class SemiSupervisedGuide(Guide):
    """``guide(x, y=None)``.

    :param classifier: ``x -> logits [..., num_classes]``.
    :param z_guide: a conditional :class:`DiagonalGaussianGuide` (its encoder reads
        ``(x, onehot(y))``) whose family gives q(z | x, y).
    """

    traceable = True  # structure independent of data values: fit may trace its loss

    def __init__(self, classifier: nn.Module, z_guide: DiagonalGaussianGuide):
        super().__init__()
        self.classifier, self.z_guide = classifier, z_guide
        self.num_classes, self.latent_dim = z_guide.num_classes, z_guide.latent_dim

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x, y) for given labels (what the VampPrior's components need)."""
        return self.z_guide.posterior(x, y)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits of q(y | x)."""
        return self.classifier(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        q_y = dist.Categorical(logits=self.classifier(x))
        with batch_plate(x):
            if y is None:
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            else:
                label_likelihood("y", q_y, y)
            y1 = one_hot_any(y, self.num_classes, x.shape[0]).to(x.dtype)
            h = self.z_guide.encoder(x, y1)
            return pyro.sample("z", self.z_guide.posterior_from_features(h))


@register("guide", "ssvae")
def ssvae_guide(cfg, *, x_dim: int, num_classes: int):
    encoder = encoder_for(cfg, x_dim=x_dim, num_classes=num_classes, out_dim=2 * cfg.latent_dim)
    z_guide = DiagonalGaussianGuide(encoder, cfg.latent_dim, num_classes=num_classes,
                                    scale=cfg.scale, init_scale=cfg.init_scale or None)
    return SemiSupervisedGuide(MLP(x_dim, cfg.hidden, num_classes, activation=cfg.activation),
                               z_guide)
