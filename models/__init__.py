"""Model halves p(z) p(x|z) (installed as ``pyrovae.models``); importing it registers them.
The VQ-VAE is a plugin package of its own (``models/vqvae/``)."""
from pyrovae.models.cvae import CVAE
from pyrovae.models.ssvae import SSVAE
from pyrovae.models.priors import (FlowPrior, MixtureOfGaussiansPrior, StandardNormalPrior,
                                   VampPrior)
from pyrovae.models.vae import VAE

__all__ = ["VAE", "CVAE", "SSVAE", "StandardNormalPrior", "MixtureOfGaussiansPrior", "VampPrior",
           "FlowPrior"]
