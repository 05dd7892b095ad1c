"""Test accuracy of a guide's classifier: the argmax of q(y | x) at its enumerated site.

For a semi-supervised pair (the M2 VAE) the guide's discrete site marked for parallel
enumeration is q(y | x); its most probable value is the pair's prediction of the label.
"""
from __future__ import annotations

import torch
from pyro import poutine

from pyrovae.errors import PyroVAEError
from pyrovae.evaluation.weights import evaluating
from pyrovae.infer.sites import latent_sites


def predict_labels(guide, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """argmax_y q(y | x) for every row of ``x``."""
    out = []
    with evaluating(guide):
        for i in range(0, len(x), batch_size):
            with poutine.block():
                tr = poutine.trace(guide).get_trace(x[i:i + batch_size])
            sites = [s for s in latent_sites(tr).values()
                     if s["infer"].get("enumerate") == "parallel"
                     and hasattr(s["fn"], "probs") and s["fn"].has_enumerate_support]
            if len(sites) != 1:
                raise PyroVAEError("label accuracy needs a guide with one discrete site marked "
                                   "infer={'enumerate': 'parallel'} (q(y | x))")
            out.append(sites[0]["fn"].probs.argmax(-1))
    return torch.cat(out)


def label_accuracy(guide, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> dict:
    """``{"accuracy": fraction correct, "se": its binomial standard error, "n": len(x)}``."""
    hit = (predict_labels(guide, x, batch_size=batch_size).cpu() == y.cpu()).double()
    acc = float(hit.mean())
    return {"accuracy": acc, "se": (acc * (1 - acc) / len(hit)) ** 0.5, "n": len(hit)}
