"""Non-amortized ("local") guide: free variational parameters for each of a fixed set of
datapoints, for the amortization-gap study of Cremer, Li & Duvenaud, "Inference
Suboptimality in Variational Autoencoders" (ICML 2018).

An amortized guide is ``q(z | x) = family(features(x))``.  The local guide built from it
keeps the family and replaces ``features(x_i)`` by a free vector ``phi_i`` per datapoint
(started at the amortized value), so maximizing the ELBO over ``phi`` finds, datapoint by
datapoint, the best member of the family the encoder could have produced:

    log p(x) - ELBO[q_amortized] = (log p(x) - ELBO[q_local*]) + (ELBO[q_local*] - ELBO[q_amortized])
        inference gap            =      approximation gap       +        amortization gap

For the Gaussian guides phi *is* the distribution's parameters (mean, scale, Cholesky
factor), so the local family is exactly per-datapoint Gaussians.  For the IAF guide phi
is the flow's context and the MADE weights are a trainable copy shared by the datapoints,
a cheaper relaxation of Cremer et al.'s per-datapoint flows (any q gives a valid bound,
so this can only underestimate the approximation gap's reduction, never invalidate it).

Datapoint indices never enter the model/guide contract, so the guide finds a datapoint's
row by its *content* (pixels and label): the optimal q depends on nothing else, so two
identical inputs rightly share one row.  Inputs it was not built for are an error.
"""
from __future__ import annotations

import copy

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch import nn
from tqdm.auto import tqdm

from pyrovae.errors import PyroVAEError
from pyrovae.guides.amortized import Guide


def split_guide(guide):
    """``(features(x, y), posterior_from_features(h))`` of an amortized guide."""
    if hasattr(guide, "features") and hasattr(guide, "posterior_from_features"):
        return guide.features, guide.posterior_from_features
    raise PyroVAEError(f"a local guide needs an amortized guide with features(x, y) and "
                       f"posterior_from_features(h); {type(guide).__name__} has neither")


class LocalGuide(Guide):
    """``guide(x, y=None)`` with one free parameter vector per row of ``data_x``.

    :param amortized: the guide whose family (and starting point) to use; it is copied,
        never modified.
    :param data_x: the datapoints ``[M, x_dim]`` this guide holds parameters for.
    :param data_y: their labels (needed when the amortized guide is conditional).
    """

    def __init__(self, amortized: nn.Module, data_x: torch.Tensor,
                 data_y: torch.Tensor | None = None):
        super().__init__()
        self.family = copy.deepcopy(amortized)
        features, self._from_features = split_guide(self.family)
        with torch.no_grad():
            phi = features(data_x, data_y)
        self.phi = nn.Parameter(phi.detach().clone())
        self.latent_dim = getattr(amortized, "latent_dim", None)
        self.register_buffer("data_x", data_x.detach().clone(), persistent=False)
        self.register_buffer("data_y", None if data_y is None else data_y.detach().clone(),
                             persistent=False)
        self._rows: dict[bytes, int] | None = None

    @staticmethod
    def _key(x_row: torch.Tensor, y_row) -> bytes:
        label = b"" if y_row is None else int(y_row).to_bytes(8, "little", signed=True)
        return x_row.detach().cpu().numpy().tobytes() + label

    def rows(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | slice:
        """Indices into ``data_x`` of the rows of ``x`` (all of them when ``x`` is ``data_x``)."""
        same_y = self.data_y is None or (y is not None and torch.equal(y, self.data_y))
        if x.shape == self.data_x.shape and same_y and torch.equal(x, self.data_x):
            return slice(None)
        if self._rows is None:
            ys = [None] * len(self.data_x) if self.data_y is None else self.data_y
            self._rows = {self._key(xr, yr): i for i, (xr, yr) in enumerate(zip(self.data_x, ys))}
        ys = [None] * len(x) if self.data_y is None or y is None else y
        try:
            idx = [self._rows[self._key(xr, yr)] for xr, yr in zip(x, ys)]
        except KeyError:
            raise PyroVAEError(f"this local guide holds parameters only for the "
                               f"{len(self.data_x)} datapoints it was built for; build "
                               f"another LocalGuide for new data") from None
        return torch.tensor(idx, device=self.phi.device)

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        return self._from_features(self.phi[self.rows(x, y)])


def optimize_local(model, local: LocalGuide, x: torch.Tensor, y: torch.Tensor | None = None, *,
                   steps: int = 1000, lr: float = 1e-2, num_particles: int = 8,
                   progress: bool = True) -> list[float]:
    """Maximize the ELBO over the local guide's parameters only; the model stays fixed.

    All of ``x`` is one batch (the guide holds one parameter vector per row), averaged
    over ``num_particles`` vectorized samples per step.  Gradients are taken with
    ``torch.autograd.grad`` on the local parameters alone, so no ``.grad`` lands on the
    model (or on a guide whose encoder a VampPrior reads).

    :returns: the per-datapoint ELBO estimate after each step.
    """
    if steps < 1 or num_particles < 1:
        raise PyroVAEError(f"steps and num_particles must be >= 1, got {steps}, {num_particles}")
    params = [p for p in local.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    history = []
    with pyro.validation_enabled(False):
        for _ in tqdm(range(steps), desc="local ELBO", disable=not progress):
            loss = elbo.differentiable_loss(model, local, x, y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
            history.append(-float(loss.detach()) / len(x))
    return history
