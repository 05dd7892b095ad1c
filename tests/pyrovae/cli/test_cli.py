"""CLI: one-line errors with exit status 2 for bad input, and a tiny end-to-end run."""
import json

import pytest


TINY = ["--epochs", "1", "--latent-dim", "4", "--hidden", "32", "--no-progress"]



@pytest.fixture(scope="module")
def trained_run(trained):
    return trained(*TINY)


def test_train_writes_the_run_directory(trained_run):
    for name in ("config.json", "checkpoint.pt", "metrics.jsonl", "samples.png",
                 "reconstructions.png", "loss.png"):
        assert (trained_run / name).stat().st_size > 0, name
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"]["latent_dim"] == 4 and cfg["dataset"] == "mnist-sample"


def test_sample_command(trained_run, cli, tmp_path):
    code, out, _ = cli("sample", str(trained_run), "--out", str(tmp_path / "s.png"))
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0


def test_resume_extends_a_finished_run(trained_run, cli):
    code, out, _ = cli("train", "--run-dir", str(trained_run), "--resume",
                       "--epochs", "2", "--no-progress")
    assert code == 0 and "epoch 2:" in out
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2]


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "gan"], "--model\\) = 'gan' is invalid: it must be one of cvae, ssvae, vae"),
    (["train", "--guide", "nope"], "--guide\\) = 'nope' is invalid: it must be one of .*diagonal"),
    (["train", "--dataset", "cifar"], "unknown dataset 'cifar'; valid datasets:"),
    (["train", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"],
     "IDX files .* not found; looked in /nonexistent"),
    (["train", "--activation", "sigmoidish"], "--activation.*one of relu"),
    (["train", "--objective", "iwae:0"], "bad objective 'iwae:0'.*integer K >= 1"),
    (["train", "--beta-schedule", "zigzag"], "--beta-schedule.*one of constant"),
    (["train", "--device", "tpu"], "--device.*auto, cpu, cuda or cuda:N"),
    (["sample", "/nonexistent/run"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, argv, message):
    if argv[0] == "train":
        argv = argv + ["--run-dir", str(tmp_path / "r")]
    code, _, err = cli(*argv)
    assert code == 2
    assert err.startswith("pyrovae: error: ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err


def test_existing_run_dir_is_not_overwritten(trained_run, cli):
    before = (trained_run / "checkpoint.pt").read_bytes()
    code, _, err = cli("train", "--run-dir", str(trained_run), *TINY)
    assert code == 2 and "already exists" in err and "--resume" in err
    assert (trained_run / "checkpoint.pt").read_bytes() == before


def test_corrupt_checkpoint_is_one_line(trained_run, cli, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    data = (broken / "checkpoint.pt").read_bytes()
    (broken / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    code, _, err = cli("sample", str(broken))
    assert code == 2 and "corrupt or truncated" in err
    code, _, err = cli("train", "--run-dir", str(broken), "--resume", "--no-progress")
    assert code == 2 and "corrupt or truncated" in err


def test_resume_without_checkpoint(cli, tmp_path):
    code, _, err = cli("train", "--run-dir", str(tmp_path / "none"), "--resume")
    assert code == 2 and "no checkpoint" in err


def test_demo_smoke(cli, tmp_path):
    """What `make demo` runs, at tiny size: train, evaluate, report where things are."""
    code, out, _ = cli("demo", "--run-dir", str(tmp_path / "demo"), "--epochs", "1",
                       "--max-k", "10", "--eval-limit", "16")
    assert code == 0
    assert "demo done: test ELBO" in out and "IWAE_10" in out
    for name in ("samples.png", "reconstructions.png", "loss.png", "k_curve.png", "eval.json",
                 "eval.md"):
        assert (tmp_path / "demo" / name).stat().st_size > 0


def test_evaluate_with_ais_rows_and_bdmc(trained_run, cli, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    code, out, _ = cli("evaluate", run, "--num-particles", "20", "--limit", "8",
                       "--ais", "3", "6", "--chains", "4", "--no-progress")
    assert code == 0 and "| AIS T=6 × 4 chains |" in out and "vs IWAE_20" in out
    report = json.loads((run / "eval.json").read_text())
    assert [a["steps"] for a in report["ais"]] == [3, 6]
    assert len(report["ais"][0]["per_datapoint"]) == len(report["per_datapoint"]["iwae"]) == 8
    assert report["ais"][1]["evaluations"] == 4 * 6 * 11
    code, out, _ = cli("bdmc", run, "--steps", "4", "--num", "6", "--chains", "2",
                       "--no-progress")
    assert code == 0 and "BDMC T=4" in out
    (row,) = json.loads((run / "bdmc.json").read_text())["rows"]
    assert row["num"] == 6 and row["upper"] > row["lower"] - 5


def test_evaluate_precision_flag(trained_run, cli, tmp_path, monkeypatch):
    import shutil

    import pyrovae.gemm as gemm

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    if gemm.bf16_supported():
        code, _, err = cli("evaluate", run, "--num-particles", "20", "--limit", "8",
                           "--precision", "bfloat16", "--device", "cpu", "--no-progress")
        assert code == 0, err
        assert json.loads((run / "eval.json").read_text())["precision"] == "bfloat16"
        assert "bf16 GEMM inputs" in (run / "eval.md").read_text()
    monkeypatch.setattr(gemm, "bf16_supported", lambda: False)
    code, _, err = cli("evaluate", run, "--num-particles", "20", "--limit", "8",
                       "--precision", "bfloat16", "--device", "cpu", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs a CPU with bf16 instructions" in err
