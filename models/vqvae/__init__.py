"""The VQ-VAE plugin (van den Oord, Vinyals & Kavukcuoglu 2017): a deterministic
discrete-latent autoencoder with its own training loop, code prior and commands.

It reaches the engine only through the registry: ``vqvae`` as a ``runner`` (what
``pyrovae train --model vqvae``, ``sample`` and ``evaluate`` call) and ``train-prior`` as a
``command``.  The entry point ``vqvae = "pyrovae.models.vqvae"`` in pyproject.toml imports
this module when the registry loads its plugins.
"""
from pyrovae.models.vqvae.commands import TRAIN_PRIOR, VQVAERunner
from pyrovae.models.vqvae.model import VQVAE, VQVAEConfig, build_vqvae
from pyrovae.models.vqvae.prior import CodePrior, PriorConfig, build_prior
from pyrovae.models.vqvae.quantizer import VectorQuantizer
from pyrovae.models.vqvae.run import evaluate_vq, load_vq_run
from pyrovae.registry import register

register("runner", "vqvae")(VQVAERunner())
register("command", "train-prior")(TRAIN_PRIOR)

__all__ = ["VQVAE", "VQVAEConfig", "build_vqvae", "CodePrior", "PriorConfig", "build_prior",
           "VectorQuantizer", "load_vq_run", "evaluate_vq"]
