"""An autoregressive prior over VQ-VAE code grids: a small causal transformer.

The H x W grid is read in raster order as a sequence k_1..k_L (L = H W) and

    log p(k | y) = sum_i log softmax(f(start(y), k_<i))[k_i]

with a decoder-only transformer (Vaswani et al. 2017; the VQ-VAE paper used a PixelCNN,
van den Oord et al. 2016 — any causal density over codes gives the same bound).  The
inputs are shifted one step right behind a start token, so position i sees only codes
before i.  A class-conditional prior uses a start token per class; its marginal

    p(k) = sum_y p(y) p(k | y),  p(y) = 1 / C

is exact, so the bound on log p(x) stays comparable with unconditional models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pyrovae.checks import Int, Real, validate
from pyrovae.config import option
from pyrovae.errors import PyroVAEError


@dataclass(frozen=True)
class PriorConfig:
    """The code prior's architecture and its own training (``pyrovae train-prior``), saved
    in the run's config.json under ``"prior"``."""

    conditional: bool = option(False, "class-conditional prior: one start token per label, "
                                      "marginalized over a uniform p(y) in the bound")
    d_model: int = option(64, "transformer width", Int(low=1))
    layers: int = option(2, "transformer layers", Int(low=1))
    heads: int = option(4, "attention heads (a divisor of --d-model)", Int(low=1))
    dropout: float = option(0.1, "dropout rate", Real(low=0, high=1, below=True))
    # trained after the VQ-VAE, on its frozen codes (models/vqvae/train.py)
    epochs: int = option(20, "passes over the training codes", Int(low=1))
    batch_size: int = option(128, "code grids per step", Int(low=1))
    lr: float = option(2e-3, "AdamW peak learning rate (cosine decay)", Real(low=0, strict=True))
    seed: int = option(0, "seed of initialization, order and samples", Int(low=0))

    def __post_init__(self):
        validate(self)
        if self.d_model % self.heads:
            raise PyroVAEError(f"PriorConfig.heads (--heads) = {self.heads} must divide "
                               f"--d-model = {self.d_model}")


class CodePrior(nn.Module):
    """Causal transformer density over code grids [B, H, W] with values in 0..K-1.

    :param num_codes: codebook size K.
    :param grid_shape: (H, W).
    :param num_classes: 0 for an unconditional prior, else C start tokens.
    """

    def __init__(self, num_codes: int, grid_shape, *, d_model: int = 64, layers: int = 2,
                 heads: int = 4, dropout: float = 0.1, num_classes: int = 0):
        super().__init__()
        self.num_codes, self.grid_shape = num_codes, tuple(grid_shape)
        self.num_classes = num_classes
        self.seq_len = math.prod(self.grid_shape)
        self.tokens = nn.Embedding(num_codes, d_model)
        self.start = nn.Embedding(max(num_classes, 1), d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(self.seq_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_codes)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(self.seq_len),
                             persistent=False)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _start(self, batch: int, y: torch.Tensor | None) -> torch.Tensor:
        if self.conditional:
            if y is None:
                raise PyroVAEError("this prior is class-conditional: pass labels y")
            if y.shape != (batch,) or y.min() < 0 or y.max() >= self.num_classes:
                raise PyroVAEError(f"labels must be {batch} integers in 0..{self.num_classes - 1}")
            return self.start(y)
        return self.start.weight[0].expand(batch, -1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Token embeddings [B, L, d] of code grids [B, H, W] (raster order)."""
        return self.tokens(codes.reshape(codes.shape[0], -1))

    def logits_from_embeddings(self, emb: torch.Tensor, y: torch.Tensor | None = None):
        """Next-code logits [B, L, K]: row i depends on ``emb[:, :i]`` only (causal)."""
        b, n = emb.shape[:2]
        h = torch.cat([self._start(b, y)[:, None], emb[:, :-1]], dim=1) + self.pos[:n]
        h = self.blocks(h, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))

    def log_prob(self, codes: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(codes | y) [B] in nats."""
        logits = self.logits_from_embeddings(self.embed(codes), y)
        flat = codes.reshape(codes.shape[0], -1)
        return torch.log_softmax(logits, -1).gather(-1, flat[..., None])[..., 0].sum(1)

    def marginal_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(codes) [B]; sums the class-conditional prior over a uniform p(y)."""
        if not self.conditional:
            return self.log_prob(codes)
        b = codes.shape[0]
        per_class = torch.stack([self.log_prob(codes, torch.full((b,), c, device=codes.device,
                                                                 dtype=torch.long))
                                 for c in range(self.num_classes)], dim=0)
        return torch.logsumexp(per_class, 0) - math.log(self.num_classes)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling of ``n`` code grids [n, H, W], one position at a time."""
        device = self.pos.device
        codes = torch.zeros(n, self.seq_len, dtype=torch.long, device=device)
        for i in range(self.seq_len):
            # the logits at i ignore codes at i and later, so the zeros there are harmless
            logits = self.logits_from_embeddings(self.tokens(codes[:, :i + 1]), y)[:, i]
            probs = torch.softmax(logits / temperature, -1)
            codes[:, i] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return codes.view(n, *self.grid_shape)


def build_prior(cfg: PriorConfig, *, num_codes: int, grid_shape, num_classes: int) -> CodePrior:
    return CodePrior(num_codes, grid_shape, d_model=cfg.d_model, layers=cfg.layers,
                     heads=cfg.heads, dropout=cfg.dropout,
                     num_classes=num_classes if cfg.conditional else 0)
