#!/usr/bin/env python
"""A pair written the way Pyro's VAE example writes it, trained with pyro.infer.SVI, then
scored two ways on the same weights and data, side by side in one run:

- pyrovae's per-datapoint IWAE_K (``pyrovae.log_likelihood_bound``), and
- Pyro's own ``RenyiELBO(alpha=0, num_particles=K)``, which for a pair whose every site
  sits in one unsubsampled data plate is minus the sum of the same per-datapoint bounds.

The pair (``ExampleVAE``: an ``nn.Module`` with ``model(x)`` and ``guide(x)`` methods,
``pyro.module``, sites ``latent`` and ``obs``, plate ``data``) has the layout of Pyro's
``examples/vae/vae.py``; the code is this project's.  The tests train it too
(``tests/pyrovae/test_any_pair.py``).

    python scripts/pyro_example_pair.py --epochs 10 --k 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from torch import nn

from pyrovae import load_dataset, log_likelihood_bound, machine_info


class Encoder(nn.Module):
    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = (nn.Linear(784, hidden), nn.Linear(hidden, z_dim),
                                          nn.Linear(hidden, z_dim))

    def forward(self, x):
        h = nn.functional.softplus(self.fc1(x.reshape(-1, 784)))
        return self.fc21(h), torch.exp(self.fc22(h))


class Decoder(nn.Module):
    def __init__(self, z_dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc21 = nn.Linear(z_dim, hidden), nn.Linear(hidden, 784)

    def forward(self, z):
        return torch.sigmoid(self.fc21(nn.functional.softplus(self.fc1(z))))


class ExampleVAE(nn.Module):
    """``vae.model(x)`` / ``vae.guide(x)``: p(z) = N(0, I), Bernoulli decoder."""

    def __init__(self, z_dim: int = 50, hidden: int = 400):
        super().__init__()
        self.encoder, self.decoder, self.z_dim = Encoder(z_dim, hidden), Decoder(z_dim, hidden), z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, torch.ones_like(z_loc)).to_event(1))
            img = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, 784))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--dataset", default="mnist-sample", help="pyrovae dataset name")
    p.add_argument("--data-dir", default=None, help="IDX folder (mnist, fashion-mnist)")
    p.add_argument("--epochs", type=int, default=10, help="SVI epochs (batch 128, Adam 1e-3)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per datapoint")
    p.add_argument("--num-test", type=int, default=1000, help="test images scored")
    p.add_argument("--renyi-batch", type=int, default=10, help="datapoints per RenyiELBO call")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--out", default="results/pyro_example_pair.json", help="JSON output")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    pyro.set_rng_seed(0)
    vae = ExampleVAE()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    for epoch in range(args.epochs):
        perm = torch.randperm(len(data.train_x))
        loss = sum(svi.step(torch.bernoulli(data.train_x[perm[i:i + 128]]))
                   for i in range(0, len(perm), 128))
        print(f"epoch {epoch + 1}: SVI loss {loss / len(perm):.2f}")
    x = data.test_x[:args.num_test]
    with torch.no_grad():
        torch.manual_seed(1)
        ours, t_ours = timed(lambda: log_likelihood_bound(vae.model, vae.guide, x,
                                                          num_particles=args.k))
        renyi = RenyiELBO(alpha=0, num_particles=args.k, vectorize_particles=True)
        torch.manual_seed(1)
        theirs, t_theirs = timed(lambda: sum(-renyi.loss(vae.model, vae.guide,
                                                         x[i:i + args.renyi_batch])
                                             for i in range(0, len(x), args.renyi_batch)))
    result = {"dataset": args.dataset, "epochs": args.epochs, "K": args.k, "num_test": len(x),
              "pyrovae_iwae_mean": float(ours.mean()),
              "pyrovae_iwae_se": float(ours.std() / len(x) ** 0.5),
              "renyi_alpha0_mean": float(theirs) / len(x),
              "pyrovae_seconds": t_ours, "renyi_seconds": t_theirs,
              "speedup": t_theirs / t_ours, "machine": machine_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"IWAE_{args.k} on {len(x)} test images: pyrovae {result['pyrovae_iwae_mean']:.3f} "
          f"± {result['pyrovae_iwae_se']:.3f} in {t_ours:.1f} s; RenyiELBO(alpha=0) "
          f"{result['renyi_alpha0_mean']:.3f} in {t_theirs:.1f} s ({result['speedup']:.1f}x); "
          f"{result['machine']['cpu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
