"""Evaluation shared among processes started by torchrun (2 CPU ranks over gloo).

With the exact posterior as the guide every log weight equals log p(x), and every AIS
increment is a share of it, so the sharded answer is deterministic: the per-datapoint
values must be the closed form, in the datapoints' order, however the batches fell on the
ranks (23 datapoints in uneven batches).  This file is also the ranks' script.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

F64 = dict(dtype=torch.float64)
D, L, NOISE, N = 4, 2, 0.5, 23
G = torch.Generator().manual_seed(5)
W, B = torch.randn(D, L, generator=G, **F64), torch.randn(D, generator=G, **F64)
COV = torch.linalg.inv(torch.eye(L, **F64) + W.T @ W / NOISE**2)  # posterior covariance


def model(x):
    with pyro.plate("N", x.shape[0]):
        z = pyro.sample("latent", dist.Normal(torch.zeros(L, **F64), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(z @ W.T + B, NOISE).to_event(1), obs=x)


def exact_guide(x):
    with pyro.plate("N", x.shape[0]):
        pyro.sample("latent", dist.MultivariateNormal((x - B) @ W @ COV / NOISE**2, COV))


def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, L, generator=g, **F64) @ W.T + B + NOISE * torch.randn(N, D, generator=g, **F64)


def exact(x):
    return dist.MultivariateNormal(B, W @ W.T + NOISE**2 * torch.eye(D, **F64)).log_prob(x)


def rank_main(out: str) -> None:
    import pyrovae
    from pyrovae import distributed
    from pyrovae.evaluation.marginal import ais_row

    world, _ = distributed.setup(os.environ, torch.device("cpu"))
    torch.manual_seed(world.seed(0))
    x = data()
    report = pyrovae.evaluate(model, exact_guide, x, num_particles=(1, 10), batch_size=5,
                              progress=False)
    row = ais_row(model, exact_guide, x, num_steps=3, num_chains=2, batch_size=4,
                  progress=False)
    if world.is_main:
        Path(out).write_text(json.dumps({"world": world.size, "report": report, "ais": row}))


def test_two_ranks_evaluate_every_datapoint_once_in_order(tmp_path):
    out = tmp_path / "sharded.json"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", __file__, str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    x = data()
    truth = exact(x)
    assert res["world"] == 2 and res["report"]["num_datapoints"] == N
    for key in ("iwae", "elbo"):
        got = torch.tensor(res["report"]["per_datapoint"][key], **F64)
        assert torch.allclose(got, truth, atol=1e-8), key
    ais = torch.tensor(res["ais"]["per_datapoint"], **F64)
    assert torch.allclose(ais, truth, atol=1e-8)
    assert abs(res["report"]["bounds"][-1]["mean"] - float(truth.mean())) < 1e-8


def test_cli_evaluate_under_torchrun_matches_one_process(tmp_path, trained, cli):
    run = trained("--epochs", "1", "--latent-dim", "3", "--hidden", "16", "--no-progress")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "pyrovae.cli", "evaluate", str(run),
                           "--num-particles", "20", "--limit", "50", "--batch-size", "8",
                           "--no-progress"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone writes
    sharded = json.loads((run / "eval.json").read_text())
    assert sharded["processes"] == 2 and sharded["num_datapoints"] == 50
    assert cli("evaluate", run, "--num-particles", 20, "--limit", 50, "--no-progress")[0] == 0
    single = json.loads((run / "eval.json").read_text())
    assert single["processes"] == 1
    a, b = (torch.tensor(r["per_datapoint"]["iwae"]) for r in (sharded, single))
    assert not torch.equal(a, b)  # other Monte Carlo draws of the same bound ...
    ra, rb = sharded["bounds"][-1], single["bounds"][-1]  # ... within their Monte Carlo error
    assert abs(ra["mean"] - rb["mean"]) < 4 * (ra["mc_se"] ** 2 + rb["mc_se"] ** 2) ** 0.5


if __name__ == "__main__":
    pyro.enable_validation(True)
    rank_main(sys.argv[1])
