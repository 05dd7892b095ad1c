"""Hostile inputs: every one is a single line and exit status 2 (CLI), or a PyroVAEError
(API) — never a traceback from deep inside torch or Pyro, never a silent wrong number."""
import gzip
import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

import pyrovae
from pyrovae import PyroVAEError

TINY = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run(trained):
    return trained(*TINY)


def idx(path, array):
    """Write an IDX file (what the MNIST readers read)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def idx_folder(root, *, n_train=20, n_labels=20, side=28):
    root.mkdir(parents=True, exist_ok=True)
    idx(root / "train-images-idx3-ubyte.gz", np.zeros((n_train, side, side)))
    idx(root / "train-labels-idx1-ubyte.gz", np.zeros(n_labels))
    idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((10, side, side)))
    idx(root / "t10k-labels-idx1-ubyte.gz", np.zeros(10))
    return root


TRAIN_FLAGS = [  # (flags after `train`, what the line must say)
    (["--epochs", "-1"], r"epochs \(--epochs\) = -1 .*integer >= 1"),
    (["--epochs", "0"], r"--epochs\) = 0"),
    (["--epochs", "two"], r"argument --epochs: invalid int value"),
    (["--batch-size", "0"], r"--batch-size\) = 0 .*integer >= 1"),
    (["--lr", "nan"], r"--lr\) = nan .*finite number > 0"),
    (["--lr", "-0.1"], r"--lr\) = -0.1"),
    (["--lr", "0"], r"--lr\) = 0.0"),
    (["--latent-dim", "0"], r"--latent-dim\) = 0"),
    (["--hidden", "-5"], r"--hidden\) = -5"),
    (["--beta", "-1"], r"--beta\) = -1.0 .*>= 0"),
    (["--beta", "inf"], r"--beta\) = inf"),
    (["--objective", "nosuch"], r"unknown objective 'nosuch'"),
    (["--objective", "iwae:0"], r"iwae:0.*integer K >= 1"),
    (["--objective", "renyi:1"], r"ALPHA = 1 is elbo"),
    (["--model", "gan"], r"--model\) = 'gan' .*one of cvae, ssvae, vae, vqvae"),
    (["--prior", "nope"], r"--prior\) = 'nope'"),
    (["--guide", "nope"], r"--guide\) = 'nope'"),
    (["--likelihood", "poisson"], r"--likelihood\) = 'poisson' .*bernoulli, gaussian, logistic"),
    (["--activation", "sigmoidish"], r"--activation\) = 'sigmoidish'"),
    (["--scale", "cube"], r"--scale\) = 'cube' .*exp"),
    (["--init-scale", "-1"], r"--init-scale\) = -1.0"),
    (["--output-bias", "mean"], r"--output-bias\) = 'mean'"),
    (["--beta-schedule", "zigzag"], r"--beta-schedule\) = 'zigzag'"),
    (["--beta-schedule", "cyclical", "--cycles", "0"], r"--cycles\) = 0"),
    (["--warmup-epochs", "-1"], r"--warmup-epochs\) = -1.0"),
    (["--device", "tpu"], r"--device\) = 'tpu' .*auto, cpu, cuda"),
    (["--engine", "fast"], r"--engine\) = 'fast' .*eager, jit"),
    (["--seed", "-1"], r"--seed\) = -1"),
    (["--log-every", "0"], r"--log-every\) = 0"),
    (["--eval-batch-size", "0"], r"--eval-batch-size\) = 0"),
    (["--num-components", "0"], r"--num-components\) = 0"),
    (["--flow-layers", "0"], r"--flow-layers\) = 0"),
    (["--dataset", "cifar"], r"unknown dataset 'cifar'; valid datasets:"),
    (["--dataset", "fashion-mnist", "--data-dir", "/nonexistent"], r"not found; looked in"),
    (["--dataset", "mnist"], r"needs --data-dir"),
    (["--model", "vqvae", "--num-codes", "1"], r"--num-codes\) = 1 .*>= 2"),
    (["--model", "vqvae", "--decay", "1.5"], r"--decay\) = 1.5 .*\[0, 1\)"),
    (["--model", "vqvae", "--quantizer", "kmeans"], r"--quantizer\) = 'kmeans'"),
    (["--out", "x"], r"unrecognized arguments: --out"),  # abbreviations are off
    (["--resume"], r"no checkpoint"),
]
if not torch.cuda.is_available():
    TRAIN_FLAGS.append((["--device", "cuda"], r"torch sees no CUDA device"))


def one_line_error(code, err, pattern):
    import re

    assert code == 2, err
    assert err.startswith("pyrovae: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("flags, pattern", TRAIN_FLAGS)
def test_train_flags(cli, tmp_path, flags, pattern):
    before = set(tmp_path.iterdir())
    one_line_error(*cli("train", "--run-dir", tmp_path / "r", *flags)[::2], pattern)
    assert set(tmp_path.iterdir()) <= before | {tmp_path / ".r.lock"}  # nothing written


def make_path(kind, tmp_path, run):
    if kind == "file":
        (tmp_path / "f").write_text("x")
        return ["train", "--run-dir", tmp_path / "f", *TINY], r"is a file, not a directory"
    if kind == "unwritable":
        return ["train", "--run-dir", "/proc/self/pyrovae-run", *TINY], r"cannot (create|lock)"
    if kind == "existing":
        return ["train", "--run-dir", run, *TINY], r"already exists; pass --resume"
    if kind == "label-count":
        d = idx_folder(tmp_path / "d", n_labels=19)
        return (["train", "--dataset", "mnist", "--data-dir", d, "--run-dir", tmp_path / "r",
                 *TINY], r"20 train images but 19 labels")
    if kind == "image-shape":
        d = idx_folder(tmp_path / "d", side=32)
        return (["train", "--dataset", "mnist", "--data-dir", d, "--run-dir", tmp_path / "r",
                 *TINY], r"expected 28x28 images, got 1024 pixels")
    if kind == "truncated-idx":
        d = idx_folder(tmp_path / "d")
        raw = gzip.decompress((d / "train-images-idx3-ubyte.gz").read_bytes())
        (d / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:100]))
        return (["train", "--dataset", "mnist", "--data-dir", d, "--run-dir", tmp_path / "r",
                 *TINY], r"is truncated")
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    if kind == "truncated-config":
        (copy / "config.json").write_text((run / "config.json").read_text()[:40])
        return ["evaluate", copy, "--num-particles", "2"], r"config.json is not valid JSON"
    if kind == "config-not-object":
        (copy / "config.json").write_text("[1, 2]")
        return ["sample", copy], r"holds a JSON list"
    if kind == "truncated-checkpoint":
        data = (run / "checkpoint.pt").read_bytes()
        (copy / "checkpoint.pt").write_bytes(data[: len(data) // 2])
        return ["evaluate", copy, "--num-particles", "2"], r"corrupt or truncated"
    if kind == "other-model":
        cfg = json.loads((run / "config.json").read_text())
        cfg["model"]["hidden"] = 9
        (copy / "config.json").write_text(json.dumps(cfg))
        return ["evaluate", copy, "--num-particles", "2"], r"does not match this run's config"
    if kind == "bad-config-value":
        cfg = json.loads((run / "config.json").read_text())
        cfg["train"]["lr"] = -1
        (copy / "config.json").write_text(json.dumps(cfg))
        return ["train", "--run-dir", copy, "--resume", "--epochs", "2"], r"--lr\) = -1"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "file", "unwritable", "existing", "label-count", "image-shape", "truncated-idx",
    "truncated-config", "config-not-object", "truncated-checkpoint", "other-model",
    "bad-config-value"])
def test_files_folders_and_data(cli, tmp_path, run, kind):
    argv, pattern = make_path(kind, tmp_path, run)
    one_line_error(*cli(*argv)[::2], pattern)


@pytest.mark.parametrize("argv, pattern", [
    (["evaluate", "RUN", "--num-particles", "0"], r"--num-particles: must be a positive"),
    (["evaluate", "RUN", "--limit", "0"], r"--limit: must be a positive"),
    (["evaluate", "RUN", "--batch-size", "-3"], r"--batch-size: must be a positive"),
    (["evaluate", "/nonexistent"], r"does not exist"),
    (["sample", "RUN", "--label", "3"], r"need a conditional model"),
    (["sample", "RUN", "--n", "0"], r"--n: must be a positive"),
    (["interpolate", "RUN", "--pairs", "1"], r"--pairs takes test-set indices in pairs"),
    (["interpolate", "RUN", "--pairs", "0", "5000"], r"each in 0\.\.999"),
    (["traverse", "RUN", "--index", "99999"], r"--index 99999 is outside the test set"),
    (["traverse", "RUN", "--span", "-1"], r"--span: must be a finite number > 0"),
    (["train-prior", "RUN"], r"not a VQ-VAE run"),
    (["nosuch"], r"invalid choice: 'nosuch'"),
])
def test_commands_on_a_run(cli, run, argv, pattern):
    one_line_error(*cli(*[run if a == "RUN" else a for a in argv])[::2], pattern)


def test_the_installed_command_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyrovae.cli", "train", "--lr", "nan",
                           "--run-dir", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("call, pattern", [
    (lambda: pyrovae.TrainConfig(epochs=1.5), r"epochs .* must be an integer"),
    (lambda: pyrovae.TrainConfig(objective="nosuch"), r"unknown objective"),
    (lambda: pyrovae.ModelConfig(latent_dim=True), r"latent_dim .* an integer"),
    (lambda: pyrovae.load_dataset("nope"), r"unknown dataset"),
    (lambda: pyrovae.load_dataset("mnist-sample", likelihood="poisson"), r"unknown likelihood"),
    (lambda: pyrovae.fit(*pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=2, hidden=4),
                                             x_dim=784), "data", pyrovae.TrainConfig()),
     r"fit takes a pyrovae dataset, a tensor x"),
    (lambda: pyrovae.fit(*pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=2, hidden=4),
                                             x_dim=784), torch.zeros(4, 784), {"epochs": 1}),
     r"fit needs a TrainConfig"),
    (lambda: pyrovae.fit(*pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=2, hidden=4),
                                             x_dim=784), (torch.zeros(4, 784), torch.zeros(3)),
                         pyrovae.TrainConfig()), r"4 training datapoints but 3 labels"),
    (lambda: pyrovae.log_likelihood_bound(*pyrovae.build_pair(pyrovae.ModelConfig(
        latent_dim=2, hidden=4), x_dim=784), torch.zeros(3, 784), num_particles=0),
     r"num_particles must be a positive integer"),
    (lambda: pyrovae.log_likelihood_bound(*pyrovae.build_pair(pyrovae.ModelConfig(
        latent_dim=2, hidden=4), x_dim=784), torch.full((3, 784), float("nan")),
        num_particles=2), r"NaN or inf in 3 datapoint"),
    (lambda: pyrovae.evaluate(*pyrovae.build_pair(pyrovae.ModelConfig(latent_dim=2, hidden=4),
                                                  x_dim=784), torch.zeros(0, 784)),
     r"non-empty tensor"),
    (lambda: pyrovae.log_likelihood_bound(*pyrovae.build_pair(pyrovae.ModelConfig(
        model="cvae", latent_dim=2, hidden=4), x_dim=784), torch.zeros(3, 784),
        torch.tensor([0, 1, 12]), num_particles=2), r"labels must lie in 0\.\.9"),
    (lambda: pyrovae.make_objective(""), r"expected a name"),
])
def test_python_api(call, pattern):
    with pytest.raises(PyroVAEError, match=pattern):
        call()
