"""Observation models p(x | z) of the built-in VAEs, chosen by name.

A likelihood says how many decoder outputs a pixel needs and turns them into a
distribution with one event dim over the pixels; ``init_bias_`` starts the decoder's last
layer at the data's per-pixel marginal (the Bernoulli case is Burda et al.'s output-bias
initialization; the others match mean and spread the same way).

- ``bernoulli``: Bernoulli(sigmoid(l)) on binarized pixels.
- ``gaussian``: N(mu, sigma^2) with a learned per-pixel sigma = softplus(r) + 1e-4, on
  uniformly dequantized pixels (``pyrovae.data``), so the density is bounded.
- ``logistic``: the discretized logistic over the 256 levels, a proper pmf on 8-bit pixels.
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.distributions import DiscretizedLogistic, IndependentBernoulli
from pyrovae.errors import choose

MIN_SCALE = 1e-4


def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


class Bernoulli:
    outputs = 1

    def __call__(self, out: torch.Tensor):
        return IndependentBernoulli(out)

    def bias(self, x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        p = x.mean(0).clamp(eps, 1 - eps)
        return torch.log(p) - torch.log1p(-p)


class Gaussian:
    outputs = 2

    def _split(self, out):
        loc, raw = out.chunk(2, dim=-1)
        return loc, F.softplus(raw) + MIN_SCALE

    def __call__(self, out: torch.Tensor):
        loc, scale = self._split(out)
        return dist.Normal(loc, scale).to_event(1)

    def spread(self, x: torch.Tensor) -> torch.Tensor:
        return x.std(0).clamp(min=1e-2)

    def bias(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(0), _inv_softplus(self.spread(x) - MIN_SCALE)])


class Logistic(Gaussian):
    def __call__(self, out: torch.Tensor):
        loc, scale = self._split(out)
        return DiscretizedLogistic(loc, scale)

    def spread(self, x: torch.Tensor) -> torch.Tensor:
        return super().spread(x) * math.sqrt(3) / math.pi  # a logistic's sd is s pi / sqrt(3)


LIKELIHOODS = {"bernoulli": Bernoulli(), "gaussian": Gaussian(), "logistic": Logistic()}


def likelihood(name: str):
    return choose(LIKELIHOODS, name, "likelihood")


@torch.no_grad()
def init_output_bias_(decoder: nn.Module, lik, x: torch.Tensor) -> None:
    """The last ``nn.Linear`` of ``decoder`` predicts the pixels' marginal from the start
    (a decoder that knows better -- the conv decoder -- says so with its own method)."""
    if hasattr(decoder, "init_output_bias_"):
        decoder.init_output_bias_(x.reshape(x.shape[0], -1).mean(0))
        return
    last = [m for m in decoder.modules() if isinstance(m, nn.Linear)][-1]
    last.bias.copy_(lik.bias(x.reshape(x.shape[0], -1).to(last.bias)))
