"""MIG and FactorVAE on codes whose answer is known.

    perfect code -> 1, noise -> 0 (MIG) / 1/K (FactorVAE), a duplicated or rotated factor
    -> a lower MIG for that factor
"""
import math

import numpy as np
import pytest
import torch

from pyrovae.evaluation.disentanglement import (MetricError, discrete_entropy, discrete_mutual_info, factorvae_score,
                     histogram_discretize, mig)
from pyrovae.sprites import reduced_grid

torch.set_num_threads(1)
SIZES = (5, 6, 7, 8)
K = len(SIZES)
VOTES = dict(num_train_votes=800, num_eval_votes=1000, batch_size=64,
             num_variance_estimate=2000)


class Toy:
    """Ground truth whose 'observation' is the factor classes themselves."""
    factor_sizes = SIZES

    def render(self, f):
        return f.double()


def balanced_factors(repeats: int = 6) -> torch.Tensor:
    """Every combination ``repeats`` times: 10,080 rows, factors exactly independent."""
    grid = torch.cartesian_prod(*[torch.arange(s) for s in SIZES])
    return grid.repeat(repeats, 1)


def code_maker(kind: str, seed: int = 0):
    """``encode(observation) -> codes`` for each known representation."""
    g = torch.Generator().manual_seed(seed)
    c45 = math.cos(math.pi / 4)

    def encode(x):
        x = x.double()
        noise = 1e-3 * torch.randn(x.shape[0], 8, generator=g, dtype=torch.float64)
        if kind == "perfect":
            return x + noise[:, :K]
        if kind == "noise":
            return noise[:, :K] * 1e3
        if kind == "duplicated":  # factor 0 in dims 0 and 1, then factors 1..3
            return torch.cat([x[:, :1], x], 1) + noise[:, :K + 1]
        if kind == "rotated":  # dims 0, 1 mix factors 0, 1 by a 45-degree rotation
            a, b = x[:, 0] / SIZES[0], x[:, 1] / SIZES[1]  # comparable ranges
            rot = torch.stack([c45 * (a - b), c45 * (a + b)], 1)
            return torch.cat([rot, x[:, 2:]], 1) + noise[:, :K]
        raise KeyError(kind)
    return encode


@pytest.fixture(scope="module")
def results():
    f = balanced_factors()
    out = {}
    for kind in ("perfect", "noise", "duplicated", "rotated"):
        out[kind] = mig(code_maker(kind)(f), f)
    return out


def test_hand_computed_mutual_information():
    x, y = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1])
    # p(0,0)=1/2, p(0,1)=1/4, p(1,1)=1/4; p(x)=(3/4, 1/4), p(y)=(1/2, 1/2).
    expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    assert discrete_mutual_info(x, y) == pytest.approx(expected, abs=1e-12)
    assert discrete_mutual_info(y, y) == pytest.approx(math.log(2))
    assert discrete_mutual_info(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])) == 0
    assert discrete_entropy(torch.tensor([7, 7, 7, 9])) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_hand_computed_mig():
    """One factor [0,0,1,1]; dim 0 copies it (I = log 2), dim 1 is x above (I = expected)."""
    f = torch.tensor([[0], [0], [1], [1]])
    codes = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    second = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    r = mig(codes, f)
    assert r.score == pytest.approx((math.log(2) - second) / math.log(2))
    assert r.mutual_information.shape == (2, 1)


def test_discretizer_matches_numpy_histogram():
    c = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = histogram_discretize(c, 20)
    for j in range(3):
        x = c[:, j].numpy()
        ref = np.digitize(x, np.histogram(x, 20)[1][:-1]) - 1
        assert np.array_equal(ours[:, j].numpy(), ref)
    assert ours.min() == 0 and ours.max() == 19


def test_perfect_code(results):
    r = results["perfect"]
    assert r.score > 0.99 and min(r.per_factor) > 0.99
    assert r.skipped_factors == ()


def test_noise_code(results):
    assert abs(results["noise"].score) < 0.02


def test_duplicated_factor(results):
    r = results["duplicated"]
    assert r.per_factor[0] < 0.01  # two dims carry factor 0 equally: no gap
    assert min(r.per_factor[1:]) > 0.99


