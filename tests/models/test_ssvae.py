"""The semi-supervised VAE (M2): labels summed, the classification loss as a handler, the
label split, the interleaved batches, and the command line end to end."""
import json
import math

import pytest
import torch

from pyrovae import (ModelConfig, PyroVAEError, build_pair, classify_labels, elbo_terms,
                     TrainConfig, fit, label_accuracy, make_objective, with_labels)
from pyrovae.train.batches import SemiSupervisedBatches
from pyrovae.distributed import World


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return build_pair(ModelConfig(model="ssvae", guide="ssvae", latent_dim=3, hidden=16),
                      x_dim=784)


@pytest.fixture
def xy(sample_data):
    return torch.bernoulli(sample_data.train_x[:12]), sample_data.train_y[:12]


def test_the_classification_handler_adds_alpha_times_minus_log_q(pair, xy):
    model, guide = pair
    x, y = xy
    enum = make_objective("enum")
    torch.manual_seed(1)
    plain = enum.differentiable_loss(model, guide, x, y)
    torch.manual_seed(1)
    with classify_labels(3.0):
        tilted = enum.differentiable_loss(model, guide, x, y)
    log_q = torch.log_softmax(guide.classify(x), -1).gather(1, y[:, None]).sum()
    assert torch.allclose(tilted - plain, -3.0 * log_q, rtol=1e-5)
    torch.manual_seed(1)
    unlabelled = enum.differentiable_loss(model, guide, x)
    torch.manual_seed(1)
    with classify_labels(3.0):  # unlabelled batches have no label: nothing changes
        assert torch.allclose(enum.differentiable_loss(model, guide, x), unlabelled)
    with pytest.raises(PyroVAEError, match="alpha must be finite"):
        classify_labels(-1.0)


def test_enumerated_training_loss_matches_the_evaluators_sum_over_y(pair, xy):
    model, guide = pair
    x, _ = xy
    torch.manual_seed(2)
    loss = make_objective("enum:400").loss(model, guide, x)
    torch.manual_seed(3)
    elbo = float(elbo_terms(model, guide, x, num_particles=400)["elbo"].sum())
    assert abs(loss + elbo) < 0.005 * abs(elbo)  # both sum y out exactly


def test_label_split_is_stratified_seeded_and_batches_interleave(sample_data):
    data = with_labels(sample_data, 53, seed=4)
    counts = torch.bincount(data.train_y[data.labelled], minlength=10)
    assert counts.tolist() == [6, 6, 6, 5, 5, 5, 5, 5, 5, 5]
    assert torch.equal(data.labelled, with_labels(sample_data, 53, seed=4).labelled)
    assert not torch.equal(data.labelled, with_labels(sample_data, 53, seed=5).labelled)
    batches = SemiSupervisedBatches(data, batch_size=500, world=World())
    gen = torch.Generator().manual_seed(0)
    perm = batches.order(gen)
    seen_u, seen_l, kinds = [], [], []
    for i in range(batches.steps):
        args = batches.batch(perm, i, gen)
        kinds.append(len(args))
        (seen_l if len(args) == 2 else seen_u).append(len(args[0]))
    assert sum(seen_l) == 53 and sum(seen_u) == len(sample_data.train_x) - 53
    assert kinds.count(2) == 1 and kinds.index(2) == 0  # one labelled batch, first of 9
    with pytest.raises(PyroVAEError, match="--labels must be an integer in 1..3999"):
        with_labels(sample_data, 4000)


def test_label_passes_cycle_the_labelled_set_in_fresh_orders(sample_data):
    data = with_labels(sample_data, 50, seed=0)
    batches = SemiSupervisedBatches(data, batch_size=20, world=World(), label_passes=3)
    gen = torch.Generator().manual_seed(0)
    perm = batches.order(gen)
    assert batches.steps == math.ceil(3950 / 20) + 3 * 3  # 3 passes of 3 labelled batches
    assert batches.seen == 3950 + 3 * 50  # what the epoch's mean training loss divides by
    labelled, positions = [], []
    for i in range(batches.steps):
        args = batches.batch(perm, i, gen)
        if len(args) == 2:
            positions.append(i)
            labelled.append(args[1])
    sizes = [len(y) for y in labelled]
    assert sizes == [20, 20, 10] * 3  # each pass covers the 50 labels once
    per_pass = [torch.sort(torch.cat(labelled[3 * p:3 * p + 3])).values for p in range(3)]
    assert all(torch.equal(per_pass[0], other) for other in per_pass[1:])
    assert not torch.equal(torch.cat(labelled[:3]), torch.cat(labelled[3:6]))  # reshuffled
    gaps = torch.diff(torch.tensor(positions))
    assert gaps.min() >= 20 and gaps.max() <= 25  # spread evenly among 198 unlabelled
    with pytest.raises(PyroVAEError, match="label_passes"):
        TrainConfig(label_passes=0)


def test_label_passes_without_a_label_split_is_refused(sample_data):
    model, guide = build_pair(ModelConfig(latent_dim=2, hidden=8), x_dim=784)
    with pytest.raises(PyroVAEError, match="give --labels N"):
        fit(model, guide, sample_data, TrainConfig(epochs=1, label_passes=3), progress=False)


def test_command_line_trains_evaluates_and_reports_accuracy(cli, tmp_path):
    run = tmp_path / "ss"
    code, out, err = cli("train", "--model", "ssvae", "--guide", "ssvae", "--labels", "100",
                         "--objective", "enum", "--alpha", "400", "--epochs", "2",
                         "--latent-dim", "8", "--hidden", "64", "--run-dir", run,
                         "--no-progress")
    assert code == 0, err
    assert len(json.loads((run / "labels.json").read_text())["labelled"]) == 100
    assert (run / "style_transfer.png").is_file() and (run / "class_grid.png").is_file()
    code, out, _ = cli("evaluate", run, "--num-particles", "10", "--limit", "200",
                       "--no-progress")
    report = json.loads((run / "eval.json").read_text())
    assert code == 0 and "test accuracy of q(y|x)" in out
    assert report["accuracy"]["accuracy"] > 0.25  # chance is 0.1
    code, _, err = cli("train", "--labels", "100", "--run-dir", tmp_path / "v", "--epochs", "1")
    assert code == 2 and "--labels needs a semi-supervised model" in err
    code, _, err = cli("train", "--model", "ssvae", "--run-dir", tmp_path / "w")
    assert code == 2 and "--model ssvae needs --guide ssvae" in err


def test_accuracy_needs_an_enumerated_site(sample_data):
    model, guide = build_pair(ModelConfig(latent_dim=2, hidden=8), x_dim=784)
    with pytest.raises(PyroVAEError, match="one discrete site marked"):
        label_accuracy(guide, sample_data.test_x[:4], sample_data.test_y[:4])
