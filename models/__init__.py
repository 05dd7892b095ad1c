"""Model halves p(z) p(x|z) (installed as ``pyrovae.models``)."""
from pyrovae.models.priors import (FlowPrior, MixtureOfGaussiansPrior, StandardNormalPrior,
                                   VampPrior)
from pyrovae.models.vae import VAE
from pyrovae.models import cvae  # noqa: F401  (registers "cvae")

__all__ = ["VAE", "StandardNormalPrior", "MixtureOfGaussiansPrior", "VampPrior", "FlowPrior"]
