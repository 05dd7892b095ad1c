"""Checks that the rendered pixels carry the factors the indices claim.

    factors(i) -> render -> image, and image statistics move with each factor as promised
"""
import math

import pytest
import torch

from pyrovae.sprites import (FACTOR_NAMES, SpriteGrid, SpriteGridError, make_split,
                     reduced_grid)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def full():
    return SpriteGrid()


@pytest.fixture(scope="module")
def small():
    return reduced_grid()


@pytest.fixture(scope="module")
def small_all(small):
    """Every image of the reduced grid, as bool [N, 32, 32] (11,520 images)."""
    return small.images(torch.arange(len(small))).view(-1, 32, 32).bool()


def _img(grid, f):
    return grid.render(torch.tensor([f])).view(grid.size, grid.size)


def _centre_of_mass(ims):
    """Mean (row, column) of the foreground of bool [N, S, S]."""
    s = ims.shape[-1]
    w = ims.float()
    r = torch.arange(s, dtype=torch.float32)
    area = w.sum((1, 2))
    return (w.sum(2) @ r) / area, (w.sum(1) @ r) / area


def test_sizes_and_names(full, small):
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert full.factor_sizes == (3, 6, 40, 32, 32) and len(full) == 737_280
    assert small.factor_sizes == (3, 6, 10, 8, 8) and len(small) == 11_520
    assert torch.allclose(full.scales, torch.linspace(0.5, 1, 6, dtype=torch.float64))
    assert full.angles[1].item() == pytest.approx(2 * math.pi / 40)


def test_index_factor_round_trip(full):
    idx = torch.randint(len(full), (5000,), generator=torch.Generator().manual_seed(0))
    f = full.factors(idx)
    assert f.dtype == torch.long and f.shape == (5000, 5)
    assert torch.equal(full.index(f), idx)
    assert torch.equal(full.factors(torch.tensor([len(full) - 1]))[0],
                       torch.tensor(full.factor_sizes) - 1)
    assert full.factors(torch.tensor([1]))[0].tolist() == [0, 0, 0, 0, 1]  # pos_y fastest


def test_binary_deterministic_and_dtype(full):
    idx = torch.randint(len(full), (300,), generator=torch.Generator().manual_seed(1))
    a, b = full.images(idx), SpriteGrid().images(idx)
    assert a.dtype == torch.float32 and a.shape == (300, 64 * 64)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_every_image_nonempty_with_empty_border(small_all):
    area = small_all.sum((1, 2))
    assert area.min() > 0
    border = small_all[:, 0].any(1) | small_all[:, -1].any(1) | small_all[:, :, 0].any(1) \
        | small_all[:, :, -1].any(1)
    assert not border.any()


def test_full_grid_extremes_never_touch_border(full):
    """Largest shape, every orientation, all four corners and edge midpoints."""
    pos = [0, 15, 31]
    f = torch.tensor([[s, 5, o, x, y] for s in range(3) for o in range(40)
                      for x in pos for y in pos if (x, y) != (15, 15)])
    ims = full.render(f).view(-1, 64, 64).bool()
    edge = ims[:, :2].any((1, 2)) | ims[:, -2:].any((1, 2)) | ims[:, :, :2].any((1, 2)) \
        | ims[:, :, -2:].any((1, 2))
    assert not edge.any()  # a gap of >= 2 pixels: nothing can be clipped
    assert ims.sum((1, 2)).min() > 0


def test_positions_move_centre_monotonically(small, small_all):
    ims = small_all.view(*small.factor_sizes, 32, 32)
    rows, cols = _centre_of_mass(ims.reshape(-1, 32, 32))
    rows, cols = rows.view(small.factor_sizes), cols.view(small.factor_sizes)
    assert (cols.diff(dim=3) > 0).all()  # pos_x moves right
    assert (rows.diff(dim=4) > 0).all()  # pos_y moves down
    assert cols.diff(dim=4).abs().max() < 0.5 and rows.diff(dim=3).abs().max() < 0.5


def test_positions_monotone_on_full_grid(full):
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        base = [int(torch.randint(n, (1,), generator=g)) for n in full.factor_sizes]
        for k, axis in ((3, 1), (4, 0)):
            f = torch.tensor(base).repeat(32, 1)
            f[:, k] = torch.arange(32)
            com = _centre_of_mass(full.render(f).view(-1, 64, 64).bool())[axis]
            assert (com.diff() > 0).all()


