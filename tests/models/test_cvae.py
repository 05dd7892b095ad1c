"""Conditional VAE: labels reach encoder and decoder, bad labels are clear errors, and a
short training learns class-conditional likelihoods and samples."""
import pytest
import torch

from pyrovae.cli import main
from pyrovae.build import build_pair
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.errors import PyroVAEError
from pyrovae.evaluation.bounds import log_likelihood_bound
from pyrovae.guides.gaussian import DiagonalGaussianGuide
from pyrovae.plots.readers import decode, prior_draws
from pyrovae.models.cvae import CVAE


def cvae_pair(latent_dim=4, hidden=32):
    return build_pair(ModelConfig(model="cvae", latent_dim=latent_dim, hidden=hidden),
                      x_dim=784, num_classes=10)


def test_default_guide_of_a_cvae_reads_the_label():
    model, guide = cvae_pair()
    assert isinstance(model, CVAE) and isinstance(guide, DiagonalGaussianGuide) and guide.conditional
    x = torch.bernoulli(torch.full((6, 784), 0.3))
    a = guide.posterior(x, torch.zeros(6, dtype=torch.long)).mean
    b = guide.posterior(x, torch.ones(6, dtype=torch.long)).mean
    assert not torch.allclose(a, b)
    z = torch.randn(6, 4)
    assert not torch.allclose(decode(model, z, torch.zeros(6, dtype=torch.long)),
                              decode(model, z, torch.ones(6, dtype=torch.long)))


@pytest.mark.parametrize("y, message", [
    (None, "needs class labels y"),
    (torch.arange(4), "got 4 labels for 5 images"),
    (torch.tensor([0, 1, 2, 3, 10]), r"labels must lie in 0..9; got range \[0, 10\]"),
    (torch.tensor([0, -1, 2, 3, 4]), "labels must lie in 0..9"),
    (torch.zeros(5), "1-D integer tensor"),
])
def test_bad_labels_are_clear_errors(y, message):
    model, guide = cvae_pair()
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    for half in (model, guide):
        with pytest.raises(PyroVAEError, match=message):
            half(x, y)


@pytest.fixture(scope="module")
def trained(sample_data):
    from pyrovae.train.fit import fit

    torch.manual_seed(0)
    # a small z leaves the class to y: with a wide z a briefly trained CVAE decoder still
    # reads the class mostly from z (samples then barely follow their label)
    model, guide = cvae_pair(latent_dim=2, hidden=200)
    fit(model, guide, sample_data, TrainConfig(epochs=5, batch_size=100, lr=2e-3, seed=0),
        progress=False)
    return model.eval(), guide.eval()


def test_true_label_is_more_likely_than_a_wrong_one(trained, sample_data):
    model, guide = trained
    x, y = sample_data.test_x[::5], sample_data.test_y[::5]  # 200 digits, 20 per class
    torch.manual_seed(1)
    right = log_likelihood_bound(model, guide, x, y, num_particles=20)
    wrong = log_likelihood_bound(model, guide, x, (y + 1 + torch.randint(0, 9, y.shape)) % 10,
                                 num_particles=20)
    assert right.mean() > wrong.mean() + 20  # nats; measured about 57
    assert (right > wrong).float().mean() > 0.9  # measured 0.96


def test_samples_follow_their_label(trained, sample_data):
    """Samples drawn with label c lie nearest the mean test digit of class c: for the
    class's average sample, and for most single samples (chance: 1 in 10)."""
    model, _ = trained
    z = prior_draws(model, 64, torch.zeros(64, dtype=torch.long))
    class_means = torch.stack([sample_data.test_x[sample_data.test_y == c].mean(0)
                               for c in range(10)])
    samples = [decode(model, z, torch.full((64,), c)) for c in range(10)]
    mean_hits = sum(int(torch.cdist(s.mean(0, keepdim=True), class_means).argmin() == c)
                    for c, s in enumerate(samples))
    accuracy = sum(float((torch.cdist(s, class_means).argmin(1) == c).float().mean())
                   for c, s in enumerate(samples)) / 10
    assert mean_hits >= 8 and accuracy > 0.5  # measured 9 and 0.71-0.86 over three seeds
    assert (samples[0] - samples[1]).abs().mean() > 0.05


# --- command line ------------------------------------------------------------------

@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cvae"
    assert main(["train", "--model", "cvae", "--run-dir", str(run_dir), "--epochs", "1",
                 "--latent-dim", "4", "--hidden", "32", "--no-progress"]) == 0
    assert (run_dir / "class_grid.png").stat().st_size > 0
    return run_dir


def png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_sample_label_and_grid(cvae_run, tmp_path, capsys):
    assert main(["sample", str(cvae_run), "--label", "3", "--out", str(tmp_path / "l3.png")]) == 0
    assert png_size(tmp_path / "l3.png")[0] > 100
    assert main(["sample", str(cvae_run), "--grid", "--out", str(tmp_path / "g.png")]) == 0
    # 12 tiles of 0.3 in + 1.4 in of row labels; 10 rows + 0.35 in title, at 100 dpi
    assert png_size(tmp_path / "g.png") == (500, 335)
    assert main(["sample", str(cvae_run), "--grid", "--per-row", "16",
                 "--out", str(tmp_path / "g16.png")]) == 0
    assert png_size(tmp_path / "g16.png") == (620, 335)


@pytest.mark.parametrize("argv, message", [
    (["--label", "12"], r"labels must lie in 0..9; got range \[12, 12\]"),
    (["--label", "-1"], "labels must lie in 0..9"),
])
def test_bad_label_on_the_command_line(cvae_run, tmp_path, capsys, argv, message):
    import re

    assert main(["sample", str(cvae_run), *argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: ") and err.count("\n") == 1 and re.search(message, err)


def test_label_on_an_unconditional_run_is_an_error(tmp_path, capsys):
    run_dir = tmp_path / "vae"
    assert main(["train", "--run-dir", str(run_dir), "--epochs", "1", "--latent-dim", "2",
                 "--hidden", "16", "--no-progress"]) == 0
    capsys.readouterr()
    for flag in (["--label", "3"], ["--grid"]):
        assert main(["sample", str(run_dir), *flag]) == 2
        assert "need a conditional model (train one with --model cvae)" in capsys.readouterr().err
