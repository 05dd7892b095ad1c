"""Convolutional encoder and decoder for square binary images (dSprites at 64x64 or 32x32).

    h = relu(conv_4x4/2(...relu(conv_4x4/2(x)))),  out = W2 relu(W1 flatten(h))

The architecture of Locatello et al. 2019 (Table 1; disentanglement_lib's ``conv_encoder``
and ``deconv_decoder``), which follows Higgins et al. 2017 ("beta-VAE") and is the one
used for dSprites across that literature: four 4x4 stride-2 convolutions with 32, 32, 64,
64 channels and ReLU, a 256-unit dense layer, then the output layer; the decoder mirrors it
(dense 256, dense 64*4*4, transposed convolutions with 64, 32, 32 channels, then one output
channel of Bernoulli logits). (Burgess et al. 2018, "Understanding disentangling in
beta-VAE", use a close variant: 32 channels in every conv and two 256-unit dense layers.)

Padding 1 halves the side exactly, as TensorFlow's "same" padding does for even sides. Other
sides: one stride-2 layer per halving down to 4x4, keeping the *last* channels of the
64x64 stack, so 32x32 drops the first conv (32, 64, 64) and its mirror; the dense layers
stay identical at every size. Inputs and outputs are flat ``[..., size * size]`` rows with
any number of leading dims (particle dims of importance-weighted evaluators): they are
flattened into one batch dim for the convolutions and restored after.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pyrovae.errors import PyroVAEError

CHANNELS_64 = (32, 32, 64, 64)  # encoder conv widths at 64x64, first layer first
HIDDEN = 256
BASE = 4  # side of the smallest feature map


class ConvNetError(PyroVAEError):
    """An unsupported image size or an input of the wrong width; the message says which."""


def conv_channels(size: int) -> tuple:
    """Encoder conv widths for a ``size`` x ``size`` image: one per halving down to 4x4.

    :param size: a power of two >= 8.
    :returns: e.g. ``(32, 32, 64, 64)`` for 64, ``(32, 64, 64)`` for 32.
    """
    n = int(round(math.log2(size / BASE))) if isinstance(size, int) and size > 0 else -1
    if n < 1 or BASE * 2 ** n != size:
        raise ConvNetError(f"image size must be a power of two >= 8 (e.g. 32 or 64); "
                           f"got {size!r}")
    widths = (CHANNELS_64[0],) * max(n - len(CHANNELS_64), 0) + CHANNELS_64
    return widths[-n:]


def image_side(x_dim: int) -> int:
    """``s`` for flat square images of ``x_dim = s * s`` pixels."""
    side = math.isqrt(x_dim)
    if side * side != x_dim:
        raise ConvNetError(f"--network conv needs square images; {x_dim} pixels are not")
    return side


def _check_input(x: torch.Tensor, width: int, who: str) -> None:
    if x.dim() < 1 or x.shape[-1] != width:
        raise ConvNetError(f"{who} wants inputs [..., {width}]; got shape {tuple(x.shape)}"
                           f" (flatten images to rows of size * size pixels)")


class ConvEncoder(nn.Module):
    """``x [..., size*size] -> [..., out_dim]``: the conv stack, dense 256, dense out_dim.

    :param size: image side (power of two >= 8; 64 or 32 for dSprites).
    :param out_dim: output width, e.g. ``2 * latent_dim`` for a (loc, raw scale) guide.
    """

    def __init__(self, size: int, out_dim: int):
        super().__init__()
        widths = conv_channels(size)
        layers, prev = [], 1
        for w in widths:
            layers += [nn.Conv2d(prev, w, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            prev = w
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(prev * BASE * BASE, HIDDEN),
                                  nn.ReLU(), nn.Linear(HIDDEN, out_dim))
        self.size, self.in_dim, self.out_dim = size, size * size, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_dim, "ConvEncoder")
        lead = x.shape[:-1]
        h = self.convs(x.reshape(-1, 1, self.size, self.size))
        return self.head(h).reshape(*lead, self.out_dim)


class ConvDecoder(nn.Module):
    """``z [..., latent_dim] -> logits [..., size*size]``: dense 256, dense 64*4*4, then
    transposed convs mirroring :class:`ConvEncoder`, no activation on the logits.

    :param latent_dim: width of ``z``.
    :param size: image side (power of two >= 8; 64 or 32 for dSprites).
    """

    def __init__(self, latent_dim: int, size: int):
        super().__init__()
        widths = conv_channels(size)[::-1]  # deepest first: 64, 64, 32, 32 at 64x64
        self.head = nn.Sequential(nn.Linear(latent_dim, HIDDEN), nn.ReLU(),
                                  nn.Linear(HIDDEN, widths[0] * BASE * BASE), nn.ReLU())
        layers = []
        outs = widths[1:] + (1,)
        for i, (w_in, w_out) in enumerate(zip(widths, outs)):
            layers.append(nn.ConvTranspose2d(w_in, w_out, kernel_size=4, stride=2, padding=1))
            if i < len(widths) - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)
        self.first_width = widths[0]
        self.size, self.in_dim, self.out_dim = size, latent_dim, size * size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_input(z, self.in_dim, "ConvDecoder")
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, self.in_dim))
        h = self.deconvs(h.view(-1, self.first_width, BASE, BASE))
        return h.reshape(*lead, self.out_dim)

    @torch.no_grad()
    def init_output_bias_(self, mean: torch.Tensor, *, eps: float = 1e-3) -> "ConvDecoder":
        """Start the logits at the data's mean pixel: bias = logit(mean of ``mean``).

        The output layer has one channel, so one bias for all pixels (not per pixel as
        for a dense decoder). Use this, not a helper that looks for the last
        ``nn.Linear``: here that is the hidden 256 -> 1024 layer.

        :param mean: pixel frequencies ``[size*size]`` (or a scalar), e.g. ``x.mean(0)``.
        :returns: ``self``.
        """
        last = self.deconvs[-1]
        p = torch.as_tensor(mean, dtype=torch.float64).mean().clamp(eps, 1 - eps)
        last.bias.fill_(float(torch.log(p) - torch.log1p(-p)))
        return self
