"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017): a deterministic discrete-latent autoencoder.

    z_e = enc(x) in R^{D x 7 x 7},   k = argmin_k ||z_e - e_k||,
    p(x | k) = Bernoulli(sigmoid(dec(e_k)))

Plain torch, not a Pyro pair: q(k | x) is the one-hot at the argmin, so there is nothing
to sample in the guide.  Training minimises, per image,

    -log p(x | z_q(x)) + beta ||z_e - sg(e)||^2  (+ ||sg(z_e) - e||^2 without EMA)

and with a prior p(k) over the code grid (``prior.py``) the one-hot q gives the
evidence bound  log p(x) >= log p(x | z_q(x)) + log p(k(x))  (the ELBO with H(q) = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.checks import Int, OneOf, Real, validate
from pyrovae.config import option
from pyrovae.errors import PyroVAEError
from pyrovae.models.vqvae.quantizer import VectorQuantizer


@dataclass(frozen=True)
class VQVAEConfig:
    """Sizes and codebook options; stored beside the run's RunConfig under ``"vqvae"``."""

    # 4: the best nats bound of K = 2, 4, 8, 16, 128 on mnist-sample (docs/vqvae.md)
    num_codes: int = option(4, "VQ-VAE codebook size K", Int(low=2))
    code_dim: int = option(16, "VQ-VAE code vector dimension D", Int(low=1))
    channels: int = option(64, "VQ-VAE convolution channels", Int(low=1))
    res_blocks: int = option(1, "VQ-VAE residual blocks in encoder and decoder", Int(low=0))
    quantizer: str = option("ema", "VQ-VAE codebook learning: ema (moving averages) or loss",
                            OneOf(("ema", "loss")))
    decay: float = option(0.99, "VQ-VAE EMA decay of the codebook statistics",
                          Real(low=0, high=1, below=True))
    commitment: float = option(0.25, "VQ-VAE commitment loss weight", Real(low=0))
    restart_every: int = option(20, "VQ-VAE steps between dead-code restarts (0: never)",
                                Int(low=0))
    restart_threshold: float = option(1.0, "VQ-VAE usage (vectors per batch) below which a "
                                           "code is restarted", Real(low=0))

    def __post_init__(self):
        validate(self)


class ResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): the paper's residual block."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        return x + self.body(x)


def conv_encoder(in_channels: int, channels: int, code_dim: int, res_blocks: int) -> nn.Module:
    """[B, C, 28, 28] -> [B, code_dim, 7, 7] with two stride-2 4x4 convolutions."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(channels, channels, 4, stride=2, padding=1),
        *[ResBlock(channels) for _ in range(res_blocks)], nn.ReLU(),
        nn.Conv2d(channels, code_dim, 1))


def conv_decoder(code_dim: int, channels: int, out_channels: int, res_blocks: int) -> nn.Module:
    """[B, code_dim, 7, 7] -> logits [B, C, 28, 28]: the encoder mirrored with transposed convs."""
    return nn.Sequential(
        nn.Conv2d(code_dim, channels, 3, padding=1),
        *[ResBlock(channels) for _ in range(res_blocks)], nn.ReLU(),
        nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1))


class VQVAE(nn.Module):
    """Encoder, quantizer and Bernoulli decoder over flattened images ``x`` [B, prod(image_shape)].

    :param encoder: image [B, *image_shape] -> [B, D, H, W].
    :param quantizer: a :class:`VectorQuantizer` over D channels.
    :param decoder: [B, D, H, W] -> logits [B, *image_shape].
    """

    def __init__(self, encoder: nn.Module, quantizer: VectorQuantizer, decoder: nn.Module, *,
                 image_shape=(1, 28, 28)):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.image_shape = tuple(image_shape)
        with torch.no_grad():
            grid = encoder(torch.zeros(1, *self.image_shape)).shape
        self.grid_shape = tuple(grid[2:])  # (7, 7) for 28x28 images

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.image_shape)

    def forward(self, x: torch.Tensor) -> dict:
        """Per-datapoint ``nats`` = -log p(x | z_q(x)) [B], ``vq_loss`` [B], ``codes``
        [B, H, W], ``counts`` [K], ``z_e`` [B*H*W, D] (encoder outputs, for restarts)."""
        z_e = self.encoder(self._images(x))
        z_q, codes, vq_loss, counts = self.quantizer(z_e)
        nats = self.nats(x, self.decoder(z_q))
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        return {"nats": nats, "vq_loss": vq_loss, "codes": codes, "counts": counts, "z_e": flat}

    def nats(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """-log Bernoulli(x; sigmoid(logits)) summed over pixels: [B]."""
        logits = logits.reshape(x.shape[0], -1)
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code grid k(x) [B, H, W] (the argmin; q(k|x) is one-hot there)."""
        z_e = self.encoder(self._images(x))
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
        return self.quantizer.nearest(flat).view(x.shape[0], *self.grid_shape)

    def decode_logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits [B, prod(image_shape)] of p(x | codes)."""
        return self.decoder(self.quantizer.lookup(codes)).reshape(codes.shape[0], -1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean image sigmoid(dec(e_codes)) [B, prod(image_shape)] (what the figures show)."""
        return torch.sigmoid(self.decode_logits(codes))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """log p(x | codes) [B] in nats (<= 0)."""
        return -self.nats(x, self.decode_logits(codes))


def build_vqvae(cfg: VQVAEConfig, *, image_shape=(1, 28, 28)) -> VQVAE:
    """A :class:`VQVAE` with the conv encoder/decoder of the given sizes."""
    if cfg.quantizer not in ("ema", "loss"):
        raise PyroVAEError(f"unknown quantizer {cfg.quantizer!r}; valid: ema, loss")
    c = image_shape[0]
    quantizer = VectorQuantizer(cfg.num_codes, cfg.code_dim, ema=cfg.quantizer == "ema",
                                decay=cfg.decay, commitment=cfg.commitment)
    return VQVAE(conv_encoder(c, cfg.channels, cfg.code_dim, cfg.res_blocks), quantizer,
                 conv_decoder(cfg.code_dim, cfg.channels, c, cfg.res_blocks),
                 image_shape=image_shape)
