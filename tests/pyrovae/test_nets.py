import torch

from pyrovae.nets import MLP, init_output_bias_


def test_init_output_bias_predicts_the_marginal_pixel_frequency():
    net = MLP(5, 16, 4)
    mean = torch.tensor([0.0, 0.25, 0.5, 1.0])
    init_output_bias_(net, mean, eps=1e-3)
    last = net[-1]
    p = torch.sigmoid(last.bias)
    assert torch.allclose(p, torch.tensor([1e-3, 0.25, 0.5, 1 - 1e-3]), atol=1e-6)
    # with zeroed output weights the decoder's mean image is exactly the clamped marginal
    torch.nn.init.zeros_(last.weight)
    assert torch.allclose(torch.sigmoid(net(torch.randn(3, 5))), p.expand(3, 4))
