"""Guide halves q(z|x) (installed as ``pyrovae.guides``); importing it registers them."""
from pyrovae.guides.amortized import AmortizedGuide, Guide
from pyrovae.guides.flows import IAFGuide
from pyrovae.guides.fullcov import FullCovarianceGuide
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.guides.local import LocalGuide
from pyrovae.guides.ssvae import SemiSupervisedGuide

__all__ = ["Guide", "AmortizedGuide", "DiagonalGaussianGuide", "FullCovarianceGuide",
           "IAFGuide", "LocalGuide", "SemiSupervisedGuide"]
