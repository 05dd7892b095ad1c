"""VQ-VAE commands end to end on the embedded sample, at toy sizes."""
import json

import pytest


TINY = ["--model", "vqvae", "--epochs", "1", "--num-codes", "16", "--code-dim", "4",
        "--channels", "8", "--no-progress"]
TINY_PRIOR = ["--epochs", "1", "--d-model", "16", "--layers", "1", "--heads", "2",
              "--no-progress"]





@pytest.fixture(scope="module")
def vq_run(trained):
    return trained(*TINY)


def test_train_writes_a_vqvae_run(vq_run):
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "reconstructions.png",
                 "codebook.png"):
        assert (vq_run / name).stat().st_size > 0, name
    cfg = json.loads((vq_run / "config.json").read_text())
    assert cfg["model"]["model"] == "vqvae" and cfg["vqvae"]["num_codes"] == 16
    record = json.loads((vq_run / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("test_nats", "test_perplexity", "test_codes_used", "train_perplexity"):
        assert key in record


def test_sample_before_prior_is_a_clear_error(vq_run, cli):
    code, _, err = cli("sample", str(vq_run))
    assert code == 2 and "train-prior" in err and err.count("\n") == 1


def test_prior_sample_evaluate_and_resume(vq_run, cli, tmp_path):
    code, out, _ = cli("train-prior", str(vq_run), *TINY_PRIOR)
    assert code == 0 and "test -log p(codes)" in out
    assert (vq_run / "samples.png").stat().st_size > 0
    code, _, err = cli("train-prior", str(vq_run), *TINY_PRIOR)
    assert code == 2 and "--overwrite" in err  # an existing prior is not silently replaced
    code, _, _ = cli("train-prior", str(vq_run), "--resume", "--epochs", "2",
                     "--no-progress")
    assert code == 0
    lines = (vq_run / "prior_metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]
    code, _, _ = cli("sample", str(vq_run), "--out", str(tmp_path / "s.png"), "--n", "8")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0
    code, _, err = cli("sample", str(vq_run), "--label", "3")
    assert code == 2 and "conditional" in err
    code, out, _ = cli("evaluate", str(vq_run), "--limit", "100")
    assert code == 0 and "| 1 |" in out
    saved = json.loads((vq_run / "eval.json").read_text())
    assert saved["num_datapoints"] == 100 and saved["model"] == "vqvae"
    assert saved["bounds"][0]["mean"] < 0 and saved["kl"]["mean"] > 0
    assert "one-hot" in (vq_run / "eval.md").read_text()


def test_conditional_prior_class_grid(vq_run, cli, tmp_path):
    code, _, _ = cli("train-prior", str(vq_run), *TINY_PRIOR, "--conditional",
                     "--overwrite")
    assert code == 0 and (vq_run / "class_grid.png").stat().st_size > 0
    code, _, _ = cli("sample", str(vq_run), "--label", "7", "--n", "4")
    assert code == 0 and (vq_run / "samples_label7.png").is_file()
    code, _, _ = cli("sample", str(vq_run), "--grid", "--per-row", "3",
                     "--out", str(tmp_path / "grid.png"))
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 0
    code, _, err = cli("sample", str(vq_run), "--label", "12")
    assert code == 2 and "0..9" in err


def test_train_prior_on_a_vae_run_is_a_clear_error(cli, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "mnist-sample"}))
    code, _, err = cli("train-prior", str(tmp_path))
    assert code == 2 and "not a VQ-VAE run" in err
