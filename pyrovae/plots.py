"""Every figure pyrovae draws.  Each function writes one PNG and returns its path.

Image figures work from the contract alone: reconstructions are the mean of the model's
observation distribution with ``z`` replayed from the guide, samples the same with ``x``
un-observed, so they serve any pair whose observed site is ``"x"``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

IMAGE_SHAPE = (1, 28, 28)


def _as_images(x: torch.Tensor, image_shape=IMAGE_SHAPE) -> torch.Tensor:
    return x.detach().float().cpu().reshape(-1, *image_shape).clamp(0, 1)


def save_image_grid(images: torch.Tensor, path, *, nrow: int = 8, title: str | None = None,
                    row_labels: list[str] | None = None, image_shape=IMAGE_SHAPE,
                    scale: float = 0.35) -> Path:
    """Tile ``images`` ([N, 784] or [N, 1, 28, 28], values in [0, 1]) ``nrow`` per row."""
    grid = make_grid(_as_images(images, image_shape), nrow=nrow, padding=2, pad_value=1.0)
    arr = grid.permute(1, 2, 0).numpy()
    h, w = arr.shape[:2]
    fig = plt.figure(figsize=(max(w * scale / 28 * 1.0, 2) + (0.6 if row_labels else 0),
                              h * scale / 28 + (0.4 if title else 0)), dpi=100)
    ax = fig.add_axes([0.08 if row_labels else 0, 0, 0.92 if row_labels else 1,
                       1 - (0.4 / (h * scale / 28 + 0.4) if title else 0)])
    ax.imshow(arr, cmap="gray", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if row_labels:
        step = h / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))])
        ax.set_yticklabels(row_labels, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9, y=0.995, va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


@torch.no_grad()
def observation_mean(model, guide, x, y=None) -> torch.Tensor:
    """E[x | z] with z ~ q(z | x): the reconstruction of ``x`` under any contract pair."""
    guide_tr = poutine.trace(guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, y)
    return model_tr.nodes["x"]["fn"].mean


@torch.no_grad()
def prior_mean(model, n: int, *, x_dim: int = 784, y=None, device="cpu") -> torch.Tensor:
    """E[x | z] with z ~ p(z): decoded prior samples under any contract pair."""
    dummy = torch.zeros(n, x_dim, device=device)
    tr = poutine.trace(poutine.uncondition(model)).get_trace(dummy, y)
    return tr.nodes["x"]["fn"].mean


def plot_samples(model, path, *, n: int = 64, x_dim: int = 784, y=None, device="cpu",
                 title: str = "decoded prior samples") -> Path:
    """``samples.png``: an 8x8 grid of E[x | z], z ~ p(z)."""
    return save_image_grid(prior_mean(model, n, x_dim=x_dim, y=y, device=device), path,
                           nrow=8, title=title)


def plot_reconstructions(model, guide, x, path, *, y=None, n: int = 16) -> Path:
    """``reconstructions.png``: test originals (top row) above their reconstructions.

    Takes ``n`` images evenly spaced through ``x`` so a class-sorted set shows every class.
    """
    idx = torch.linspace(0, x.shape[0] - 1, min(n, x.shape[0]), device=x.device).long()
    x, y = x[idx], (y[idx] if y is not None else None)
    recon = observation_mean(model, guide, x, y)
    return save_image_grid(torch.cat([x, recon]), path, nrow=n,
                           title="originals (top) and reconstructions (bottom)")


def plot_loss(history: list[dict], path) -> Path:
    """``loss.png``: train objective and test ELBO per epoch (nats per datapoint)."""
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(epochs, [-r["train_loss"] for r in history], label="train objective (β-ELBO)")
    ax.plot(epochs, [r["test_elbo"] for r in history], label="test ELBO (β = 1)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
