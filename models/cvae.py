"""The conditional VAE model half: p(z) p(x | z, y) with the label fed to the decoder.

    log p(x, z | y) = log N(z; 0, I) + log p(x | decoder(z, onehot(y)))

The classic recipe of Sohn, Lee & Yan, "Learning Structured Output Representation using
Deep Conditional Generative Models" (NeurIPS 2015) and Kingma et al., "Semi-supervised
Learning with Deep Generative Models" (NeurIPS 2014, model M2 with y observed): the
one-hot label is concatenated to the decoder's input (here) and to the encoder's input
(``guides/gaussian.py`` with ``num_classes``), and the prior stays p(z), independent of y.
With the label observed the ELBO bounds log p(x | y), so the evaluator's
importance-weighted bound on this pair estimates the class-conditional likelihood.

A missing label, a label outside ``0..num_classes-1`` or a label count that differs
from the batch is a :class:`~pyrovae.errors.PyroVAEError`.
"""
from __future__ import annotations

from torch import nn

from pyrovae.errors import PyroVAEError
from pyrovae.models.likelihoods import likelihood
from pyrovae.models.vae import VAE
from pyrovae.nets import ConditionedMLP
from pyrovae.registry import register


class CVAE(VAE):
    """Model ``model(x, y)``: ``z ~ prior``, ``x ~ likelihood(decoder(z, onehot(y)))``.

    :param decoder: a :class:`~pyrovae.nets.ConditionedMLP` mapping ``(z, onehot(y))``.
    """

    def __init__(self, decoder: ConditionedMLP, prior: nn.Module, **options):
        super().__init__(decoder, prior, num_classes=decoder.num_classes, **options)


def build_conditional(cls, cfg, *, x_dim: int, num_classes: int, prior: nn.Module):
    """``cls(decoder, prior, ...)`` with the label-reading MLP decoder of ``cfg``."""
    if num_classes < 2:
        raise PyroVAEError(f"--model {cfg.model} needs a labelled dataset; this one has "
                           f"{num_classes} classes")
    lik = likelihood(cfg.likelihood)
    decoder = ConditionedMLP(cfg.latent_dim, num_classes, cfg.hidden, lik.outputs * x_dim,
                             activation=cfg.activation)
    return cls(decoder, prior, likelihood=cfg.likelihood, data_init=cfg.output_bias == "data")


@register("model", "cvae", labels=True)
def cvae(cfg, *, x_dim: int, num_classes: int, prior: nn.Module):
    return build_conditional(CVAE, cfg, x_dim=x_dim, num_classes=num_classes, prior=prior)
