"""Pictures of the latent space: traversals, interpolations, class grids, 2-D scatter and
decoded manifolds.  Each figure function writes one PNG and returns its path.

Everything works from the model/guide contract: posterior means are read from the
guide's ``"z"`` site, decoded images are E[x | z] of the model's ``"x"`` site with ``z``
conditioned (``poutine.condition``), so any pair with a factorized ``"z"`` works.
Image figures have a fixed geometry -- ``TILE`` inches per 28x28 image, 100 dpi -- so
their pixel size is known in advance: rows x cols tiles plus the margins below.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from torch.distributions import Independent, Normal, kl_divergence  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from pyrovae.errors import PyroVAEError  # noqa: E402

DPI = 100
TILE = 0.3  # inches per image tile
LEFT, TOP, BOTTOM = 1.4, 0.35, 0.25  # margins (inches) for row labels, title, column labels
INACTIVE = 0.01  # Burda et al. (2016): unit u is active when Cov_x(E_q[z_u | x]) > 0.01
CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


def class_names(dataset: str, num_classes: int = 10) -> list[str]:
    return CLASS_NAMES.get(dataset, [str(c) for c in range(num_classes)])


# --- latent quantities from the contract ---------------------------------------------

def _guide_trace(guide, x, y):
    with poutine.block():
        return poutine.trace(guide).get_trace(x, y)


@torch.no_grad()
def posterior_means(guide, x, y=None, *, batch_size: int = 500) -> torch.Tensor:
    """E_q[z | x] for every row of ``x`` as ``[N, latent_dim]``."""
    out = []
    for i in range(0, x.shape[0], batch_size):
        yb = None if y is None else y[i:i + batch_size]
        out.append(_site_mean(guide, x[i:i + batch_size], yb))
    return torch.cat(out)


def _site_mean(guide, x, y, draws: int = 64):
    try:
        return _guide_trace(guide, x, y).nodes["z"]["fn"].mean
    except NotImplementedError:  # e.g. a flow guide: no closed-form mean, average draws
        return sum(_guide_trace(guide, x, y).nodes["z"]["value"] for _ in range(draws)) / draws


@torch.no_grad()
def kl_per_unit(model, guide, x, y=None, *, batch_size: int = 500) -> torch.Tensor | None:
    """Average over ``x`` of KL(q(z_u | x) || p(z_u)) per unit u, ``[latent_dim]``.

    Defined when guide and prior both factorize over units as Normals (the diagonal
    guide with the standard prior); ``None`` otherwise.
    """
    total = None
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], None if y is None else y[i:i + batch_size]
        g_tr = _guide_trace(guide, xb, yb)
        with poutine.block():
            m_tr = poutine.trace(poutine.replay(model, trace=g_tr)).get_trace(xb, yb)
        q, p = (_base(tr.nodes["z"]["fn"]) for tr in (g_tr, m_tr))
        if not (isinstance(q, Normal) and isinstance(p, Normal)):
            return None
        kl = kl_divergence(q, p).reshape(-1, q.batch_shape[-1]).sum(0)
        total = kl if total is None else total + kl
    return total / x.shape[0]


def _base(d):
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def activity(means: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_u | x]) per unit: the active-unit statistic of Burda et al. (2016)."""
    return means.double().var(0, unbiased=False).float()


@torch.no_grad()
def decode(model, z: torch.Tensor, y=None, *, x_dim: int = 784) -> torch.Tensor:
    """E[x | z] (``[N, x_dim]``) with the model's ``"z"`` fixed to ``z``."""
    dummy = torch.zeros(z.shape[0], x_dim, device=z.device)
    with poutine.block():
        tr = poutine.trace(poutine.condition(model, data={"z": z})).get_trace(dummy, y)
    return tr.nodes["x"]["fn"].mean


