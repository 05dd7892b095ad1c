"""Pictures of the latent space: traversals, interpolations, class grids, 2-D scatter and
decoded manifolds.  Each figure function writes one PNG and returns its path.

Everything works from the model/guide contract (:mod:`pyrovae.plots.readers`): posterior
means are read from the guide's latent site, decoded images are E[x | z] of the model's
observed site with the latent conditioned, so any pair with one factorized latent works.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Normal  # noqa: E402

from pyrovae.errors import PyroVAEError  # noqa: E402
from pyrovae.plots.readers import (INACTIVE, activity, decode, kl_per_unit,  # noqa: E402
                                   posterior_means, prior_draws)
from pyrovae.plots.tiles import DPI, save_figure, tile_images  # noqa: E402


def _num(v: float) -> str:
    return f"{v:.1f}".replace("-0.0", "0.0")


# --- figures ------------------------------------------------------------------------

@torch.no_grad()
def plot_traversal(model, guide, x, path, *, y=None, index: int = 0, span: float = 3.0,
                   steps: int = 11, max_units: int | None = None, title: str = "",
                   unit_names: dict | None = None) -> Path:
    """Latent traversal: one row per unit u, z_u swept over [-span, span] with the other
    units held at E_q[z | x_index]; rows ordered by the unit's average KL over ``x``
    (or by its activity when KL per unit is undefined), inactive units greyed.

    ``x`` is a test set: it supplies the KL/activity statistics and the held digit.
    ``unit_names`` (unit -> text, e.g. the factor a unit captures) is added to its row label.
    """
    if not 0 <= index < x.shape[0]:
        raise PyroVAEError(f"--index {index} is outside the test set (0..{x.shape[0] - 1})")
    means = posterior_means(guide, x, y)
    act, kl = activity(means), kl_per_unit(model, guide, x, y)
    rows = rank_units(kl, act)[:max_units]
    base = means[index]
    values = torch.linspace(-span, span, steps, device=base.device)
    z = base.repeat(len(rows), steps, 1)  # [units, steps, D]
    for r, (u, _, _) in enumerate(rows):
        z[r, :, u] = values
    yb = None if y is None else y[index].repeat(z.shape[0] * steps)
    images = decode(model, z.reshape(-1, z.shape[-1]), yb, x_dim=x.shape[1])
    n_off = int((act <= INACTIVE).sum())
    title = title or (f"traversal of test digit #{index}; {len(act) - n_off} of {len(act)} "
                      f"units active (grey: inactive)")
    names = unit_names or {}
    return tile_images(images, path, per_row=steps, title=title,
                       row_labels=[f"{label} {names.get(u, '')}".rstrip() for u, label, _ in rows],
                       row_colors=["0.6" if off else "black" for _, _, off in rows],
                       col_labels=[_num(v) for v in values.tolist()])


def rank_units(kl, act) -> list[tuple[int, str, bool]]:
    """``(unit, label, inactive)`` by decreasing average KL (by activity when ``kl`` is
    None); a unit is inactive when its activity is at most :data:`INACTIVE`."""
    order = torch.argsort(kl if kl is not None else act, descending=True, stable=True)
    rows = []
    for u in order.tolist():
        stat = f"KL {float(kl[u]):5.2f}" if kl is not None else f"var {float(act[u]):5.2f}"
        off = float(act[u]) <= INACTIVE
        rows.append((u, f"z{u:<3d}{stat}{' off' if off else ''}", off))
    return rows


@torch.no_grad()
def plot_interpolation(model, guide, x_a, x_b, path, *, y_a=None, y_b=None, steps: int = 11,
                       title: str = "") -> Path:
    """Rows ``x_a[i] -> x_b[i]``: the two test digits at the ends, between them E[x | z]
    along the straight line between their posterior means.  A conditional model encodes
    each digit with its own label and decodes the whole row with ``y_a[i]``."""
    if x_a.shape != x_b.shape:
        raise PyroVAEError(f"interpolation needs as many start as end digits, got "
                           f"{x_a.shape[0]} and {x_b.shape[0]}")
    za, zb = posterior_means(guide, x_a, y_a), posterior_means(guide, x_b, y_b)
    t = torch.linspace(0, 1, steps, device=za.device)[None, :, None]
    z = (1 - t) * za[:, None] + t * zb[:, None]  # [pairs, steps, D]
    yb = None if y_a is None else y_a.repeat_interleave(steps)
    mid = decode(model, z.reshape(-1, z.shape[-1]), yb, x_dim=x_a.shape[1])
    rows = torch.cat([x_a[:, None], mid.reshape(x_a.shape[0], steps, -1), x_b[:, None]], 1)
    cols = ["x_a"] + [_num(v) for v in t.flatten().tolist()] + ["x_b"]
    return tile_images(rows.reshape(-1, x_a.shape[1]), path, per_row=steps + 2, col_labels=cols,
                       title=title or "interpolation between posterior means (ends: test digits)")


@torch.no_grad()
def plot_class_grid(model, path, *, num_classes: int = 10, per_row: int = 12, x_dim: int = 784,
                    names=None, device="cpu", title: str = "") -> Path:
    """Class-conditional samples: row c decodes ``per_row`` prior draws with label c; the
    draws are shared down each column, so a column keeps its "style" across classes."""
    z = prior_draws(model, per_row, torch.zeros(per_row, dtype=torch.long, device=device),
                    x_dim=x_dim, device=device)
    y = torch.arange(num_classes, device=device).repeat_interleave(per_row)
    images = decode(model, z.repeat(num_classes, 1), y, x_dim=x_dim)
    if num_classes > 1 and torch.equal(images[:per_row], images[per_row:2 * per_row]):
        raise PyroVAEError("the model ignores the label: a class grid needs a conditional "
                           "model (train with --model cvae)")
    return tile_images(images, path, per_row=per_row,
                       row_labels=[str(n) for n in (names or range(num_classes))],
                       title=title or "E[x | z, y]: one row per class y, z shared per column")


def plot_latent_scatter(panels, path, *, names=None, title: str = "",
                        min_extent: float = 3.0) -> Path:
    """Side-by-side scatter plots of 2-D posterior means coloured by class, each with the
    N(0, I) prior's 2-sigma circle; axes span at least ``±min_extent`` so a collapsed
    panel looks collapsed.

    :param panels: list of ``(title, z [N, 2], y [N])``.
    """
    for name, z, _ in panels:
        if z.shape[-1] != 2:
            raise PyroVAEError(f"panel {name!r}: a latent scatter needs 2-D latents "
                               f"(train with --latent-dim 2), got {z.shape[-1]}")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 3.8), dpi=DPI,
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, z, y) in zip(axes[0], panels):
        z, y = z.detach().cpu(), y.detach().cpu()
        for c in y.unique().tolist():
            pts = z[y == c]
            label = names[c] if names else str(c)
            ax.scatter(pts[:, 0], pts[:, 1], s=3, color=cmap(c % 10), label=label, alpha=0.7)
        ax.add_patch(plt.Circle((0, 0), 2.0, fill=False, ls="--", lw=0.8, color="0.4"))
        lim = max(min_extent, float(z.abs().max()) * 1.05)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("z1", fontsize=8)
        ax.set_ylabel("z2", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, -1].plot([], [], ls="--", lw=0.8, color="0.4", label="prior 2σ")
    axes[0, -1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7,
                       markerscale=3, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=1 - 1.2 / (3.6 * len(panels) + 1.2), wspace=0.3,
                        top=0.85 if title else 0.9, bottom=0.13)
    return save_figure(fig, path)


@torch.no_grad()
def plot_manifold(model, path, *, n: int = 20, y=None, x_dim: int = 784, device="cpu",
                  title: str = "") -> Path:
    """Decoded manifold of a 2-D latent: E[x | z] on an n x n grid of z at the Normal
    quantiles 0.05..0.95 (Kingma & Welling 2014, fig. 4), z1 across, z2 up."""
    d = prior_draws(model, 1, y, x_dim=x_dim, device=device).shape[-1]
    if d != 2:
        raise PyroVAEError(f"a decoded manifold needs a 2-D latent (--latent-dim 2), got {d}")
    q = Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, n, device=device))
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    z = torch.stack([z1.flatten(), z2.flatten()], -1)
    yb = None if y is None else torch.as_tensor(y, device=device).reshape(-1).expand(n * n)
    return tile_images(decode(model, z, yb, x_dim=x_dim), path, per_row=n,
                       title=title or "decoded manifold: E[x | z] over the 2-D latent")


@torch.no_grad()
def plot_style_transfer(model, guide, x, y, path, *, num_classes: int = 10, names=None,
                        title: str = "") -> Path:
    """"Style" kept, label changed: row i is test image i, then its posterior mean
    E_q[z | x_i, y_i] decoded with every label (Kingma et al. 2014, fig. 1)."""
    z = posterior_means(guide, x, y)
    labels = torch.arange(num_classes, device=z.device).repeat(len(x))
    images = decode(model, z.repeat_interleave(num_classes, 0), labels, x_dim=x.shape[1])
    rows = torch.cat([x[:, None], images.reshape(len(x), num_classes, -1)], 1)
    return tile_images(rows.reshape(-1, x.shape[1]), path, per_row=num_classes + 1,
                       col_labels=["x"] + [str(n) for n in (names or range(num_classes))],
                       title=title or "each test image's z decoded with every label")
