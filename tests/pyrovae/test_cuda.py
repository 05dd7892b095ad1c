"""The same pair, trained and evaluated on a GPU (skipped where torch sees none; run by
``scripts/gpu_check.sh`` on a machine with one)."""
import pytest
import torch

import pyrovae

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture
def gpu_data():
    return pyrovae.load_dataset("mnist-sample", device="cuda")


def test_fit_evaluate_and_ais_on_the_gpu(gpu_data, tmp_path):
    model, guide = pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=8, hidden=64), x_dim=784)
    hist = pyrovae.fit(model, guide, gpu_data, pyrovae.TrainConfig(epochs=2), run_dir=tmp_path,
                       progress=False)
    assert hist[-1]["test_elbo"] > hist[0]["test_elbo"]
    assert next(model.parameters()).is_cuda
    x = gpu_data.test_x[:64]
    report = pyrovae.evaluate(model, guide, x, num_particles=(1, 100), progress=False)
    assert report["bounds"][1]["mean"] > report["bounds"][0]["mean"]
    est = pyrovae.ais_log_likelihood(model, guide, x, num_steps=20, num_chains=4)
    assert est.log_px.is_cuda and torch.isfinite(est.log_px).all()


def test_resume_on_the_gpu_is_exact(gpu_data, tmp_path):
    cfg = pyrovae.TrainConfig(epochs=2, batch_size=256)
    torch.manual_seed(0)
    a = pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=4, hidden=32), x_dim=784)
    pyrovae.fit(*a, gpu_data, cfg, run_dir=tmp_path / "a", progress=False)
    torch.manual_seed(0)
    b = pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=4, hidden=32), x_dim=784)
    pyrovae.fit(*b, gpu_data, pyrovae.TrainConfig(epochs=1, batch_size=256),
                run_dir=tmp_path / "b", progress=False)
    pyrovae.fit(*b, gpu_data, cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    for p, q in zip(a[0].parameters(), b[0].parameters()):
        assert torch.equal(p, q)
