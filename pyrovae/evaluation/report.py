"""Diagnostics of importance weights and the evaluation report: eval.json, eval.md, k_curve.png.

- PSIS k̂ per datapoint (Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed
  importance sampling", JMLR 2024, via ``arviz.psislw``): k̂ < 0.5 good, k̂ > 0.7 the
  bound for that datapoint is unreliable at this K.  *Not applicable* (NaN per datapoint,
  null in JSON) when the weights are numerically constant -- the estimate is then exact,
  e.g. under the exact posterior -- or K < ``PSIS_MIN_K``, where the Pareto tail would
  have too few points to fit (arviz returns inf there).
- Monte Carlo standard error of each L_K: from the spread of the disjoint groups of K
  weights (``S // K >= 2``), else the delta method on the one group,
  Var(log p̂_K) ~= (1 / (ESS/K) - 1) / K (unreliable where k̂ > 0.5).
- bits/dim only where it means something: for a discrete likelihood (a pmf over the
  pixels), or a density on dequantized pixels with the D log(levels) of the bins added
  back (Theis, van den Oord & Bethge 2016); null for a density on continuous data.
- Normalized effective sample size ``ESS / K = (Σ_k w_k)² / (K Σ_k w_k²)``.
- Active units (Burda et al. 2016): latent dim i is active when ``Cov_x(E_q[z_i | x]) > 0.01``.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from pyrovae.files import atomic_write
from pyrovae.plots.run import plot_k_curve

LN2 = math.log(2.0)
# tail of min(K/5, 3 sqrt(K)) >= 20 points for the Pareto fit (Vehtari et al. 2024, sec. 3)
PSIS_MIN_K = 100


def constant_weights(log_w: torch.Tensor) -> torch.Tensor:
    """Per datapoint of ``log_w[K, batch]``: are the weights equal up to rounding?"""
    lw = log_w.double()
    spread = lw.max(0).values - lw.min(0).values
    return spread <= 1e-6 * (1 + lw.abs().max(0).values)


def psis_khat(log_w: torch.Tensor) -> torch.Tensor:
    """k̂ per datapoint of ``log_w[K, batch]``; NaN where it is not applicable."""
    batch = log_w.shape[1]
    if log_w.shape[0] < PSIS_MIN_K:
        return torch.full((batch,), float("nan"), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz's refactor notice and small-tail warnings
        import arviz

        _, khat = arviz.psislw(log_w.T.double().cpu().numpy())
    khat = torch.as_tensor(khat, dtype=torch.float64).reshape(-1)
    khat[~torch.isfinite(khat) | constant_weights(log_w).cpu()] = float("nan")
    return khat


def normalized_ess(log_w: torch.Tensor) -> torch.Tensor:
    """``(Σw)² / (K Σw²)`` per datapoint of ``log_w[K, batch]``, in (0, 1]."""
    w = torch.softmax(log_w.double(), dim=0)
    return 1.0 / (w.square().sum(0) * log_w.shape[0])


class Stats:
    """Per-datapoint diagnostics gathered batch by batch."""

    def __init__(self):
        self.khat, self.ess, self.recon = [], [], []
        self.kl, self.z_mean, self.z_noise = {}, {}, {}

    def add(self, log_w, *, recon, kl: dict, z_mean: dict, z_noise: dict | None = None) -> None:
        """One batch: ``log_w[K, batch]``; ``recon`` and each ``kl[site]`` ``[batch]``;
        ``z_mean[site]`` ``[batch, dims]`` estimates of E_q[z | x], with ``z_noise[site]``
        their Monte Carlo variances (None: exact means)."""
        self.khat.append(psis_khat(log_w))
        self.ess.append(normalized_ess(log_w).cpu())
        self.recon.append(recon.double().cpu())
        for name, v in kl.items():
            self.kl.setdefault(name, []).append(v.double().cpu())
        for name, v in z_mean.items():
            self.z_mean.setdefault(name, []).append(v.double().cpu())
            noise = torch.zeros_like(v) if z_noise is None else z_noise[name]
            self.z_noise.setdefault(name, []).append(noise.double().cpu())

    @classmethod
    def concat(cls, parts) -> "Stats":
        """One :class:`Stats` of the batches of ``parts`` (Stats objects), in that order."""
        out = cls()
        for part in parts:
            for key in ("khat", "ess", "recon"):
                getattr(out, key).extend(getattr(part, key))
            for key in ("kl", "z_mean", "z_noise"):
                for name, values in getattr(part, key).items():
                    getattr(out, key).setdefault(name, []).extend(values)
        return out


def _mean_se(v: torch.Tensor) -> dict:
    n = v.numel()
    se = float(v.std() / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


def _bits(nats: float, x_dim: int, levels: int | None) -> float:
    """bits/dim of a log-likelihood in nats; ``levels``: add back the dequantization bins."""
    return -(nats - (x_dim * math.log(levels) if levels else 0.0)) / (x_dim * LN2)


def make_report(bounds: dict, stats: Stats, *, x_dim: int, threshold: float,
                seconds: float, batch_size: int, discrete: bool = True,
                levels: int | None = None, precision: str = "float32") -> dict:
    """Assemble the JSON-ready report from per-datapoint bounds ``{K: (estimate[N],
    monte_carlo_variance[N])}``.

    :param discrete: the likelihood is a pmf (bits/dim apply as they are).
    :param levels: the data are a density's input on pixels dequantized from this many
        levels (bits/dim of the discrete pixels: the bins' D log(levels) added back).
    """
    ks = sorted(bounds)
    base = bounds[ks[0]][0]
    n = base.numel()
    rows = []
    for k in ks:
        est, mc_var = bounds[k]
        row = {"K": k, **_mean_se(est), "mc_se": float(mc_var.sum().sqrt() / n)}
        if discrete or levels:
            row["bits_per_dim"] = _bits(row["mean"], x_dim, levels)
            row["bits_per_dim_se"] = row["se"] / (x_dim * LN2)
        else:
            row["bits_per_dim"] = row["bits_per_dim_se"] = None
        gain = _mean_se(est - base)  # paired: same datapoints, much smaller SE
        row["gain"], row["gain_se"] = gain["mean"], gain["se"]
        rows.append(row)
    report = {"num_datapoints": n, "x_dim": x_dim, "num_particles": ks,
              "bounds": rows, "seconds": seconds, "batch_size": batch_size,
              "precision": precision,
              "likelihood": "discrete" if discrete else
              f"density on pixels dequantized from {levels} levels" if levels else
              "density on continuous data (bits/dim not applicable)"}
    ess = torch.cat(stats.ess)
    report["ess"] = {"K": ks[-1], "normalized_median": float(ess.median()),
                     "normalized_mean": float(ess.mean()), "normalized_min": float(ess.min())}
    khat = torch.cat(stats.khat)
    ok = ~torch.isnan(khat)
    psis = {"K": ks[-1], "applicable": int(ok.sum()), "not_applicable": int((~ok).sum())}
    if ok.any():
        k_ok = khat[ok]
        psis.update(khat_median=float(k_ok.median()), khat_max=float(k_ok.max()),
                    **{"frac_above_0.5": float((k_ok > 0.5).double().mean()),
                       "frac_above_0.7": float((k_ok > 0.7).double().mean())})
    else:
        psis.update(khat_median=None, khat_max=None, **{"frac_above_0.5": None,
                                                         "frac_above_0.7": None})
    psis["reason_not_applicable"] = (
        f"K = {ks[-1]} < {PSIS_MIN_K}: too few weights for the Pareto fit"
        if ks[-1] < PSIS_MIN_K else "weights constant (the estimate is exact) or the fit failed")
    report["psis"] = psis
    report["recon"] = _mean_se(torch.cat(stats.recon))
    kl = {name: torch.cat(v) for name, v in stats.kl.items()}
    report["kl_per_site"] = {name: _mean_se(v) for name, v in kl.items()}
    if kl:
        report["kl"] = _mean_se(sum(kl.values()))
    report["active_units"] = {}
    for name, parts in stats.z_mean.items():
        z = torch.cat(parts)  # [N, dims]: E_q[z | x] per datapoint
        if z.shape[0] > 1:
            # Var_x of a noisy mean = Var_x(E_q[z|x]) + E_x[its Monte Carlo variance]
            var = z.var(dim=0) - torch.cat(stats.z_noise[name]).mean(0)
            report["active_units"][name] = {"active": int((var > threshold).sum()),
                                            "dims": z.shape[1], "threshold": threshold}
    return report


def markdown_table(report: dict) -> str:
    """The K table and the diagnostics as Markdown."""
    n, d = report["num_datapoints"], report["x_dim"]
    lines = [f"Test log-likelihood bounds over {n} datapoints (nats per datapoint; "
             f"bits/dim over {d} dims; ± SE: standard error over datapoints; MC SE: Monte "
             f"Carlo standard error of the mean estimate).", "",
             "| K | L_K (nats) | ± SE | MC SE | bits/dim | L_K − L_1 |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in report["bounds"]:
        bits = "n/a" if r["bits_per_dim"] is None else f"{r['bits_per_dim']:.4f}"
        lines.append(f"| {r['K']} | {r['mean']:.3f} | {r['se']:.3f} | {r.get('mc_se', 0):.3f} "
                     f"| {bits} | {r['gain']:.3f} ± {r['gain_se']:.3f} |")
    for a in report.get("ais", []):
        gap = a.get("gap_vs_iwae")
        lines.append(f"| AIS T={a['steps']} × {a['chains']} chains | {a['mean']:.3f} | "
                     f"{a['se'] or 0:.3f} | {a['mc_se']:.3f} | "
                     f"{'n/a' if a.get('bits_per_dim') is None else format(a['bits_per_dim'], '.4f')} | "
                     + (f"vs IWAE_{report['num_particles'][-1]}: {gap['mean']:+.3f} ± "
                        f"{gap['se'] or 0:.3f} |" if gap else " |"))
    lines.append("")
    lines.append(f"- likelihood: {report.get('likelihood', 'discrete')}")
    if "disentanglement" in report:
        d = report["disentanglement"]
        per = ", ".join(f"{k} {v:.3f}" for k, v in d["mig_per_factor"].items())
        lines.append(f"- disentanglement: MIG {d['mig']:.3f} ({per}); FactorVAE score "
                     f"{d['factorvae']:.3f} ({d['factorvae_votes']} votes, "
                     f"{d['factorvae_active_dims']} active dims)")
    if "accuracy" in report:
        acc = report["accuracy"]
        lines.append(f"- test accuracy of q(y|x): {acc['accuracy']:.4f} ± {acc['se']:.4f} "
                     f"({acc['n']} datapoints; the bounds above sum y out)")
    for a in report.get("ais", []):
        lines.append(f"- AIS T={a['steps']}: {a['chains']} chains from the {a['init']}, "
                     f"{a['evaluations']} log-joint evaluations per datapoint, HMC acceptance "
                     f"{a['acceptance']:.2f}, {a['seconds']:.1f} s")
    p = report["psis"]
    if p["applicable"]:
        lines.append(f"- PSIS k̂ at K={p['K']}: median {p['khat_median']:.3f}, max "
                     f"{p['khat_max']:.3f}, {100 * p['frac_above_0.7']:.1f}% of datapoints "
                     f"above 0.7 ({100 * p['frac_above_0.5']:.1f}% above 0.5)"
                     + (f"; not applicable for {p['not_applicable']}" if p["not_applicable"]
                        else ""))
    else:
        lines.append(f"- PSIS k̂ at K={p['K']}: not applicable ({p['reason_not_applicable']})")
    e = report["ess"]
    lines.append(f"- normalized ESS at K={e['K']}: median {e['normalized_median']:.4f}, "
                 f"mean {e['normalized_mean']:.4f}")
    r = report["recon"]
    lines.append(f"- E_q[log p(x|z)] = {r['mean']:.3f} ± {r['se']:.3f}")
    for name, kl in report["kl_per_site"].items():
        lines.append(f"- KL(q || p) at site `{name}`: {kl['mean']:.3f} ± {kl['se']:.3f} nats")
    for name, a in report["active_units"].items():
        lines.append(f"- active units of `{name}`: {a['active']} / {a['dims']} "
                     f"(Cov_x E_q[z_i|x] > {a['threshold']})")
    if "reference" in report:
        ref = report["reference"]
        lines.append(f"- {ref.get('label', 'reference')}: {ref['value']:.3f}")
    gemms = "" if report.get("precision", "float32") == "float32" else ", bf16 GEMM inputs"
    lines.append(f"- {report['seconds']:.1f} s for {n} datapoints{gemms}")
    return "\n".join(lines) + "\n"


def add_ais(report: dict, row: dict) -> dict:
    """Add an AIS row (:func:`pyrovae.evaluation.marginal.ais_row`) with its bits/dim."""
    first = report["bounds"][0]
    row = dict(row)
    if first["bits_per_dim"] is not None:  # the same rule as the IWAE rows
        levels = None if report["likelihood"] == "discrete" else int(
            report["likelihood"].split("from ")[1].split()[0])
        row["bits_per_dim"] = _bits(row["mean"], report["x_dim"], levels)
    report.setdefault("ais", []).append(row)
    return report


def write_report(report: dict, run_dir, *, note: str = "") -> list[Path]:
    """Write ``eval.json``, ``eval.md`` (the table, then ``note``) and ``k_curve.png``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "eval.json", json.dumps(report, indent=2) + "\n")
    atomic_write(run_dir / "eval.md", "# Evaluation\n\n" + markdown_table(report) + note)
    return [run_dir / "eval.json", run_dir / "eval.md",
            plot_k_curve(report, run_dir / "k_curve.png")]