def test_scale_increases_area(small, small_all):
    """Non-decreasing for every factor combination, strictly on average per step, and
    strictly from the smallest to the largest scale. (Pixel-centre sampling can give an
    axis-aligned square the same pixel count at neighbouring scales: 0.9% of the steps at
    32x32, 16 of 9,600 sampled steps at 64x64.)"""
    area = small_all.sum((1, 2)).view(small.factor_sizes)
    step = area.diff(dim=1)
    assert (step >= 0).all()
    assert (step.float().mean(dim=(0, 2, 3, 4)) > 0).all()
    assert (area[:, -1] > area[:, 0]).all()


def test_orientation_changes_outline(full):
    def im(o, s=0):
        return _img(full, [s, 5, o, 16, 16]).bool()
    assert (im(0) ^ im(5)).sum() > 40  # the square at 0 and 45 degrees (index 5 of 40)
    assert (im(0, 1) ^ im(10, 1)).sum() > 100  # the ellipse at 0 and 90 degrees
    # The heart has no rotational symmetry: a half turn moves the tip from bottom to top.
    h0, h20 = im(0, 2), im(20, 2)
    assert (h0 ^ h20).sum() > 50
    r0, _ = _centre_of_mass(h0[None])
    r20, _ = _centre_of_mass(h20[None])
    assert r0 < r20  # upright: lobes (more mass) above the centre; turned: below


def test_documented_symmetries_are_exact(full, small, small_all):
    """Square and ellipse repeat after a half turn, the square after a quarter turn,
    pixel for pixel (measured: 0 differing pixels); the heart never does."""
    ims = small_all.view(*small.factor_sizes, -1)
    half = small.factor_sizes[2] // 2
    assert torch.equal(ims[:2, :, :half], ims[:2, :, half:])
    assert ((ims[2, :, :half] ^ ims[2, :, half:]).sum(-1) > 0).all()
    g = torch.Generator().manual_seed(5)
    f = torch.stack([torch.randint(n, (400,), generator=g) for n in full.factor_sizes], 1)
    f[:, 0] = 0
    f[:, 2] %= 30
    turned = f.clone()
    turned[:, 2] += 10
    assert torch.equal(full.render(f), full.render(turned))


def test_orientation_is_counter_clockwise(full):
    """The ellipse's major axis at +45 degrees rises to the right on screen."""
    im = _img(full, [1, 5, 5, 16, 16]).bool()
    rows, cols = im.nonzero(as_tuple=True)
    r, c = rows.float() - rows.float().mean(), cols.float() - cols.float().mean()
    assert (r * c).mean() < 0  # row index grows downwards: rising right = negative cov


def test_shapes_differ(full):
    ims = [_img(full, [s, 5, 0, 16, 16]).bool() for s in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (ims[i] ^ ims[j]).sum() > 30


def test_make_split_disjoint_and_seeded(full):
    tr, te = make_split(full, 1000, 500, seed=3)
    assert len(tr) == 1000 and len(te) == 500
    assert len(set(tr.tolist()) | set(te.tolist())) == 1500
    tr2, te2 = make_split(full, 1000, 500, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    assert not torch.equal(make_split(full, 1000, 500, seed=4)[0], tr)
    with pytest.raises(SpriteGridError, match="exceeds"):
        make_split(full, len(full), 1, seed=0)


def test_errors_name_the_problem(full):
    with pytest.raises(SpriteGridError, match=r"\[0, 737280\)"):
        full.factors(torch.tensor([len(full)]))
    with pytest.raises(SpriteGridError, match="integer"):
        full.render(torch.zeros(2, 5))
    with pytest.raises(SpriteGridError, match="'orientation'"):
        full.render(torch.tensor([[0, 0, 40, 0, 0]]))
    with pytest.raises(SpriteGridError, match=r"\[N, 5\]"):
        full.index(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(SpriteGridError, match="size"):
        SpriteGrid(size=4)
    assert issubclass(SpriteGridError, ValueError)


def test_sprites_datasets_load_with_their_factors():
    from pyrovae import load_dataset

    data = load_dataset("sprites")
    assert data.image_shape == (1, 32, 32) and data.x_dim == 1024
    assert len(data.train_x) == 10368 and len(data.test_x) == 1152
    assert data.factor_names == FACTOR_NAMES and data.factor_sizes == (3, 6, 10, 8, 8)
    assert torch.equal(data.factor_source.render(data.test_factors[:5]), data.test_x[:5])
    assert set(data.train_x.unique().tolist()) == {0.0, 1.0}

