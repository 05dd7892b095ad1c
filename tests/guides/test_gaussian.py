import pytest
import torch

from pyrovae.errors import PyroVAEError
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.nets import MLP


@pytest.mark.parametrize("scale", ["exp", "softplus"])
def test_init_scale_starts_the_guide_at_that_sigma(scale):
    encoder = MLP(6, 8, 2 * 3)
    torch.nn.init.zeros_(encoder[-1].weight)  # sigma is then exactly the bias's image
    guide = DiagonalGaussianGuide(encoder, 3, scale=scale, init_scale=0.1)
    q = guide.posterior(torch.rand(4, 6)).base_dist
    assert torch.allclose(q.scale, torch.full((4, 3), 0.1), rtol=1e-5)
    loc_bias = encoder[-1].bias[:3]
    assert torch.equal(q.loc, loc_bias.expand(4, 3))  # the loc half is untouched


def test_init_scale_none_keeps_the_encoders_init():
    torch.manual_seed(0)
    a = MLP(6, 8, 6)
    torch.manual_seed(0)
    b = MLP(6, 8, 6)
    DiagonalGaussianGuide(b, 3, scale="exp", init_scale=None)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("encoder,sigma", [(MLP(6, 8, 5), 0.1), (MLP(6, 8, 6), -1.0),
                                           (MLP(6, 8, 6), float("nan"))])
def test_bad_init_scale_is_a_clear_error(encoder, sigma):
    with pytest.raises(PyroVAEError, match="scale"):
        DiagonalGaussianGuide(encoder, 3, scale="exp", init_scale=sigma)