@torch.no_grad()
def prior_draws(model, n: int, y=None, *, x_dim: int = 784, device="cpu") -> torch.Tensor:
    """``n`` draws of ``z`` from the model's prior (``[n, latent_dim]``)."""
    dummy = torch.zeros(n, x_dim, device=device)
    with poutine.block():
        tr = poutine.trace(poutine.uncondition(model)).get_trace(dummy, y)
    return tr.nodes["z"]["value"]


# --- drawing ----------------------------------------------------------------------

def tile_figure(images: torch.Tensor, nrow: int, path, *, title: str = "",
                row_labels=None, row_colors=None, col_labels=None) -> Path:
    """Images ``[rows * cols, 784]`` in rows of ``ncol = len / nrow``; fixed geometry:
    ``(LEFT if row_labels) + cols * TILE`` by ``TOP + rows * TILE (+ BOTTOM if col_labels)``
    inches at ``DPI``."""
    ncol = images.shape[0] // nrow
    grid = make_grid(images.detach().float().cpu().reshape(-1, 1, 28, 28).clamp(0, 1),
                     nrow=ncol, padding=2, pad_value=1.0)[0].numpy()
    left = LEFT if row_labels else 0.0
    bottom = BOTTOM if col_labels else 0.0
    w, h = left + ncol * TILE, TOP + nrow * TILE + bottom
    fig = plt.figure(figsize=(w, h), dpi=DPI)
    ax = fig.add_axes([left / w, bottom / h, ncol * TILE / w, nrow * TILE / h])
    ax.imshow(grid, cmap="gray", interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1 - 0.5 * TOP / h, title, ha="center", va="center", fontsize=8)
    for r, label in enumerate(row_labels or []):
        color = row_colors[r] if row_colors else "black"
        fig.text((left - 0.05) / w, (bottom + (nrow - r - 0.5) * TILE) / h, label,
                 ha="right", va="center", fontsize=7, color=color, family="monospace")
    for c, label in enumerate(col_labels or []):
        fig.text((left + (c + 0.5) * TILE) / w, 0.5 * bottom / h, label, ha="center",
                 va="center", fontsize=6)
    return _save(fig, path)


def _num(v: float) -> str:
    return f"{v:.1f}".replace("-0.0", "0.0")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# --- figures ------------------------------------------------------------------------

@torch.no_grad()
def plot_traversal(model, guide, x, path, *, y=None, index: int = 0, span: float = 3.0,
                   steps: int = 11, max_units: int | None = None, title: str = "") -> Path:
    """Latent traversal: one row per unit u, z_u swept over [-span, span] with the other
    units held at E_q[z | x_index]; rows ordered by the unit's average KL over ``x``
    (or by its activity when KL per unit is undefined), inactive units greyed.

    ``x`` is a test set: it supplies the KL/activity statistics and the held digit.
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
    return tile_figure(images, len(rows), path, title=title,
                       row_labels=[label for _, label, _ in rows],
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
    return tile_figure(rows.reshape(-1, x_a.shape[1]), x_a.shape[0], path, col_labels=cols,
                       title=title or "interpolation between posterior means (ends: test digits)")


@torch.no_grad()
def plot_class_grid(model, path, *, num_classes: int = 10, per_row: int = 12, x_dim: int = 784,
                    names=None, device="cpu", title: str = "") -> Path:
    """Class-conditional samples: row c decodes ``per_row`` prior draws with label c; the
    draws are shared down each column, so a column keeps its "style" across classes."""
    if not getattr(model, "conditional", False):
        raise PyroVAEError("a class grid needs a conditional model (train with --model cvae)")
    z = prior_draws(model, per_row, torch.zeros(per_row, dtype=torch.long, device=device),
                    x_dim=x_dim, device=device)
    y = torch.arange(num_classes, device=device).repeat_interleave(per_row)
    images = decode(model, z.repeat(num_classes, 1), y, x_dim=x_dim)
    return tile_figure(images, num_classes, path, row_labels=list(names or range(num_classes)),
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
    return _save(fig, path)


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
    return tile_figure(decode(model, z, yb, x_dim=x_dim), n, path,
                       title=title or "decoded manifold: E[x | z] over the 2-D latent")
