"""Shapes, gradients and sizes of the convolutional encoder and decoder.

    [K, B, size*size] -> encoder -> [K, B, out_dim];  [K, B, L] -> decoder -> [K, B, size*size]
"""
import pytest
import torch

from pyrovae.conv_nets import ConvDecoder, ConvEncoder, ConvNetError, conv_channels

torch.set_num_threads(1)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_channels_per_size():
    assert conv_channels(64) == (32, 32, 64, 64)
    assert conv_channels(32) == (32, 64, 64)
    assert conv_channels(128) == (32, 32, 32, 64, 64)
    for bad in (48, 4, 0, 63.9):
        with pytest.raises(ConvNetError, match="power of two"):
            conv_channels(bad)


@pytest.mark.parametrize("size", [64, 32])
def test_shapes_with_leading_dims(size):
    enc, dec = ConvEncoder(size, 20), ConvDecoder(10, size)
    x = torch.rand(3, 5, size * size).round()
    h = enc(x)
    assert h.shape == (3, 5, 20)
    assert enc(x[0, 0]).shape == (20,)  # no leading dim at all
    assert torch.allclose(enc(x.reshape(15, -1)).reshape(3, 5, 20), h, atol=1e-6)
    z = torch.randn(7, 3, 5, 10)
    assert dec(z).shape == (7, 3, 5, size * size)
    assert dec(z[0, 0, 0]).shape == (size * size,)


def test_feature_map_is_64x4x4_at_both_sizes():
    for size in (64, 32):
        enc = ConvEncoder(size, 4)
        assert enc.convs(torch.zeros(2, 1, size, size)).shape == (2, 64, 4, 4)


def test_gradients_reach_every_parameter():
    enc, dec = ConvEncoder(64, 20), ConvDecoder(10, 64)
    x = torch.rand(2, 3, 64 * 64).round()
    out = enc(x)
    loc, raw = out[..., :10], out[..., 10:]
    z = loc + torch.nn.functional.softplus(raw) * torch.randn_like(loc)
    logits = dec(z)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x)
    loss.backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_counts():
    """Counted by hand: conv k*k*in*out + out, dense in*out + out."""
    enc = 1 * 32 * 16 + 32 + 32 * 32 * 16 + 32 + 32 * 64 * 16 + 64 + 64 * 64 * 16 + 64 \
        + 1024 * 256 + 256 + 256 * 20 + 20
    dec = 10 * 256 + 256 + 256 * 1024 + 1024 + 64 * 64 * 16 + 64 + 64 * 32 * 16 + 32 \
        + 32 * 32 * 16 + 32 + 32 * 1 * 16 + 1
    assert n_params(ConvEncoder(64, 20)) == enc == 382_932
    assert n_params(ConvDecoder(10, 64)) == dec == 381_313
    # 32x32 drops the first conv (and its mirror): 32 and 64 channels at the first layer.
    assert n_params(ConvEncoder(32, 20)) == enc - (544 + 16_416) + (32 * 16 + 32)
    assert n_params(ConvDecoder(10, 32)) == dec - (16_416 + 513) + (32 * 16 + 1)


def test_output_bias_init_and_errors():
    dec = ConvDecoder(4, 32)
    dec.init_output_bias_(torch.full((32 * 32,), 0.1))
    assert dec.deconvs[-1].bias.item() == pytest.approx(torch.logit(torch.tensor(0.1)).item())
    with pytest.raises(ConvNetError, match=r"\[\.\.\., 1024\]"):
        ConvEncoder(32, 8)(torch.zeros(2, 64 * 64))
    with pytest.raises(ConvNetError, match=r"\[\.\.\., 4\]"):
        dec(torch.zeros(2, 5))
    assert issubclass(ConvNetError, ValueError)