def test_rotated_code(results):
    r, p = results["rotated"], results["perfect"]
    assert r.score < p.score - 0.1
    assert max(r.per_factor[:2]) < 0.6 and min(r.per_factor[2:]) > 0.99


def test_constant_factor_is_skipped():
    f = balanced_factors(1)
    f = torch.cat([f, torch.zeros(len(f), 1, dtype=torch.long)], 1)
    r = mig(code_maker("perfect")(f[:, :K]), f)
    assert r.skipped_factors == (K,) and math.isnan(r.per_factor[K])
    assert r.score > 0.99


def test_mig_errors():
    f = balanced_factors(1)
    with pytest.raises(MetricError, match="one row per datapoint"):
        mig(torch.zeros(len(f) - 1, 4), f)
    with pytest.raises(MetricError, match="at least 2 code dims"):
        mig(torch.zeros(len(f), 1), f)
    with pytest.raises(MetricError, match="integer"):
        mig(torch.zeros(len(f), 4), f.float())
    with pytest.raises(MetricError, match="every factor is constant"):
        mig(torch.randn(10, 3), torch.zeros(10, 2, dtype=torch.long))
    with pytest.raises(MetricError, match="nan"):
        mig(torch.full((len(f), 4), math.nan), f)
    assert issubclass(MetricError, ValueError)


def test_factorvae_perfect_and_duplicated():
    for kind in ("perfect", "duplicated"):
        r = factorvae_score(code_maker(kind), Toy(), **VOTES,
                            generator=torch.Generator().manual_seed(1))
        assert r.score == 1.0 and r.train_accuracy == 1.0
    assert r.classifier[:2] == (0, 0)  # both copies of factor 0 vote for it


def test_factorvae_noise_is_chance():
    """Eval votes are independent of the classifier, so E[score] = 1/K exactly; with
    1,000 eval votes the std is sqrt(p (1 - p) / 1000) = 0.014 (tolerance 4 std)."""
    r = factorvae_score(code_maker("noise"), Toy(), **VOTES,
                        generator=torch.Generator().manual_seed(2))
    assert abs(r.score - 1 / K) < 0.055


def test_factorvae_rotated_and_pruned():
    r = factorvae_score(code_maker("rotated"), Toy(), **VOTES,
                        generator=torch.Generator().manual_seed(3))
    assert 0.6 < r.score < 0.9  # factors 0 and 1 share two dims: each dim wins half
    collapsed = factorvae_score(lambda x: torch.zeros(x.shape[0], 3), Toy(), **VOTES)
    assert collapsed.score == 0.0 and collapsed.active_dims == ()
    pruned = factorvae_score(lambda x: torch.cat([code_maker("perfect")(x),
                                                  torch.zeros(x.shape[0], 2)], 1),
                             Toy(), **VOTES)
    assert pruned.active_dims == (0, 1, 2, 3) and pruned.score == 1.0


def test_factorvae_errors():
    with pytest.raises(MetricError, match="batch_size"):
        factorvae_score(code_maker("perfect"), Toy(), batch_size=1)
    with pytest.raises(MetricError, match="factor_sizes"):
        factorvae_score(code_maker("perfect"), object())
    with pytest.raises(MetricError, match=r"\[N, L\]"):
        factorvae_score(lambda x: x[:, 0], Toy(), **VOTES)


def test_sprites_hand_made_encoder():
    """Centre of mass and area read pos_x, pos_y and scale off the rendered images."""
    grid = reduced_grid()
    s = grid.size

    def encode(x):
        im = x.view(-1, s, s)
        r = torch.arange(s, dtype=torch.float32)
        area = im.sum((1, 2))
        return torch.stack([area, (im.sum(1) @ r) / area, (im.sum(2) @ r) / area], 1)

    idx = torch.arange(len(grid))
    r = mig(encode(grid.images(idx)), grid.factors(idx))
    assert min(r.per_factor[3:]) > 0.9  # positions: one dim each
    assert r.per_factor[2] < 0.05  # orientation: no dim (area also tells shapes apart)
    fv = factorvae_score(encode, grid, num_train_votes=300, num_eval_votes=300)
    assert 0.45 < fv.score < 0.85  # three of five factors have a dim of their own (0.56)
