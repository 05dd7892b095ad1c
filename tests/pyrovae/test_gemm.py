"""The evaluator's CPU GEMM choice: oneDNN's linear computes what nn.Linear computes, is used
only where it may be (no autograd, float32, large), and leaves the bounds unchanged."""
import pytest
import torch

import pyrovae.gemm as gemm
from pyrovae import ModelConfig, PyroVAEError, build_pair, evaluate, load_dataset
from pyrovae import log_likelihood_bound as pyrovae_bound

pytestmark = pytest.mark.skipif(not gemm._available(), reason="torch built without oneDNN")


@pytest.fixture
def onednn(monkeypatch):
    """Force oneDNN and count the calls that reach it."""
    calls = []
    real = gemm._onednn_linear

    def counted(*args):
        calls.append(args[0].numel() // args[0].shape[-1])  # rows
        return real(*args)

    monkeypatch.setattr(gemm, "_onednn_linear", counted)
    monkeypatch.setattr(gemm, "_choice", "onednn")
    return calls


@pytest.mark.parametrize("shape", [(512, 40), (3, 200, 40)])
@pytest.mark.parametrize("bias", [True, False])
def test_same_result_as_nn_linear(onednn, shape, bias):
    net = torch.nn.Sequential(torch.nn.Linear(40, 30, bias=bias), torch.nn.Tanh())
    x = torch.randn(shape)
    with torch.no_grad():
        want = net(x)
        with gemm.fast_linear(net):
            got = net(x)
        assert "forward" not in vars(net[0])  # restored
    assert len(onednn) == 1 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_strided_weight(onednn):
    lin = torch.nn.Linear(40, 30)
    lin.weight = torch.nn.Parameter(torch.randn(40, 30).t())  # tied/transposed: not contiguous
    x = torch.randn(512, 40)
    with torch.no_grad():
        want = lin(x)
        with gemm.fast_linear(lin):
            got = lin(x)
    assert len(onednn) == 1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_autograd_small_and_other_dtypes_are_left_to_torch(onednn):
    lin = torch.nn.Linear(40, 30)
    x = torch.randn(512, 40)
    with gemm.fast_linear(lin):
        lin(x).sum().backward()  # autograd on: torch's own kernel, gradients flow
        with torch.no_grad():
            lin(x[:8])  # too few rows
    with torch.no_grad(), gemm.fast_linear(lin.double()):
        lin(x.double())  # not float32
    assert lin.weight.grad is not None and onednn == []


def test_weight_change_is_seen(onednn):
    lin = torch.nn.Linear(40, 30)
    x = torch.randn(512, 40)
    with torch.no_grad(), gemm.fast_linear(lin):
        first = lin(x)
        lin.weight.mul_(2)  # in place: a new version, packed again
        second = lin(x)
    torch.testing.assert_close(second - lin.bias, 2 * (first - lin.bias), rtol=1e-4, atol=1e-4)


def test_fused_optimizer_step_between_evaluations_is_seen(onednn):
    # a fused Adam changes weights in place without bumping their version: a packed copy
    # kept from one evaluation to the next would evaluate the old weights
    lin = torch.nn.Linear(40, 30)
    opt = torch.optim.Adam(lin.parameters(), lr=0.1, fused=True)
    x = torch.randn(512, 40)
    for _ in range(2):
        with torch.no_grad(), gemm.fast_linear(lin):
            got = lin(x)
        with torch.no_grad():
            torch.testing.assert_close(got, torch.nn.functional.linear(x, lin.weight, lin.bias),
                                       rtol=1e-5, atol=1e-5)
        lin(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    assert len(onednn) == 2


def test_bounds_unchanged_and_decoder_redirected(onednn, monkeypatch):
    data = load_dataset("mnist-sample")
    torch.manual_seed(0)
    model, guide = build_pair(ModelConfig(), x_dim=data.x_dim, num_classes=data.num_classes)
    means = {}
    for choice in ("mkl", "onednn"):
        monkeypatch.setattr(gemm, "_choice", choice)
        torch.manual_seed(1)
        report = evaluate(model, guide, data.test_x[:16], num_particles=(1, 50), progress=False)
        means[choice] = [b["mean"] for b in report["bounds"]]
    assert means["mkl"] == pytest.approx(means["onednn"], rel=1e-6)
    assert any(rows >= 16 * 50 for rows in onednn)  # the decoder's big GEMMs went there


def test_pyro_example_layout_is_redirected_too(onednn, monkeypatch, load_script):
    # Pyro's examples/vae/vae.py layout: model and guide are methods of one nn.Module
    vae = load_script("pyro_example_pair").ExampleVAE(z_dim=4, hidden=32)
    x = (torch.rand(16, 784) < 0.3).float()
    means = {}
    for choice in ("mkl", "onednn"):
        monkeypatch.setattr(gemm, "_choice", choice)
        torch.manual_seed(1)
        means[choice] = float(pyrovae_bound(vae.model, vae.guide, x, num_particles=50).mean())
    assert means["mkl"] == pytest.approx(means["onednn"], rel=1e-6)
    assert any(rows >= 16 * 50 for rows in onednn)
    assert not any("forward" in vars(m) for m in vae.modules())  # restored


def test_choice_is_measured_once_and_can_be_fixed(monkeypatch):
    monkeypatch.setattr(gemm, "_choice", None)
    assert gemm.cpu_gemm() in ("mkl", "onednn")
    gemm.set_cpu_gemm("mkl")
    assert gemm.cpu_gemm() == "mkl"
    with pytest.raises(ValueError, match="'mkl', 'onednn' or 'auto'"):
        gemm.set_cpu_gemm("blas")


def test_a_onednn_that_fails_means_mkl(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(gemm, "_choice", None)
    monkeypatch.setattr(gemm, "_measure", broken)
    assert gemm.cpu_gemm() == "mkl"


BF16 = gemm.bf16_supported()


def test_precision_is_checked_and_the_flag_restored(monkeypatch):
    flags = torch.backends.mkldnn.matmul
    with pytest.raises(PyroVAEError, match="precision must be 'float32' or 'bfloat16'"):
        gemm.check_precision("fp16", "cpu")
    with pytest.raises(PyroVAEError, match="on cuda evaluate in float32"):
        gemm.check_precision("bfloat16", "cuda")
    monkeypatch.setattr(gemm, "bf16_supported", lambda: False)
    with pytest.raises(PyroVAEError, match="needs a CPU with bf16 instructions"):
        gemm.check_precision("bfloat16", "cpu")
    before = flags.fp32_precision
    flags.fp32_precision = "bf16"  # a process that set bf16 itself
    try:
        with gemm.gemm_precision("float32"):
            assert flags.fp32_precision == "ieee"  # float32 is what the report will say
        assert flags.fp32_precision == "bf16"
    finally:
        flags.fp32_precision = before


@pytest.mark.skipif(not BF16, reason="this CPU has no bf16 instructions")
@pytest.mark.parametrize("choice", ["mkl", "onednn"])
def test_bfloat16_rounds_gemm_inputs_only(monkeypatch, choice):
    monkeypatch.setattr(gemm, "_choice", choice)
    net = torch.nn.Linear(400, 784)
    x = torch.randn(2048, 400)
    with torch.no_grad():
        exact = net(x)
        with gemm.fast_linear(net), gemm.gemm_precision("bfloat16"):
            fast = net(x)
        want = torch.nn.functional.linear(x.bfloat16().float(), net.weight.bfloat16().float(),
                                          net.bias)  # bf16 inputs, float32 sums
    assert not torch.equal(fast, exact)  # the precision is in effect
    torch.testing.assert_close(fast, want, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not BF16, reason="this CPU has no bf16 instructions")
def test_bfloat16_bound_is_close_and_the_report_says_so(monkeypatch):
    data = load_dataset("mnist-sample")
    torch.manual_seed(0)
    model, guide = build_pair(ModelConfig(), x_dim=data.x_dim, num_classes=data.num_classes)
    reports = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(1)  # the same particles
        reports[precision] = evaluate(model, guide, data.test_x[:16], num_particles=(1, 50),
                                      progress=False, precision=precision)
    a, b = (torch.tensor(reports[p]["per_datapoint"]["iwae"]) for p in reports)
    assert 0 < (a - b).abs().max() < 0.05  # nats per image, of about 540 here
    assert reports["bfloat16"]["precision"] == "bfloat16"
    assert reports["float32"]["precision"] == "float32"
