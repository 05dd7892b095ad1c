"""Figures of a training run: samples, reconstructions, the loss curve, the K curve.
Each function writes one PNG and returns its path."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyrovae.data import class_names  # noqa: E402
from pyrovae.plots.latent import plot_class_grid, plot_style_transfer  # noqa: E402
from pyrovae.plots.readers import observation_mean, prior_mean  # noqa: E402
from pyrovae.plots.tiles import save_figure, tile_images  # noqa: E402


def plot_samples(model, path, *, n: int = 64, x_dim: int = 784, y=None, device="cpu",
                 title: str = "decoded prior samples") -> Path:
    """``samples.png``: an 8-wide grid of E[x | z], z ~ p(z)."""
    return tile_images(prior_mean(model, n, x_dim=x_dim, y=y, device=device), path,
                       per_row=8, title=title)


def plot_reconstructions(model, guide, x, path, *, y=None, n: int = 16) -> Path:
    """``reconstructions.png``: test originals (top row) above their reconstructions.

    Takes ``n`` images evenly spaced through ``x`` so a class-sorted set shows every class.
    """
    idx = torch.linspace(0, x.shape[0] - 1, min(n, x.shape[0]), device=x.device).long()
    x, y = x[idx], (y[idx] if y is not None else None)
    recon = observation_mean(model, guide, x, y)
    return tile_images(torch.cat([x, recon]), path, per_row=len(idx),
                       title="originals (top) and reconstructions (bottom)")


def plot_loss(history: list[dict], path) -> Path:
    """``loss.png``: train objective and test ELBO per epoch (nats per datapoint)."""
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(epochs, [-r["train_loss"] for r in history], label="train objective (β-ELBO)")
    if all("test_elbo" in r for r in history):
        ax.plot(epochs, [r["test_elbo"] for r in history], label="test ELBO (β = 1)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datapoint")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_k_curve(report: dict, path) -> Path:
    """L_K against its cost -- K log-joint evaluations per datapoint (log axis) -- with a
    ± 1 SE band; AIS rows at their cost (chains x steps x (leapfrog + 1)) beside them."""
    rows = report["bounds"]
    ks = [r["K"] for r in rows]
    mean = [r["mean"] for r in rows]
    se = [r["se"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.fill_between(ks, [m - s for m, s in zip(mean, se)], [m + s for m, s in zip(mean, se)],
                    alpha=0.25, label="± 1 SE over datapoints")
    ax.plot(ks, mean, "o-", label="IWAE L_K")
    ais = report.get("ais", [])
    if ais:
        ax.plot([a["evaluations"] for a in ais], [a["mean"] for a in ais], "s--", color="C3",
                label="AIS (T steps)")
        for a in ais:
            ax.annotate(f"T={a['steps']}", (a["evaluations"], a["mean"]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))
    if "reference" in report:  # e.g. the exact log p(x) of a closed-form model
        ref = report["reference"]
        ax.axhline(ref["value"], color="k", ls="--", lw=1, label=ref.get("label", "reference"))
    ax.set_xscale("log")
    ax.set_xlabel("cost: log-joint evaluations per datapoint (= K for IWAE)")
    ax.set_ylabel("estimate of log p(x) (nats)")
    ax.set_title(f"bounds on log p(x) vs cost ({report['num_datapoints']} datapoints)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_figures(model, guide, data, history, run_dir, *,
                          conditional: bool = False, style: bool = False) -> list[Path]:
    """``samples.png``, ``reconstructions.png``, ``loss.png`` (and ``class_grid.png`` for a
    conditional model, ``style_transfer.png`` with ``style``) of a trained pair on a
    :class:`~pyrovae.data.ImageData`."""
    run_dir = Path(run_dir)
    dev = data.test_x.device
    y = torch.arange(64, device=dev) % data.num_classes if conditional else None
    figures = [plot_samples(model, run_dir / "samples.png", x_dim=data.x_dim, y=y, device=dev),
               plot_reconstructions(model, guide, data.test_x, run_dir / "reconstructions.png",
                                    y=data.test_y if conditional else None),
               plot_loss(history, run_dir / "loss.png")]
    if conditional:
        figures.append(plot_class_grid(model, run_dir / "class_grid.png",
                                       num_classes=data.num_classes, x_dim=data.x_dim,
                                       device=dev, names=class_names(data.name,
                                                                     data.num_classes)))
    if style:
        idx = torch.arange(8, device=dev)
        figures.append(plot_style_transfer(model, guide, data.test_x[idx], data.test_y[idx],
                                           run_dir / "style_transfer.png",
                                           num_classes=data.num_classes,
                                           names=class_names(data.name, data.num_classes)))
    return figures
