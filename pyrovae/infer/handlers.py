"""Effect handlers that shape the loss without any model knowing (schedules: ``schedules.py``).

``scale_latents(beta)`` multiplies the log-density of every *unobserved* sample site, in
the model and in the guide, by ``beta``.  Under Trace_ELBO the ELBO
``E_q[log p(x|z)] + E_q[log p(z) - log q(z|x)]`` becomes

    E_q[log p(x|z)] - beta * KL(q(z|x) || p(z))        (beta-VAE, Higgins et al. 2017)

because the latent terms are exactly the ones in the KL (with several latent sites,
beta scales the KL of all of them).  TraceMeanField_ELBO's analytic KL carries the guide
site's scale, so it gets the same beta.  Unlike ``poutine.scale`` the factor may be 0
(beta = 0: reconstruction only) and observed sites keep their own factor
(``scale_observed(0)``: KL only).  Evaluation never runs under these handlers: the
evaluator reads densities from ``site["fn"]`` and ignores ``site["scale"]``.
"""
from __future__ import annotations

import math

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyrovae.errors import PyroVAEError


class ScaleSitesMessenger(Messenger):
    """Scale unobserved sample sites by ``latent`` and observed ones by ``observed``.

    The factors are plain attributes so a trainer can update them between steps
    without rebuilding the handler stack.
    """

    def __init__(self, latent: float = 1.0, observed: float = 1.0):
        super().__init__()
        for name, value in (("latent", latent), ("observed", observed)):
            if not (value >= 0) or math.isinf(value):
                raise PyroVAEError(f"{name} scale must be finite and >= 0, got {value}")
        self.latent = latent
        self.observed = observed

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg):  # a plate's index site
            return
        factor = self.observed if msg["is_observed"] else self.latent
        if factor != 1.0:
            msg["scale"] = factor * msg["scale"]


def scale_latents(beta: float) -> ScaleSitesMessenger:
    """``with scale_latents(beta): loss = elbo.differentiable_loss(model, guide, x)``."""
    return ScaleSitesMessenger(latent=beta)


def scale_observed(gamma: float) -> ScaleSitesMessenger:
    """Scale only the likelihood: ``scale_observed(0)`` trains on the KL term alone."""
    return ScaleSitesMessenger(observed=gamma)
