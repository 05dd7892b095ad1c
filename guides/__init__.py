"""Guide halves q(z|x) (installed as ``pyrovae.guides``)."""
from pyrovae.guides.gaussian import DiagonalGaussianGuide

__all__ = ["DiagonalGaussianGuide"]
