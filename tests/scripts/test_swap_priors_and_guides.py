"""scripts/swap_priors_and_guides.py and scripts/amortization_gap.py end to end, at toy sizes."""
import json

import pytest

def test_grid_then_amortization_gap(tmp_path, load_script):
    swap = load_script("swap_priors_and_guides")
    out = tmp_path / "swap"
    assert swap.main(["--priors", "standard,vamp", "--guides", "diagonal", "--epochs", "1",
                      "--train-limit", "200", "--eval-limit", "12", "--eval-k", "8",
                      "--latent-dim", "3", "--hidden", "16", "--num-pseudo-inputs", "5",
                      "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "swap.json").read_text())["results"]
    assert [(r["prior"], r["guide"]) for r in results] == [("standard", "diagonal"),
                                                          ("vamp", "diagonal")]
    for r in results:
        assert r["test_iwae"] >= r["test_elbo"] - 3 * r["test_elbo_se"]
        assert r["gap"] == pytest.approx(r["test_iwae"] - r["test_elbo"], abs=1e-6)
    assert "vs_standard" in results[1] and "vs_standard" not in results[0]
    assert (out / "swap.png").stat().st_size > 0 and "| vamp | diagonal |" in (out / "swap.md").read_text()

    gap = load_script("amortization_gap")
    assert gap.main([str(out / "standard-diagonal"), "--n-test", "6", "--steps", "20",
                     "--elbo-samples", "20", "--eval-k", "20", "--out", str(tmp_path / "gap"),
                     "--no-progress"]) == 0
    (r,) = json.loads((tmp_path / "gap" / "amortization_gap.json").read_text())["results"]
    assert r["inference_gap"] == pytest.approx(r["approximation_gap"] + r["amortization_gap"])
    assert r["guide"] == "diagonal"


def test_a_typo_in_a_prior_name_fails_before_training(tmp_path, load_script):
    from pyrovae.errors import PyroVAEError

    with pytest.raises(PyroVAEError, match="valid priors"):
        load_script("swap_priors_and_guides").main(["--priors", "vampp", "--out", str(tmp_path)])
