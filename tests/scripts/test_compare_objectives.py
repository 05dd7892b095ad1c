"""scripts/compare_objectives.py end to end on the embedded sample, at toy sizes."""
import json

import pytest

from pyrovae.errors import PyroVAEError


@pytest.fixture(scope="module")
def study(load_script):
    return load_script("compare_objectives")


def toy(out, *extra):
    return ["--epochs", "1", "--train-limit", "64", "--batch-size", "32", "--hidden", "16",
            "--latent-dim", "4", "--eval-k", "8", "--eval-limit", "16", "--pair-k", "4",
            "--snr-reps", "3", "--snr-batch", "4", "--snr-ks", "1,2", "--no-progress",
            "--objectives", "elbo,dreg:2", "--out", str(out), *extra]


def test_writes_table_figure_and_resumes(study, tmp_path):
    assert study.main(toy(tmp_path)) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [r["objective"] for r in res["results"]] == ["elbo", "dreg:2"]
    first, second = res["results"]
    assert first["delta_pair"] == 0.0 and second["delta_pair_se"] > 0
    assert set(res["snr_panel"]) == {"iwae:1", "dreg:1", "iwae:2", "dreg:2"}
    assert "| `dreg:2` |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "compare_objectives.png").stat().st_size > 10_000
    # --resume reuses the trained pairs: same numbers, no training
    assert study.main(toy(tmp_path, "--resume")) == 0
    again = json.loads((tmp_path / "results.json").read_text())["results"]
    assert again[1]["test_iwae"] == second["test_iwae"]


def test_bad_objective_fails_before_training(study, tmp_path):
    with pytest.raises(PyroVAEError, match="iwae:K"):
        study.main(toy(tmp_path, "--objectives", "elbo,iwae"))
