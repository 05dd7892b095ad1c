"""Vector quantization with a straight-through gradient (van den Oord et al. 2017, VQ-VAE).

Each encoder output vector z is replaced by its nearest codebook entry

    k(z) = argmin_k ||z - e_k||^2 = argmin_k (||e_k||^2 - 2 z . e_k)

(``||z||^2`` is the same for every k, so one matmul finds all distances).  The decoder
sees ``z + sg(e_k - z)``: its value is e_k, its gradient passes to z unchanged.

Two ways to learn the codebook:

* ``ema=False``: codebook loss ``||sg(z) - e||^2`` plus commitment ``beta ||z - sg(e)||^2``.
* ``ema=True`` (default, the paper's appendix A.1): no codebook loss; the codebook
  tracks the mean of the vectors assigned to each code with exponential moving averages
  N_k <- g N_k + (1-g) n_k,  m_k <- g m_k + (1-g) sum_{z: k(z)=k} z,  e_k = m_k / N~_k,
  where N~_k = (N_k + eps) / (N + K eps) * N is Laplace-smoothed so an unused code never
  divides by zero.  The statistics start as if every code had been assigned itself once
  (N_k = 1, m_k = e_k), so an unused code keeps its place rather than drifting to 0.

Codes nobody uses are restarted from encoder outputs (:meth:`VectorQuantizer.restart_dead_codes`),
a standard fix for codebook collapse (e.g. Dhariwal et al. 2020, Jukebox).
"""
from __future__ import annotations

import torch
from torch import nn

from pyrovae.errors import PyroVAEError


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of the usage distribution p = counts / sum(counts): K for uniform use of K
    codes, 1 when one code takes everything."""
    p = counts.double() / counts.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return torch.exp(entropy)


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer over the channel dimension of ``[B, D, H, W]`` feature maps.

    :param num_codes: codebook size K.
    :param dim: code dimension D.
    :param ema: learn the codebook by EMA (True) or by the codebook loss (False).
    :param decay: EMA decay g of the codebook statistics and of the usage counter.
    :param commitment: weight beta of the commitment loss.
    :param eps: Laplace smoothing constant of the EMA cluster sizes.
    """

    def __init__(self, num_codes: int, dim: int, *, ema: bool = True, decay: float = 0.99,
                 commitment: float = 0.25, eps: float = 1e-5):
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise PyroVAEError(f"a codebook needs >= 2 codes of dimension >= 1; "
                               f"got {num_codes} codes of dimension {dim}")
        if not 0.0 <= decay < 1.0:
            raise PyroVAEError(f"EMA decay must lie in [0, 1); got {decay}")
        self.num_codes, self.dim, self.ema = num_codes, dim, ema
        self.decay, self.commitment, self.eps = decay, commitment, eps
        init = torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # EMA of how many vectors each code receives per batch; drives dead-code restarts
        self.register_buffer("usage", torch.zeros(num_codes))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``z`` [N, D] (ties -> lowest index)."""
        e = self.codebook.detach()
        scores = (e * e).sum(1) - 2.0 * (z.detach() @ e.t())
        return scores.argmin(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors as a feature map: ``codes`` [B, H, W] -> [B, D, H, W]."""
        return self.codebook[codes].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor):
        """Quantize ``z`` [B, D, H, W].

        :returns: ``(z_q, codes, loss, counts)``: the straight-through quantized map
            (value e_k, gradient identity to z), codes [B, H, W], the per-datapoint VQ
            loss [B] (commitment, plus the codebook loss when not EMA), and the code
            counts [K] of this batch.
        """
        b, d, h, w = z.shape
        if d != self.dim:
            raise PyroVAEError(f"quantizer expects {self.dim} channels, got {d}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = self.nearest(flat)
        e = self.codebook[codes]
        # squared errors summed over D and the grid: the same per-image scale as the nats
        commit = ((flat - e.detach()) ** 2).sum(1).view(b, h * w).sum(1)
        loss = self.commitment * commit
        if not self.ema:
            loss = loss + ((flat.detach() - e) ** 2).sum(1).view(b, h * w).sum(1)
        counts = torch.bincount(codes, minlength=self.num_codes).to(z.dtype)
        if self.training:
            with torch.no_grad():
                self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                if self.ema:
                    self.ema_update(flat.detach(), codes)
        z_q = flat + (e - flat).detach()  # straight-through estimator
        z_q = z_q.view(b, h, w, d).permute(0, 3, 1, 2)
        return z_q, codes.view(b, h, w), loss, counts

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        """One EMA step of the codebook from vectors ``z`` [N, D] assigned to ``codes`` [N]."""
        one_hot = torch.zeros(z.shape[0], self.num_codes, dtype=z.dtype, device=z.device)
        one_hot.scatter_(1, codes[:, None], 1.0)
        g = self.decay
        self.cluster_size.mul_(g).add_(one_hot.sum(0), alpha=1 - g)
        self.embed_sum.mul_(g).add_(one_hot.t() @ z, alpha=1 - g)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, *, threshold: float = 1.0,
                           generator: torch.Generator | None = None) -> int:
        """Move every code whose usage EMA is below ``threshold`` vectors per batch onto a
        random encoder output from ``z`` [N, D]; returns how many codes were restarted."""
        dead = (self.usage < threshold).nonzero().flatten()
        if dead.numel() == 0 or z.shape[0] == 0:
            return 0
        pick = torch.randint(z.shape[0], (dead.numel(),), generator=generator, device=z.device)
        fresh = z.detach()[pick].to(self.codebook.dtype)
        self.codebook.data[dead] = fresh
        if self.ema:
            self.cluster_size[dead] = 1.0
            self.embed_sum[dead] = fresh
        # give a restarted code a full counting window before it can be judged dead again
        self.usage[dead] = threshold
        return int(dead.numel())
