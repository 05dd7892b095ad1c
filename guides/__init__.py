"""Guide halves q(z|x) (installed as ``pyrovae.guides``)."""
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.guides.amortized import AmortizedGuide
from pyrovae.guides.fullcov import FullCovarianceGuide
from pyrovae.guides.flows import IAFGuide
from pyrovae.guides.local import LocalGuide

__all__ = ["DiagonalGaussianGuide", "AmortizedGuide", "FullCovarianceGuide", "IAFGuide",
           "LocalGuide"]
