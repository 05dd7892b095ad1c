"""The one image tiler: every grid of images pyrovae draws goes through :func:`tile_images`.

Fixed geometry -- ``TILE`` inches per image at ``DPI`` -- so a figure's pixel size is known
in advance: ``(LEFT if row labels) + cols * TILE`` by ``TOP + rows * TILE (+ BOTTOM if
column labels)`` inches.  Images are flat ``[N, D]`` (or ``[N, C, H, W]``) with values in
[0, 1]; a flat square single-channel image (784 = 28 x 28, 4096 = 64 x 64) needs no shape.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from pyrovae.errors import PyroVAEError  # noqa: E402

DPI = 100
TILE = 0.3  # inches per image tile
LEFT, TOP, BOTTOM = 1.4, 0.35, 0.25  # margins (inches) for row labels, title, column labels


def image_shape_of(x_dim: int) -> tuple:
    """``(1, s, s)`` for a flat square image of ``x_dim = s * s`` pixels."""
    side = math.isqrt(x_dim)
    if side * side != x_dim:
        raise PyroVAEError(f"cannot draw {x_dim}-dim datapoints as square images; "
                           f"pass image_shape=(C, H, W)")
    return (1, side, side)


def save_figure(fig, path, *, dpi=None) -> Path:
    """Write a matplotlib figure as PNG (folders created), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def tile_images(images: torch.Tensor, path, *, per_row: int, title: str = "",
                row_labels=None, row_colors=None, col_labels=None, image_shape=None,
                tile: float = TILE) -> Path:
    """Images in rows of ``per_row``; labels beside rows and under columns are optional."""
    images = images.detach().float().cpu()
    shape = image_shape or image_shape_of(images[0].numel())
    ncol = per_row
    nrow = math.ceil(images.shape[0] / ncol)
    grid = make_grid(images.reshape(-1, *shape).clamp(0, 1), nrow=ncol, padding=2,
                     pad_value=1.0)
    grid = grid[0].numpy() if shape[0] == 1 else grid.permute(1, 2, 0).numpy()
    left = LEFT if row_labels else 0.0
    longest = max((len(str(c)) for c in col_labels or []), default=0)
    slanted = longest * 0.045 > tile  # words wider than a tile: slant them so they never touch
    bottom = (BOTTOM + 0.04 * longest if slanted else BOTTOM) if col_labels else 0.0
    top = TOP if title else 0.05
    w, h = left + ncol * tile, top + nrow * tile + bottom
    fig = plt.figure(figsize=(w, h), dpi=DPI)
    ax = fig.add_axes([left / w, bottom / h, ncol * tile / w, nrow * tile / h])
    ax.imshow(grid, cmap="gray", interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1 - 0.5 * top / h, title, ha="center", va="center", fontsize=8)
    for r, label in enumerate(row_labels or []):
        color = row_colors[r] if row_colors else "black"
        fig.text((left - 0.05) / w, (bottom + (nrow - r - 0.5) * tile) / h, label,
                 ha="right", va="center", fontsize=7, color=color, family="monospace")
    for c, label in enumerate(col_labels or []):
        if slanted:
            fig.text((left + (c + 0.6) * tile) / w, (bottom - 0.04) / h, label, ha="right",
                     va="top", fontsize=6, rotation=40, rotation_mode="anchor")
        else:
            fig.text((left + (c + 0.5) * tile) / w, 0.5 * bottom / h, label, ha="center",
                     va="center", fontsize=6)
    return save_figure(fig, path)
