"""Model halves p(z) p(x|z) (installed as ``pyrovae.models``)."""
from pyrovae.models.priors import (FlowPrior, MixtureOfGaussiansPrior, StandardNormalPrior,
                                   VampPrior)
from pyrovae.models.vae import VAE

__all__ = ["VAE", "StandardNormalPrior", "MixtureOfGaussiansPrior", "VampPrior", "FlowPrior"]
