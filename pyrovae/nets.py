"""Plain ``nn.Module`` building blocks, passed into models and guides.

Networks stay plain torch modules (not PyroModules): their parameters are reached
through ordinary ``nn.Module`` attribute lookup, which keeps Pyro's per-attribute
bookkeeping out of the inner loop, and nothing in a model hard-codes a size.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.errors import choose

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    return choose(ACTIVATIONS, name, "activation")()


# sigma = softplus(raw) is bounded-gradient and never overflows; exp(raw / 2) is the
# log-variance convention of Kingma & Welling.  Both are offered; see the README.
SCALE_FNS = {
    "softplus": lambda raw: F.softplus(raw) + 1e-5,
    "exp": lambda raw: torch.exp(0.5 * raw),
}


# the raw value r with SCALE_FNS[name](r) == sigma, to start a guide at a chosen sigma
RAW_FOR_SCALE = {
    "softplus": lambda sigma: math.log(math.expm1(sigma - 1e-5)),
    "exp": lambda sigma: 2.0 * math.log(sigma),
}


class MLP(nn.Sequential):
    """``in_dim -> hidden... -> out_dim`` with an activation between layers, none at the end.

    :param in_dim: input width.
    :param hidden: one width or a sequence of widths (``()`` gives a single linear map).
    :param out_dim: output width.
    """

    def __init__(self, in_dim: int, hidden: int | Sequence[int], out_dim: int, *,
                 activation: str = "relu"):
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        layers: list[nn.Module] = []
        prev = in_dim
        for w in widths:
            layers += [nn.Linear(prev, w), globals()["activation"](activation)]
            prev = w
        layers.append(nn.Linear(prev, out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


_counter = itertools.count()


def unique_name(prefix: str) -> str:
    """``prefix`` plus a number no other call in this process returns: the root name of a
    PyroModule, so its parameters never collide in Pyro's global parameter store."""
    return f"{prefix.lower()}{next(_counter)}"


class ConditionedMLP(nn.Module):
    """An MLP whose input is ``cat(x, one_hot(y))``: the classic conditional-VAE recipe."""

    def __init__(self, in_dim: int, num_classes: int, hidden, out_dim: int, *,
                 activation: str = "relu"):
        super().__init__()
        self.num_classes = num_classes
        self.net = MLP(in_dim + num_classes, hidden, out_dim, activation=activation)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor, y_onehot: torch.Tensor) -> torch.Tensor:
        # both broadcast: particle dims on x, enumerated labels on y (semi-supervised VAE)
        shape = torch.broadcast_shapes(x.shape[:-1], y_onehot.shape[:-1])
        return self.net(torch.cat([x.expand(*shape, x.shape[-1]),
                                   y_onehot.to(x.dtype).expand(*shape, self.num_classes)], -1))
