"""scripts/benchmark_quality.py end to end on the embedded sample, at toy sizes."""
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmark_quality")


def toy(tmp_path, *extra):
    return ["--dataset", "mnist-sample", "--data-dir", "", "--epochs", "1", "--num-test", "24",
            "--particles", "8", "--out", str(tmp_path / "out"), "--run-root",
            str(tmp_path / "runs"), "--no-progress", *extra]


def test_protocol_uses_the_cli_defaults(bench):
    from pyrovae.config import ModelConfig, TrainConfig

    cfg = bench.run_config({}, dataset="fashion-mnist", data_dir="/d", seed=3, epochs=10)
    assert cfg.model == ModelConfig()
    assert cfg.train == TrainConfig(seed=3, epochs=10, device="cpu")
    assert cfg.train.objective == "elbo" and cfg.train.batch_size == 128 and cfg.train.lr == 1e-3
    assert (cfg.model.hidden, cfg.model.latent_dim) == (400, 50)


def test_same_seed_reproduces_the_bound_exactly(bench, tmp_path):
    assert bench.main(toy(tmp_path / "a", "--seeds", "0", "1")) == 0
    assert bench.main(toy(tmp_path / "b", "--seeds", "0")) == 0
    a = json.loads((tmp_path / "a" / "out" / "quality.json").read_text())
    b = json.loads((tmp_path / "b" / "out" / "quality.json").read_text())
    ra, rb = a["runs"]["default"], b["runs"]["default"]
    assert ra[0]["iwae"] == rb[0]["iwae"] and ra[0]["elbo"] == rb[0]["elbo"]
    assert ra[0]["iwae"]["mean"] != ra[1]["iwae"]["mean"]  # the seed does matter
    s = a["summary"]["default"]
    assert s["seeds"] == [0, 1] and s["iwae_sd"] > 0
    assert s["iwae_mean"] == pytest.approx((ra[0]["iwae"]["mean"] + ra[1]["iwae"]["mean"]) / 2)
    assert ra[0]["iwae"]["mean"] >= ra[0]["elbo"]["mean"] - 3 * ra[0]["iwae"]["se"]
    md = (tmp_path / "a" / "out" / "quality.md").read_text()
    assert f"{s['iwae_mean']:.2f}" in md and "torch" in md
    assert (Path(ra[0]["run_dir"]) / "eval.json").is_file()


def test_resume_reuses_finished_rows_and_variants_differ(bench, tmp_path):
    args = toy(tmp_path, "--variants", "default", "no-data-output-bias")
    assert bench.main(args) == 0
    first = json.loads((tmp_path / "out" / "quality.json").read_text())["runs"]
    assert first["default"][0]["iwae"] != first["no-data-output-bias"][0]["iwae"]
    assert bench.main(args + ["--resume"]) == 0
    again = json.loads((tmp_path / "out" / "quality.json").read_text())["runs"]
    assert again == first  # read back from each run's quality_row.json, nothing retrained


def test_missing_dataset_is_a_one_line_error(bench, tmp_path, capsys):
    code = bench.main(toy(tmp_path, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)))
    assert code == 2
    assert "benchmark_quality: error:" in capsys.readouterr().err
