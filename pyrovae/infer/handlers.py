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

import torch
from pyro.distributions import TorchDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import effectful
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


def _no_effect(name, fn, value):
    return None


def label_likelihood(name: str, fn, value) -> None:
    """In a guide: "q(y | x) = ``fn`` would have given the observed label ``value``" -- a
    message only :class:`ClassifyLabels` listens to (outside it, nothing happens).  The
    semi-supervised VAE's guide says this on labelled batches, where it samples no y."""
    effectful(_no_effect, type="label_likelihood")(name, fn, value, name=f"_label_{name}")


class _Tilted(TorchDistribution):
    """``base`` whose log-density at the observed value gains ``extra`` (a per-datapoint term)."""

    def __init__(self, base, extra):
        self.base, self.extra = base, extra
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def log_prob(self, value):
        return self.base.log_prob(value) + self.extra


class ClassifyLabels(Messenger):
    """The auxiliary classification loss of Kingma, Rezende, Mohamed & Welling (2014, M2),
    ``- alpha * log q(y | x)`` on labelled data, as an effect handler around model and
    guide: the guide's :func:`label_likelihood` messages are kept, and the model's observed
    site of the same name then has log-density ``log p(y) + alpha * log q(y | x)``, so any
    ELBO on the pair gains the term.  Models and guides never see ``alpha``; evaluation never
    runs under it.
    """

    def __init__(self, alpha: float):
        super().__init__()
        if not (alpha >= 0) or math.isinf(alpha):
            raise PyroVAEError(f"the classification weight alpha must be finite and >= 0, "
                               f"got {alpha}")
        self.alpha = alpha
        self._kept = {}

    def _pyro_label_likelihood(self, msg) -> None:
        name, fn, value = msg["args"]
        self._kept[name] = fn.log_prob(value)
        msg["done"] = True  # a message of our own: no default effect

    def _pyro_sample(self, msg) -> None:
        extra = self._kept.pop(msg["name"], None) if msg["is_observed"] else None
        if extra is not None and self.alpha:
            msg["fn"] = _Tilted(msg["fn"], self.alpha * extra)


def classify_labels(alpha: float) -> ClassifyLabels:
    """``fit(..., handlers=(classify_labels(alpha),))``: M2's classification loss."""
    return ClassifyLabels(alpha)
