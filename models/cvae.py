"""The conditional VAE model half: p(z) p(x | z, y) with the label fed to the decoder.

    log p(x, z | y) = log N(z; 0, I) + sum_i log Bernoulli(x_i; sigmoid(f(z, onehot(y))_i))

The classic recipe of Sohn, Lee & Yan, "Learning Structured Output Representation using
Deep Conditional Generative Models" (NeurIPS 2015) and Kingma et al., "Semi-supervised
Learning with Deep Generative Models" (NeurIPS 2014, model M2 with y observed): the
one-hot label is concatenated to the decoder's input (here) and to the encoder's input
(``guides/gaussian.py`` with ``num_classes``), and the prior stays p(z) = N(0, I), independent of y.  With
the label observed the ELBO bounds log p(x | y), so the evaluator's importance-weighted
bound on this pair estimates the class-conditional likelihood.

A missing label, a label outside ``0..num_classes-1`` or a label count that differs
from the batch is a :class:`~pyrovae.errors.PyroVAEError`.
"""
from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from pyrovae.data import labels_one_hot
from pyrovae.distributions import IndependentBernoulli
from pyrovae.errors import PyroVAEError
from pyrovae.nets import ConditionedMLP, init_output_bias_
from pyrovae.registry import register


class CVAE(PyroModule):
    """Model ``model(x, y)``: ``z ~ prior``, ``x ~ Bernoulli(logits=decoder(z, onehot(y)))``.

    :param decoder: a :class:`~pyrovae.nets.ConditionedMLP` mapping ``(z, onehot(y))`` to
        logits ``[..., x_dim]``.
    :param prior: module whose ``forward()`` returns a distribution over ``z``.
    """

    def __init__(self, decoder: ConditionedMLP, prior: nn.Module):
        super().__init__()
        self.decoder = decoder
        self.prior = prior
        self.num_classes = decoder.num_classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        y1 = labels_one_hot(y, self.num_classes, x.shape[0]).to(x.device)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            # the decoder broadcasts y over any particle dims the evaluator puts on z
            logits = self.decoder(z, y1)
            return pyro.sample("x", IndependentBernoulli(logits), obs=x)  # Bernoulli.to_event(1)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Start the decoder at the pixels' marginal frequencies: output bias =
        logit(mean_n x_n), as Burda et al.'s IWAE code does."""
        init_output_bias_(self.decoder, x.mean(0))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y) -> torch.Tensor:
        """Mean image ``sigmoid(decoder(z, onehot(y)))``."""
        y1 = labels_one_hot(y, self.num_classes, z.shape[0]).to(z.device)
        return torch.sigmoid(self.decoder(z, y1))

    @torch.no_grad()
    def sample_prior(self, n: int, y=None) -> torch.Tensor:
        return self.prior().sample((n,))


@register("model", "cvae", labels=True)
def cvae(cfg, *, x_dim: int, num_classes: int, prior: nn.Module):
    if num_classes < 2:
        raise PyroVAEError(f"--model cvae needs a labelled dataset; this one has "
                           f"{num_classes} classes")
    decoder = ConditionedMLP(cfg.latent_dim, num_classes, cfg.hidden, x_dim,
                             activation=cfg.activation)
    return CVAE(decoder, prior)
