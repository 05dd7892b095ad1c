import json

import pytest
import torch

from pyrovae import checkpoint
from pyrovae.build import build_pair
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.data import ImageData
from pyrovae.errors import TrainingDiverged
from pyrovae.runs import resolve_device
from pyrovae.train.fit import fit


def small(data: ImageData, n_train=512, n_test=200) -> ImageData:
    return ImageData("small", data.train_x[:: len(data.train_x) // n_train][:n_train],
                     data.train_y[:: len(data.train_x) // n_train][:n_train],
                     data.test_x[:n_test], data.test_y[:n_test])


def pair(latent_dim=8, hidden=64):
    return build_pair(ModelConfig(latent_dim=latent_dim, hidden=hidden), x_dim=784, num_classes=10)


def test_short_training_improves_test_elbo(sample_data):
    from pyrovae.evaluation.bounds import elbo_terms

    model, guide = pair()
    untrained = float(elbo_terms(model, guide, sample_data.test_x).get("elbo").mean())
    hist = fit(model, guide, sample_data, TrainConfig(epochs=3, batch_size=100, seed=0),
               progress=False)
    assert untrained < -400  # about -545 nats: every pixel at probability 1/2
    assert hist[0]["test_elbo"] < hist[-1]["test_elbo"]
    assert hist[-1]["test_elbo"] > untrained + 300  # a clear margin, reached by every seed
    assert hist[-1]["test_elbo"] == pytest.approx(hist[-1]["test_recon"] - hist[-1]["test_kl"])


def test_same_seed_same_metrics(sample_data):
    data = small(sample_data)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # network init
        model, guide = pair()
        runs.append(fit(model, guide, data, TrainConfig(epochs=2, batch_size=64, seed=7),
                        progress=False))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in runs]
    assert strip[0] == strip[1]


def test_resume_continues_exactly(sample_data, tmp_path):
    data = small(sample_data)
    cfg = TrainConfig(epochs=3, batch_size=64, seed=1)
    torch.manual_seed(0)
    model_a, guide_a = pair()
    fit(model_a, guide_a, data, cfg, run_dir=tmp_path / "a", progress=False)

    torch.manual_seed(0)
    model_b, guide_b = pair()
    fit(model_b, guide_b, data, TrainConfig(epochs=1, batch_size=64, seed=1),
        run_dir=tmp_path / "b", progress=False)
    # a fresh process: new modules with other weights, then resume from disk
    torch.manual_seed(99)
    model_c, guide_c = pair()
    hist = fit(model_c, guide_c, data, cfg, run_dir=tmp_path / "b", resume=True, progress=False)

    for p, q in zip(list(model_a.parameters()) + list(guide_a.parameters()),
                    list(model_c.parameters()) + list(guide_c.parameters())):
        assert torch.equal(p, q)
    lines = [json.loads(s) for s in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] == [r["epoch"] for r in hist]
    ref = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_elbo"] for r in lines] == [r["test_elbo"] for r in ref]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(sample_data, tmp_path):
    from pyrovae.infer.objectives import make_objective

    data = small(sample_data)
    model, guide = pair()
    fit(model, guide, data, TrainConfig(epochs=1, batch_size=64), run_dir=tmp_path,
        progress=False)
    good = checkpoint.load(tmp_path / "checkpoint.pt")

    class Poisoned:  # an objective whose loss is NaN: fit takes objects, not only names
        inner = make_objective("elbo")

        def differentiable_loss(self, *args):
            return self.inner.differentiable_loss(*args) * float("nan")

    with pytest.raises(TrainingDiverged, match=r"became nan during epoch 2, detected at step 1 "
                       r"\(non-finite log-density at sites \[.*\]; non-finite parameters .*"
                       r"end of epoch 1"):
        fit(model, guide, data, TrainConfig(epochs=2, batch_size=64, log_every=1),
            run_dir=tmp_path, resume=True, progress=False, objective=Poisoned())
    after = checkpoint.load(tmp_path / "checkpoint.pt")
    assert after["epoch"] == 1
    assert all(torch.equal(good["model"][k], after["model"][k]) for k in good["model"])


def test_device_resolution():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="no CUDA device"):
            resolve_device("cuda")
