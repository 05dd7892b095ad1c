"""The study and benchmark scripts end to end at toy sizes: each runs, writes its JSON
(with the machine), Markdown and figures.  The numbers themselves are measured by hand
(docs/); here only what must hold at any size is checked."""
import argparse
import json

import pytest


def test_benchmark_evaluation(tmp_path, load_script):
    out = tmp_path / "bench.json"
    load_script("benchmark_evaluation").main([
        "--num-data", "8", "--num-particles", "20", "--pyro-bernoulli-data", "4",
        "--naive-data", "1", "--naive-particles", "4", "--vectorized-data", "2",
        "--ais-data", "4", "--ais-chains", "2", "--ais-steps", "2", "--target-particles", "30",
        "--renyi-data", "4", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["machine"]["cpu"] and r["peak_gflops"] > 0
    assert set(r["speedup"]) == {"pyro_bernoulli", "naive", "pyro_vectorized"}
    assert r["ais"]["decoder_passes"] == 4 * 2 * 2 * 11 and 0 < r["ais"]["fraction_of_peak"]
    t = r["target"]
    assert t["K"] == 30 and 0 < t["fraction_of_peak"] and t["renyi_over_evaluator"] > 0
    # Pyro's RenyiELBO(alpha=0) bounds the same log p(x): per datapoint, close to ours
    assert abs(t["renyi_alpha0"]["mean_bound"] - t["mean_bound"]) < 0.05 * abs(t["mean_bound"])
    sb = t["side_by_side"]
    assert all(len(ts) == sb["rounds"] for ts in sb["seconds"].values())
    assert sb["renyi_over_evaluate"] > 0 and sb["renyi_over_evaluate_pyro_bernoulli"] > 0
    if "bfloat16" in t:  # a CPU with bf16 instructions: timed and its bias measured, paired
        assert sb["float32_over_bfloat16"] > 0 and t["bfloat16"]["seconds"] > 0
        assert abs(t["bfloat16"]["paired_shift_nats"]) < 0.01 * abs(t["mean_bound"])


def test_benchmark_training(tmp_path, load_script):
    out = tmp_path / "bench.json"
    load_script("benchmark_training").main([
        "--batch-sizes", "16", "--rounds", "2", "--steps", "2", "--warmup", "1",
        "--no-ablations", "--hidden", "16", "--latent-dim", "3", "--out", str(out)])
    r = json.loads(out.read_text())
    assert r["machine"]["cpu"]
    rows = r["batches"]["16"]["variants"]
    assert rows and all("ratio_to_torch" in row["cpu"] for row in rows.values())


def test_disentanglement_study(tmp_path, load_script):
    assert load_script("disentanglement").main([
        "--betas", "1", "4", "--tcvae", "4", "--seeds", "0", "--epochs", "1", "--latent-dim", "4",
        "--train-size", "256",
        "--votes", "10", "--threads", "2", "--out", str(tmp_path / "d"),
        "--figures", str(tmp_path / "fig"), "--no-progress"]) == 0
    r = json.loads((tmp_path / "d.json").read_text())
    assert [(s["objective"], s["beta"]) for s in r["summary"]] == [
        ("elbo", 1.0), ("elbo", 4.0), ("tcvae:4", 4.0)]
    for s in r["summary"]:
        assert 0 <= s["mig"] <= 1 and 0 <= s["factorvae"] <= 1
    assert "| tcvae:4 | 4 |" in (tmp_path / "d.md").read_text()
    for name in ("disentanglement.png", "sprites_traversal_beta1.png",
                 "sprites_traversal_beta4.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 0


def test_disentanglement_merge_and_baseline(tmp_path, load_script):
    """Lanes join into one table (seeds pooled per β), a baseline budget gets its own
    figure, and lanes of different studies are refused in one line."""
    def lane(name, epochs, betas, seed, mig):
        rows = [{"objective": "elbo", "beta": b, "seed": seed, "mig": mig * b, "factorvae": 0.5,
                 "recon": -20.0 * b, "kl": 5.0, "active_units": 3} for b in betas]
        args = {"dataset": "sprites", "epochs": epochs, "latent_dim": 10, "train_size": None,
                "votes": 800}
        (tmp_path / name).write_text(json.dumps({"rows": rows, "args": args}))
        return str(tmp_path / name)

    a, b = lane("a.json", 150, [1, 4], 0, 0.01), lane("b.json", 150, [1, 4], 1, 0.03)
    base = lane("base.json", 15, [1, 4], 0, 0.005)
    script = load_script("disentanglement")
    assert script.main(["--merge", a, b, "--baseline", base, "--out", str(tmp_path / "m"),
                        "--figures", str(tmp_path / "fig")]) == 0
    r = json.loads((tmp_path / "m.json").read_text())
    assert [(s["beta"], s["seeds"]) for s in r["summary"]] == [(1, 2), (4, 2)]
    assert abs(r["summary"][1]["mig"] - 0.08) < 1e-12
    assert "150 epochs, seeds [0, 1]" in (tmp_path / "m.md").read_text()
    assert r["args"]["betas"] == [1, 4] and r["args"]["tcvae"] == []
    for name in ("disentanglement.png", "disentanglement_budget.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 0
    other = lane("c.json", 15, [8], 2, 0.01)
    with pytest.raises(SystemExit, match="merge only lanes of one study"):
        script.main(["--merge", a, other, "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="merge each run once"):
        script.main(["--merge", a, a, "--out", str(tmp_path / "x")])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="give a JSON this script wrote"):
        script.main(["--merge", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")])


def test_ssvae_study(tmp_path, load_script):
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text(json.dumps({"sup": 100, "enum": "parallel", "seconds_per_epoch": [1.0],
                                    "test_accuracy": [0.5]}) + "\n")
    assert load_script("ssvae_study").main([
        "--dataset", "mnist-sample", "--labels", "100", "--sampled", "100", "--epochs", "1",
        "--hidden", "16", "--k", "4", "--num-test", "20", "--baseline", str(baseline),
        "--out", str(tmp_path / "s"), "--figures", str(tmp_path / "fig"), "--no-progress"]) == 0
    r = json.loads((tmp_path / "s.json").read_text())
    assert [row["y"] for row in r["rows"]] == ["enumerated", "sampled"]
    for row in r["rows"]:
        assert 0.1 <= row["accuracy"] <= 1 and row["iwae"] >= row["elbo"] - 5
    assert "ss_vae_M2.py" in (tmp_path / "s.md").read_text()
    for name in ("ssvae_accuracy.png", "ssvae_class_grid.png", "ssvae_style_transfer.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 0


def test_ais_study(tmp_path, load_script, trained):
    run = trained("--epochs", "1", "--latent-dim", "3", "--hidden", "16", "--no-progress")
    assert load_script("ais_study").main([
        str(run), "--num-test", "12", "--k", "20", "--ais-steps", "3",
        "--chains", "2", "--bdmc-steps", "3", "--bdmc-num", "4", "--out", str(tmp_path / "a"),
        "--figures", str(tmp_path / "fig"), "--no-progress"]) == 0
    assert (tmp_path / "a.json").is_file() and (tmp_path / "a.md").is_file()


def test_ssvae_seeds_figure(tmp_path, load_script):
    def lines(path, rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    example = lines(tmp_path / "ex.jsonl", [{"seed": s, "test_accuracy": [0.1, 0.5 + s / 100]}
                                            for s in (1, 2)])
    base = lines(tmp_path / "base.jsonl", [{"sup": 100, "enum": "parallel",
                                            "test_accuracy": [0.6]}])
    one = lines(tmp_path / "one.jsonl", [{"labels": 100, "train_size": 60000,
                                          "test_accuracy": 0.55}])
    passes = lines(tmp_path / "lp.jsonl", [{"labels": 100, "label_passes": 100, "accuracy": a}
                                           for a in (0.67, 0.68)])
    out = tmp_path / "seeds.png"
    script = load_script("ssvae_seeds_figure")
    args = ["--example", example, "--baseline", base, "--one-pass", one, "--passes", passes]
    assert script.main([*args, "--out", str(out)]) == 0 and out.stat().st_size > 0
    assert len(script.groups(argparse.Namespace(
        example=example, baseline=base, one_pass=one, passes=passes, labels=100,
        label_passes=100))["Pyro's ss_vae_M2.py\n(one pass)"]) == 3  # seeds 1, 2 and 0
    with pytest.raises(SystemExit, match="no runs for"):
        script.main([*args, "--label-passes", "7", "--out", str(out)])
