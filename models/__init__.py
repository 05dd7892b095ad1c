"""Model halves p(z) p(x|z) (installed as ``pyrovae.models``)."""
from pyrovae.models.priors import StandardNormalPrior
from pyrovae.models.vae import VAE

__all__ = ["VAE", "StandardNormalPrior"]
