"""scripts/latent_regularization.py and scripts/beta_sweep.py end to end, at toy sizes."""
import json

def test_latent_regularization(tmp_path, load_script):
    script = load_script("latent_regularization")
    assert script.main(["--epochs", "1", "--hidden", "16", "--batch-size", "500",
                        "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                        "--no-progress"]) == 0
    for name in ("latent_regularization.png", "manifold_2d.png", "latent_regularization.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    rows = {r["variant"]: r for r in
            json.loads((tmp_path / "out" / "latent_regularization.json").read_text())["variants"]}
    # even one epoch of the KL alone pulls every posterior mean towards the prior's
    assert rows["kl_only"]["test_kl"] < rows["elbo"]["test_kl"] < rows["recon_only"]["test_kl"]
    assert (tmp_path / "runs" / "elbo" / "checkpoint.pt").is_file()


def test_beta_sweep(tmp_path, load_script):
    script = load_script("beta_sweep")
    assert script.main(["--betas", "1,8", "--epochs", "1", "--latent-dim", "3", "--hidden", "16",
                        "--eval-k", "4", "--batch-size", "500",
                        "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                        "--no-progress"]) == 0
    out = tmp_path / "out"
    rows = json.loads((out / "beta_sweep.json").read_text())["rows"]
    assert [r["beta"] for r in rows] == [1.0, 8.0]
    assert rows[1]["kl"] < rows[0]["kl"]  # a larger β buys a smaller KL
    for r in rows:
        assert r["iwae"] >= r["elbo"] - 3 * r["elbo_se"]
    md = (out / "beta_sweep.md").read_text()
    assert md.count("\n") == 4 and "IWAE (K=4)" in md
    for name in ("beta_sweep.png", "traversal_beta1.png", "traversal_beta8.png"):
        assert (out / name).stat().st_size > 0
