"""The dSprites factor grid, rendered procedurally from the factor indices.

    x = 1[ g_shape( R(-theta) (u - c(pos)) / (r * scale) ) <= 0 ]   for every pixel centre u

dSprites (Matthey, Higgins, Hassabis & Lerchner 2017, github.com/deepmind/dsprites-dataset)
is the product of five independent factors: shape (square, ellipse, heart), scale (6 values,
0.5..1), orientation (40 values in [0, 2 pi)), pos_x and pos_y (32 values each in [0, 1]) -
737,280 binary 64x64 images. No copy exists offline, so this module draws the same grid
from implicit shape functions; the pixels are not those of the released file, the factor
structure (sizes, ranges, flat-index order) is.

Geometry, in frame coordinates where the image is [0, 1]^2 and pixel (i, j) has its centre
at ((j + 0.5) / size, (i + 0.5) / size):

- every shape lives in a unit frame where it fits inside the unit disc (so no rotation can
  push it further out), and is drawn with radius ``SHAPE_RADIUS * scale``;
- the centre moves over ``[MARGIN + SHAPE_RADIUS, 1 - MARGIN - SHAPE_RADIUS]``, so even the
  largest shape at an extreme position keeps a gap of ``MARGIN`` (3.2 px at 64, 1.6 px at
  32) to the frame: the border rows and columns are always background, nothing is clipped;
- pos_x grows to the right (column index), pos_y grows downwards (row index); orientation
  turns the shape counter-clockwise on screen about its centre.

Symmetries (as in the real dSprites): the square looks the same after a quarter turn and the
ellipse after a half turn, so their orientation factor is periodic (10 and 20 of the 40
values); the heart has no rotational symmetry. The repeats are pixel for pixel (measured
over the whole reduced grid and samples of the full one in ``test_sprites.py``).

Ordering: the flat index is row-major over ``FACTOR_NAMES`` (pos_y fastest), the order of
``latents_classes`` in the released file.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from pyrovae.errors import PyroVAEError
from pyrovae.registry import register

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
SHAPE_NAMES = ("square", "ellipse", "heart")

SHAPE_RADIUS = 0.2  # frame units: radius of the disc holding the largest (scale 1) shape
MARGIN = 0.05  # frame units between the largest shape and the frame edge
ELLIPSE_MINOR = 0.5  # semi-minor axis in the unit frame (the major one is 1): aspect 2:1
# The heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in +-1.139, y in [-1, 1.236]; about
# (0, 0.25) every point is within 1.25 (the tip at (0, -1) is the farthest), so shifting
# by 0.25 and dividing by 1.25 puts it in the unit disc.
HEART_CENTRE_Y = 0.25
HEART_RADIUS = 1.25
_CHUNK = 1024  # images rendered at once: bounds the [chunk, size, size] temporaries


class SpriteGridError(PyroVAEError):
    """Bad factors, indices or grid settings; the message says what to pass instead."""


def _square(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    half = 1.0 / math.sqrt(2.0)  # corners on the unit circle
    return torch.maximum(p.abs(), q.abs()) <= half


def _ellipse(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return p * p + (q / ELLIPSE_MINOR) ** 2 <= 1.0


def _heart(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    x, y = p * HEART_RADIUS, q * HEART_RADIUS + HEART_CENTRE_Y
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 <= 0.0


_SHAPES = (_square, _ellipse, _heart)


class SpriteGrid:
    """The full factor grid shape x scale x orientation x pos_x x pos_y, rendered on demand.

    :param size: image side in pixels (64 for dSprites).
    :param num_positions: values of pos_x and of pos_y, linearly over [0, 1].
    :param num_orientations: values of the angle, ``2 pi k / num_orientations``.
    :param num_scales: values of the scale, linearly over [0.5, 1].
    """

    def __init__(self, size: int = 64, num_positions: int = 32, num_orientations: int = 40,
                 num_scales: int = 6):
        for name, value, low in (("size", size, 8), ("num_positions", num_positions, 2),
                                 ("num_orientations", num_orientations, 1),
                                 ("num_scales", num_scales, 1)):
            if not isinstance(value, int) or value < low:
                raise SpriteGridError(f"{name} must be an integer >= {low}; got {value!r}")
        self.size = size
        self.factor_sizes = (len(SHAPE_NAMES), num_scales, num_orientations,
                             num_positions, num_positions)
        self.scales = torch.linspace(0.5, 1.0, num_scales, dtype=torch.float64)
        self.angles = torch.arange(num_orientations, dtype=torch.float64) * (
            2 * math.pi / num_orientations)
        lo = MARGIN + SHAPE_RADIUS
        self.positions = torch.linspace(lo, 1.0 - lo, num_positions, dtype=torch.float64)
        strides, acc = [], 1
        for n in reversed(self.factor_sizes):
            strides.append(acc)
            acc *= n
        self._strides = torch.tensor(strides[::-1])
        self._len = acc
        centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
        self._u = centres.view(1, 1, size)  # column coordinate of each pixel centre
        self._v = centres.view(1, size, 1)  # row coordinate (downwards)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={k}" for n, k in zip(FACTOR_NAMES, self.factor_sizes))
        return f"SpriteGrid(size={self.size}, {sizes})"

    def _check_indices(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices)
        if idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise SpriteGridError(f"indices must be integers; got dtype {idx.dtype}")
        idx = idx.reshape(-1).long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= self._len):
            raise SpriteGridError(f"indices must lie in [0, {self._len}); got "
                                  f"[{idx.min().item()}, {idx.max().item()}]")
        return idx

    def _check_factors(self, factors) -> torch.Tensor:
        f = torch.as_tensor(factors)
        if f.dtype.is_floating_point or f.dtype == torch.bool:
            raise SpriteGridError(f"factors must be integer class indices; got dtype "
                                  f"{f.dtype} (use grid.factors(indices))")
        if f.dim() != 2 or f.shape[1] != len(FACTOR_NAMES):
            raise SpriteGridError(f"factors must have shape [N, {len(FACTOR_NAMES)}] "
                                  f"(columns {FACTOR_NAMES}); got {tuple(f.shape)}")
        f = f.long()
        sizes = torch.tensor(self.factor_sizes)
        bad = ((f < 0) | (f >= sizes)).any(0)
        if bad.any():
            k = int(bad.nonzero()[0])
            raise SpriteGridError(f"factor {FACTOR_NAMES[k]!r} must lie in "
                                  f"[0, {self.factor_sizes[k]}); got values outside")
        return f

    def factors(self, indices) -> torch.Tensor:
        """Factor classes of flat indices: ``f_k = (i // stride_k) % size_k``.

        :param indices: integer tensor of flat indices (any shape, flattened).
        :returns: LongTensor ``[N, 5]`` in the order of ``FACTOR_NAMES``.
        """
        idx = self._check_indices(indices)
        return (idx[:, None] // self._strides) % torch.tensor(self.factor_sizes)

    def index(self, factors) -> torch.Tensor:
        """Flat indices of factor classes, the inverse of :meth:`factors`.

        :param factors: integer ``[N, 5]``.
        :returns: LongTensor ``[N]``.
        """
        return (self._check_factors(factors) * self._strides).sum(1)

    def factor_values(self, factors) -> torch.Tensor:
        """The physical value of each factor class: shape id, scale, angle (radians),
        and the centre's x and y in frame units.

        :param factors: integer ``[N, 5]``.
        :returns: float64 ``[N, 5]``.
        """
        f = self._check_factors(factors)
        return torch.stack([f[:, 0].double(), self.scales[f[:, 1]], self.angles[f[:, 2]],
                            self.positions[f[:, 3]], self.positions[f[:, 4]]], 1)

    def render(self, factors) -> torch.Tensor:
        """Draw images: pixel = 1 when its centre falls inside the placed shape.

        Float64 geometry on the CPU, so a given factor row always gives the same pixels.

        :param factors: integer ``[N, 5]``.
        :returns: float32 ``[N, size * size]`` with values in {0, 1}, rows top to bottom.
        """
        f = self._check_factors(factors)
        out = torch.empty(f.shape[0], self.size * self.size, dtype=torch.float32)
        for start in range(0, f.shape[0], _CHUNK):
            part = f[start:start + _CHUNK]
            out[start:start + _CHUNK] = self._draw(part).reshape(part.shape[0], -1)
        return out

    def _draw(self, f: torch.Tensor) -> torch.Tensor:
        radius = (SHAPE_RADIUS * self.scales[f[:, 1]]).view(-1, 1, 1)
        theta = self.angles[f[:, 2]].view(-1, 1, 1)
        dx = self._u - self.positions[f[:, 3]].view(-1, 1, 1)
        dy = self.positions[f[:, 4]].view(-1, 1, 1) - self._v  # screen "up" is positive
        cos, sin = torch.cos(theta), torch.sin(theta)
        # Undo the rotation and the scale: pixel centre in the shape's unit frame.
        p = (cos * dx + sin * dy) / radius
        q = (cos * dy - sin * dx) / radius
        mask = torch.zeros(p.shape, dtype=torch.bool)
        for s, inside in enumerate(_SHAPES):
            sel = f[:, 0] == s
            if sel.any():
                mask[sel] = inside(p[sel], q[sel])
        return mask.float()

    def images(self, indices) -> torch.Tensor:
        """``render(factors(indices))``: float32 ``[N, size * size]``."""
        return self.render(self.factors(indices))


def reduced_grid() -> SpriteGrid:
    """A 32x32 grid of 11,520 images (3 shapes, 6 scales, 10 orientations, 8x8 positions)
    for tests and quick studies; all of it bit-packed takes 1.5 MB."""
    return SpriteGrid(size=32, num_positions=8, num_orientations=10, num_scales=6)


def make_split(grid, num_train: int, num_test: int, seed: int):
    """Disjoint random train and test flat indices: the first ``num_train`` and the next
    ``num_test`` entries of one seeded permutation of ``range(len(grid))``.

    :param grid: anything with ``__len__`` (a :class:`SpriteGrid`).
    :returns: ``(train_idx, test_idx)``, LongTensors in random order.
    """
    n = len(grid)
    if not (isinstance(num_train, int) and isinstance(num_test, int)) or min(
            num_train, num_test) < 0:
        raise SpriteGridError(f"num_train and num_test must be integers >= 0; got "
                              f"{num_train!r} and {num_test!r}")
    if num_train + num_test > n:
        raise SpriteGridError(f"num_train + num_test = {num_train + num_test} exceeds the "
                              f"{n} images of the grid; ask for fewer")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:num_train].clone(), perm[num_train:num_train + num_test].clone()


def grid_arrays(grid: SpriteGrid, num_train: int, num_test: int, seed: int = 0) -> dict:
    """A seeded train/test split of ``grid`` as a dataset's arrays (uint8 images 0 / 255,
    factor classes), in the format of :func:`pyrovae.data.load_dataset`; the grid itself
    comes along as ``factor_source`` (it renders any factors: the FactorVAE score needs it)."""
    train, test = make_split(grid, num_train, num_test, seed)
    arrays = {"factor_names": FACTOR_NAMES, "factor_sizes": grid.factor_sizes,
              "factor_source": grid, "num_classes": len(SHAPE_NAMES)}
    for split, idx in (("train", train), ("test", test)):
        f = grid.factors(idx)
        images = grid.render(f).reshape(-1, grid.size, grid.size)
        arrays[f"{split}_x"] = (images.numpy() * 255).astype(np.uint8)
        arrays[f"{split}_y"] = f[:, 0].numpy()  # the shape, as the class label
        arrays[f"{split}_factors"] = f.numpy()
    return arrays


@register("dataset", "sprites")
def sprites(data_dir=None) -> dict:
    """The reduced dSprites grid (32 x 32, 11,520 images), split 10,368 / 1,152."""
    grid = reduced_grid()
    return grid_arrays(grid, len(grid) - len(grid) // 10, len(grid) // 10)


@register("dataset", "sprites64")
def sprites64(data_dir=None) -> dict:
    """dSprites at full resolution (64 x 64): a seeded 20,000 / 2,000 sample of the grid's
    737,280 images (all of them as float32 would take 12 GB)."""
    return grid_arrays(SpriteGrid(), 20_000, 2_000)
