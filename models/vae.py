"""The VAE model half: p(z) p(x | z [, y]) with a registered likelihood.

    log p(x, z) = log p(z) + log p(x | decoder(z))

The prior and the decoder network are passed in, so the same model serves any prior
(``models/priors.py``), any decoder (``pyrovae/nets.py``) and any likelihood
(``models/likelihoods.py``); with ``num_classes > 0`` the decoder also reads the one-hot
label (the conditional VAE, ``models/cvae.py``).
"""
from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from pyrovae.conv_nets import ConvDecoder, image_side
from pyrovae.data import labels_one_hot
from pyrovae.errors import PyroVAEError
from pyrovae.infer.sites import batch_plate
from pyrovae.models.likelihoods import init_output_bias_, likelihood
from pyrovae.nets import MLP, unique_name
from pyrovae.registry import register


class VAE(PyroModule):
    """Model ``model(x, y=None)``: ``z ~ prior``, ``x ~ likelihood(decoder(z [, onehot(y)]))``.

    :param decoder: maps ``z[..., latent_dim]`` (and ``onehot(y)`` when ``num_classes``) to
        ``[..., outputs * x_dim]``, ``outputs`` per pixel as the likelihood needs.
    :param prior: module whose ``forward()`` returns a distribution over ``z``.
    :param likelihood: ``bernoulli``, ``gaussian`` or ``logistic``.
    :param num_classes: > 0 for a conditional model (labels required).
    :param data_init: start the decoder at the data's pixel marginals when ``fit`` first
        shows it data (:meth:`init_from_data`); False keeps PyTorch's initialization.
    """

    traceable = True  # structure independent of data values: fit may trace its loss

    def __init__(self, decoder: nn.Module, prior: nn.Module, *, likelihood: str = "bernoulli",
                 num_classes: int = 0, data_init: bool = True):
        # a name of its own, so that under Pyro's global parameter store (pyro.infer.SVI)
        # two models never share "decoder" parameters
        super().__init__(name=unique_name(type(self).__name__))
        self.decoder = decoder
        self.prior = prior
        self.likelihood_name = likelihood
        self.likelihood = globals()["likelihood"](likelihood)
        self.num_classes = num_classes
        self.data_init = data_init
        self.data_initialized = False
        self.register_load_state_dict_post_hook(lambda module, _: setattr(
            module, "data_initialized", True))  # a loaded model is past its initialization

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        y1 = (labels_one_hot(y, self.num_classes, x.shape[0]).to(x.device)
              if self.num_classes else None)
        with batch_plate(x):
            z = pyro.sample("z", self.prior())
            # the decoder broadcasts y over any particle dims the evaluator puts on z
            out = self.decoder(z) if y1 is None else self.decoder(z, y1)
            return pyro.sample("x", self.likelihood(out), obs=x)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """Once, before training: the decoder's output bias makes every pixel start at its
        marginal over ``x`` (as Burda et al.'s IWAE code does for the Bernoulli)."""
        if self.data_init and not self.data_initialized:
            init_output_bias_(self.decoder, self.likelihood, x)
        self.data_initialized = True


def decoder_for(cfg, x_dim: int, lik) -> nn.Module:
    """The decoder of ``cfg.network``: an MLP, or the transposed-conv stack (one output per
    pixel: Bernoulli logits)."""
    if cfg.network == "conv":
        if lik.outputs != 1:
            raise PyroVAEError("--network conv decodes one logit per pixel: use "
                               "--likelihood bernoulli")
        return ConvDecoder(cfg.latent_dim, image_side(x_dim))
    return MLP(cfg.latent_dim, cfg.hidden, lik.outputs * x_dim, activation=cfg.activation)


@register("model", "vae")
def vae(cfg, *, x_dim: int, num_classes: int, prior: nn.Module):
    lik = likelihood(cfg.likelihood)
    decoder = decoder_for(cfg, x_dim, lik)
    return VAE(decoder, prior, likelihood=cfg.likelihood, data_init=cfg.output_bias == "data")
