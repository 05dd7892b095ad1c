"""Distributions whose log-density is cheap enough for K = 5000 particles, and for the
training step's trace (``ReparamNormal`` and ``UnitNormal``, the registry's guide and prior).

``IndependentBernoulli(logits)`` is ``Bernoulli(logits=logits).to_event(1)`` with the
same samples, support and log-density, computed as

    log p(x | l) = Σ_i [x_i l_i - softplus(l_i)]
                 = Σ_i (x_i - 1/2) l_i - 1/2 Σ_i |l_i| + log Π_i sigmoid(|l_i|)

using softplus(l) = (l + |l|)/2 - log sigmoid(|l|).  Each factor of the product lies in
[1/2, 1), so a group of up to ``log2(1 / finfo.tiny) - 1`` of them cannot underflow;
one ``log`` per group replaces one ``log1p`` per pixel, which leaves a single in-place
``sigmoid`` per pixel as the only transcendental.  On this project's CPU the likelihood
of a 784-pixel image costs about 4x less than Pyro's Bernoulli (which goes through
``binary_cross_entropy_with_logits``); that matters when an importance-weighted bound
evaluates it for millions of particles (see scripts/benchmark_evaluation.py).  The
rounding error is that of a float sum over pixels (about 1e-7 relative).
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch.autograd.function import once_differentiable
from torch.distributions.utils import lazy_property

from pyrovae.machine import l2_cache_bytes

# a slice of logits that fits in three quarters of a core's L2 cache (1.5 MiB of 2 MiB on
# the Xeon this was first measured on, 768 KiB of the EPYC's 1 MiB)
BLOCK_BYTES = 3 * l2_cache_bytes() // 4


def _group_size(n: int, dtype: torch.dtype) -> int:
    """Largest group whose product cannot underflow (2^-g > finfo.tiny), preferring a
    divisor of ``n``."""
    cap = min(n, int(-math.log2(torch.finfo(dtype).tiny)) - 1)
    for g in range(cap, max(cap // 2, 1) - 1, -1):
        if n % g == 0:
            return g
    return cap


def _log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    n = logits.shape[-1]
    linear = (logits * (value - 0.5)).sum(-1)  # value is usually [batch, D]: cheap to shift
    a = logits.abs()
    abs_sum = a.sum(-1)
    if torch.is_grad_enabled() and logits.requires_grad:
        a = torch.sigmoid(a)  # out of place: autograd needs |l|
    else:
        a = a.sigmoid_()
    g = _group_size(n, a.dtype)
    full = n - n % g
    log_prod = a[..., :full].reshape(*a.shape[:-1], full // g, g).prod(-1).log().sum(-1)
    if full < n:
        log_prod = log_prod + a[..., full:].log().sum(-1)
    return linear - 0.5 * abs_sum + log_prod


class _BernoulliLogProb(torch.autograd.Function):
    """``Σ_i [x_i l_i - softplus(l_i)]`` with the fast forward above and the one-pass
    backward d/dl_i = x_i - sigmoid(l_i), instead of autograd through the grouped products
    (the likelihood's forward + backward: about 0.4 ms instead of 1.3 ms at batch 128)."""

    @staticmethod
    def forward(ctx, logits, value):
        ctx.save_for_backward(logits, value)
        return _log_prob(logits, value)  # autograd is off inside forward: the in-place path

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        logits, value = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = grad_value = None
        if ctx.needs_input_grad[0]:
            s = torch.sigmoid(logits)
            s = s.sub_(value) if value.shape == logits.shape else s - value
            grad_logits = s.mul_(-grad).sum_to_size(logits.shape)
        if ctx.needs_input_grad[1]:
            grad_value = (logits * grad).sum_to_size(value.shape)
        return grad_logits, grad_value


def bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``Σ_i [x_i l_i - softplus(l_i)]`` over the last dim, broadcasting ``value``.

    Without autograd, large ``logits`` (e.g. ``[particles, batch, D]``) are processed in
    slices along dim 0 of about ``BLOCK_BYTES``, so the five passes over each slice run
    from the core's L2 cache rather than from L3 or memory (~1.3x faster here).
    """
    step = max(1, BLOCK_BYTES // max(logits[0].numel() * logits.element_size(), 1)) \
        if logits.dim() >= 2 else logits.shape[0]
    if torch.is_grad_enabled() and (logits.requires_grad or value.requires_grad):
        return _BernoulliLogProb.apply(logits, value)
    if step >= logits.shape[0] or value.dim() > logits.dim():
        return _log_prob(logits, value)
    sliced = value.dim() == logits.dim() and value.shape[0] != 1
    return torch.cat([_log_prob(logits[i:i + step], value[i:i + step] if sliced else value)
                      for i in range(0, logits.shape[0], step)])


class IndependentBernoulli(TorchDistribution):
    """``Bernoulli(logits=logits).to_event(1)`` with a faster ``log_prob``.

    :param logits: ``[..., D]``; batch shape ``[...]``, event shape ``[D]``.
    """

    arg_constraints = {"logits": constraints.independent(constraints.real, 1)}
    support = constraints.independent(constraints.boolean, 1)
    has_enumerate_support = False

    def __init__(self, logits: torch.Tensor, validate_args=None):
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(IndependentBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape + self.event_shape)
        super(IndependentBernoulli, new).__init__(batch_shape, self.event_shape,
                                                  validate_args=False)
        new._validate_args = self._validate_args
        return new

    @lazy_property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (1 - self.probs)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return torch.bernoulli(self.probs.expand(shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return bernoulli_log_prob(self.logits, value)

    def entropy(self) -> torch.Tensor:
        p = self.probs
        return -(p * self.logits).sum(-1) + torch.nn.functional.softplus(self.logits).sum(-1)


HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ReparamNormal(dist.Normal):
    """``Normal(loc, scale)`` that remembers the noise of its last ``rsample``: the
    log-density of that very sample is ``-eps^2/2 - log scale - log(2 pi)/2``.

    Same samples (the same random stream as ``Normal.rsample``), same density everywhere,
    and as a function of the parameters the same log q(z(theta); theta), so the same total
    gradient with fewer ops: no ``(z - loc) / scale``, whose gradients through ``z`` and
    through ``loc, scale`` cancel anyway (about 0.1 ms of a 5.5 ms training step,
    ``scripts/benchmark_training.py``).  Any other value, a detached copy of the sample
    included (the path-gradient objectives), takes ``Normal.log_prob``.  So does the
    sample itself when it is a leaf that requires grad (a gradient in the value alone, as
    HMC asks for).
    """

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        # the stream of Normal.rsample's _standard_normal, as one op under jit.trace
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        z = self.loc + eps * self.scale
        self._drawn = (z, eps)
        return z

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        drawn = getattr(self, "_drawn", None)
        if drawn is None or value is not drawn[0] or value.is_leaf and value.requires_grad:
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        return -0.5 * drawn[1].square() - self.scale.log() - HALF_LOG_2PI


class UnitNormal(dist.Normal):
    """``Normal(0, 1)`` (``loc`` and ``scale`` kept for device, shape and sampling) whose
    log-density skips the arithmetic on the known parameters: ``-z^2/2 - log(2 pi)/2``."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        out = -0.5 * value.square() - HALF_LOG_2PI
        shape = torch.broadcast_shapes(out.shape, self.batch_shape)
        return out if out.shape == shape else out.expand(shape)


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate at both ends (Maechler 2012)."""
    a = a.clamp(max=-1e-30)
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class _UnitGrid(constraints.Constraint):
    """The ``levels`` points k / (levels - 1) of [0, 1]: a discrete support."""

    is_discrete = True
    event_dim = 0

    def __init__(self, levels: int):
        self.levels = levels
        super().__init__()

    def check(self, value):
        k = value * (self.levels - 1)
        return (value >= 0) & (value <= 1) & ((k - k.round()).abs() < 1e-4)


class DiscretizedLogistic(TorchDistribution):
    """A logistic density integrated over the ``levels`` bins of [0, 1], per pixel, as one
    event (Salimans, Karpathy, Chen & Kingma 2017, PixelCNN++, without the mixture):

        P(x = k / (L - 1)) = F((x + h - mu) / s) - F((x - h - mu) / s),   h = 1 / (2 (L - 1))

    with F the logistic CDF, the lowest bin extended to -inf and the highest to +inf.  A
    proper distribution over the 8-bit pixels, so -log P / (D log 2) is bits/dim directly.

    :param loc: ``[..., D]`` bin-space locations mu.
    :param scale: ``[..., D]`` positive scales s.
    """

    arg_constraints = {"loc": constraints.independent(constraints.real, 1),
                       "scale": constraints.independent(constraints.positive, 1)}
    has_enumerate_support = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, levels: int = 256,
                 validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.levels = levels
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    @property
    def support(self):
        return constraints.independent(_UnitGrid(self.levels), 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc, new.scale, new.levels = self.loc.expand(shape), self.scale.expand(shape), self.levels
        super(DiscretizedLogistic, new).__init__(torch.Size(batch_shape), self.event_shape,
                                                 validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        h = 0.5 / (self.levels - 1)
        centred = value - self.loc
        upper, lower = (centred + h) / self.scale, (centred - h) / self.scale
        softplus = torch.nn.functional.softplus
        # F(u) - F(l) in log space, from the side of the mode that does not cancel:
        # left of mu through log F (-softplus(-t)), right of mu through log(1 - F) (-softplus(t))
        right = centred > 0
        big = torch.where(right, -softplus(lower), -softplus(-upper))
        small = torch.where(right, -softplus(upper), -softplus(-lower))
        mid = big + _log1mexp(small - big)
        lp = torch.where(value < h, -softplus(-upper), torch.where(value > 1 - h, -softplus(lower),
                                                                  mid))
        return lp.sum(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            return (x.clamp(0, 1) * (self.levels - 1)).round() / (self.levels - 1)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.clamp(0, 1)  # the bins' mean up to the clipping at 0 and 1
