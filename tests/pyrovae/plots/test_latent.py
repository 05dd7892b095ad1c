"""Latent-space figures: each writes a non-empty PNG of its documented pixel size, and the
quantities behind them (posterior means, KL per unit, unit ranking) are right."""
import pytest
import torch
from PIL import Image

from pyrovae.plots import latent as lp
from pyrovae.cli import main
from pyrovae.build import build_pair
from pyrovae.config import ModelConfig
from pyrovae.errors import PyroVAEError


def pair(model="vae", latent_dim=4):
    return build_pair(ModelConfig(model=model, latent_dim=latent_dim, hidden=16),
                      x_dim=784, num_classes=10)


@pytest.fixture
def xy():
    return torch.bernoulli(torch.full((40, 784), 0.3)), torch.arange(40) % 10


def png(path):
    assert path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# Geometry (100 dpi): tiles of 0.3 in, 1.4 in of row labels, 0.35 in title, 0.25 in of
# column labels.
def test_traversal_size(tmp_path, xy):
    model, guide = pair()
    x, _ = xy
    # 4 units x 11 steps: (1.4 + 11 * 0.3) x (0.35 + 4 * 0.3 + 0.25) inches
    assert png(lp.plot_traversal(model, guide, x, tmp_path / "t.png", steps=11)) == (470, 180)
    assert png(lp.plot_traversal(model, guide, x, tmp_path / "t2.png", steps=7,
                                 max_units=2)) == (350, 120)


def test_traversal_of_a_conditional_model(tmp_path, xy):
    model, guide = pair("cvae")
    x, y = xy
    assert png(lp.plot_traversal(model, guide, x, tmp_path / "t.png", y=y, index=5)) == (470, 180)
    with pytest.raises(PyroVAEError, match="outside the test set"):
        lp.plot_traversal(model, guide, x, tmp_path / "t.png", y=y, index=40)


def test_interpolation_size(tmp_path, xy):
    model, guide = pair()
    x, _ = xy
    # 3 pairs; 11 steps (t = 0, 0.1, ..., 1) plus both ends: 13 tiles across, no row labels
    assert png(lp.plot_interpolation(model, guide, x[:3], x[3:6], tmp_path / "i.png")) == (390, 150)
    with pytest.raises(PyroVAEError, match="as many start as end"):
        lp.plot_interpolation(model, guide, x[:3], x[3:5], tmp_path / "i.png")


def test_class_grid_size(tmp_path):
    model, _ = pair("cvae")
    assert png(lp.plot_class_grid(model, tmp_path / "g.png")) == (500, 335)
    assert png(lp.plot_class_grid(model, tmp_path / "g.png", per_row=20)) == (740, 335)
    with pytest.raises(PyroVAEError, match="needs a conditional model"):
        lp.plot_class_grid(pair()[0], tmp_path / "g.png")


def test_scatter_and_manifold_sizes(tmp_path, xy):
    x, y = xy
    model, guide = pair(latent_dim=2)
    z = lp.posterior_means(guide, x)
    assert png(lp.plot_latent_scatter([("a", z, y)], tmp_path / "s1.png")) == (480, 380)
    assert png(lp.plot_latent_scatter([("a", z, y)] * 3, tmp_path / "s3.png")) == (1200, 380)
    assert png(lp.plot_manifold(model, tmp_path / "m.png", n=10)) == (300, 335)
    assert png(lp.plot_manifold(pair("cvae", 2)[0], tmp_path / "mc.png", n=8, y=3)) == (240, 275)


def test_two_d_figures_refuse_other_latent_sizes(tmp_path, xy):
    x, y = xy
    model, guide = pair(latent_dim=4)
    with pytest.raises(PyroVAEError, match="needs 2-D latents"):
        lp.plot_latent_scatter([("a", lp.posterior_means(guide, x), y)], tmp_path / "s.png")
    with pytest.raises(PyroVAEError, match="needs a 2-D latent"):
        lp.plot_manifold(model, tmp_path / "m.png")


def test_latent_statistics_match_the_diagonal_gaussian_formulas(xy):
    model, guide = pair()
    x, _ = xy
    q = guide.posterior(x)
    m, s = q.mean, q.base_dist.scale
    torch.testing.assert_close(lp.posterior_means(guide, x, batch_size=7), m)
    kl = (0.5 * (s ** 2 + m ** 2 - 1 - torch.log(s ** 2))).mean(0)
    torch.testing.assert_close(lp.kl_per_unit(model, guide, x, batch_size=7), kl)
    torch.testing.assert_close(lp.activity(m), m.var(0, unbiased=False))


def test_units_ranked_by_kl_with_inactive_marked():
    kl = torch.tensor([0.5, 3.0, 0.001, 1.0])
    act = torch.tensor([0.2, 0.9, 0.0001, 0.005])
    rows = lp.rank_units(kl, act)
    assert [u for u, _, _ in rows] == [1, 3, 0, 2]
    assert [off for _, _, off in rows] == [False, True, False, True]
    assert rows[0][1].startswith("z1") and "KL  3.00" in rows[0][1]
    # no per-unit KL (e.g. a full-covariance guide): rank by activity
    assert [u for u, _, _ in lp.rank_units(None, act)] == [1, 0, 3, 2]


def test_traverse_and_interpolate_commands(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), "--epochs", "1", "--latent-dim", "3",
                 "--hidden", "16", "--no-progress"]) == 0
    assert main(["traverse", str(run_dir), "--index", "7", "--steps", "9"]) == 0
    assert png(run_dir / "traversal.png") == (410, 150)
    assert main(["interpolate", str(run_dir), "--pairs", "0", "999"]) == 0
    assert png(run_dir / "interpolation.png") == (390, 90)
    capsys.readouterr()
    for argv in (["interpolate", str(run_dir), "--pairs", "0", "1", "2"],
                 ["interpolate", str(run_dir), "--pairs", "0", "5000"],
                 ["traverse", str(run_dir), "--index", "1000"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("pyrovae: error: ") and err.count("\n") == 1
