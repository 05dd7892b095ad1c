"""Disentanglement metrics for codes of data with known generative factors.

    MIG = 1/K sum_k (I(v_k; c_(1)) - I(v_k; c_(2))) / H(v_k)        (Chen et al. 2018)
    FactorVAE = accuracy of argmin_j Var_fixed-k[c_j / s_j] -> k   (Kim & Mnih 2018)

Both follow the published definitions as implemented in disentanglement_lib (Locatello et
al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations"; github.com/google-research/disentanglement_lib): MIG on codes discretized
into equal-width histogram bins (``evaluation/metrics/mig.py``), the FactorVAE score with
its pruning rule and defaults (``evaluation/metrics/factor_vae.py``). All logarithms are
natural (nats), as ``sklearn.metrics.mutual_info_score``, which disentanglement_lib calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyrovae.errors import PyroVAEError
from pyrovae.plots.readers import posterior_means


class MetricError(PyroVAEError):
    """Codes, factors or metric settings that cannot give a score; the message says why."""


@dataclass(frozen=True)
class MIGResult:
    """:param score: mean of ``per_factor`` over the factors that vary.
    :param per_factor: normalized gap per factor; ``nan`` for a skipped (constant) factor.
    :param mutual_information: ``[L, K]`` I(c_j; v_k) in nats.
    :param entropy: ``[K]`` H(v_k) in nats.
    :param skipped_factors: factors constant over the sample (H = 0: the gap is 0/0)."""
    score: float
    per_factor: tuple
    mutual_information: torch.Tensor
    entropy: torch.Tensor
    skipped_factors: tuple


def histogram_discretize(codes: torch.Tensor, num_bins: int = 20) -> torch.Tensor:
    """Each column into ``num_bins`` equal-width bins over its [min, max], the maximum in
    the last bin: ``np.digitize(c, np.histogram(c, num_bins)[1][:-1]) - 1``, as
    disentanglement_lib's ``histogram_discretize``. A constant column goes to bin 0.

    :param codes: float ``[N, L]``.
    :returns: LongTensor ``[N, L]`` of bins in ``[0, num_bins)``.
    """
    c = codes.double()
    lo, hi = c.min(0).values, c.max(0).values
    out = torch.zeros(c.shape, dtype=torch.long)
    for j in range(c.shape[1]):
        if hi[j] > lo[j]:
            # numpy's linspace: start + i * step with the last edge set exactly to stop.
            edges = lo[j] + torch.arange(num_bins + 1, dtype=torch.float64) * (
                (hi[j] - lo[j]) / num_bins)
            edges[-1] = hi[j]
            out[:, j] = torch.searchsorted(edges[:-1].contiguous(), c[:, j].contiguous(),
                                           right=True) - 1
    return out


def _labels(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    values, inverse = torch.unique(x, return_inverse=True)
    return inverse.reshape(-1), len(values)


def discrete_entropy(labels: torch.Tensor) -> float:
    """H(a) = -sum_a p(a) log p(a) of the empirical distribution of integer labels, nats."""
    a, _ = _labels(torch.as_tensor(labels))
    p = torch.bincount(a).double() / a.numel()
    return float(-(p * p.log()).sum())


def discrete_mutual_info(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(a; b) = sum_ab p(a, b) log(p(a, b) / (p(a) p(b))) of two integer label vectors,
    nats (the plug-in estimate, as ``sklearn.metrics.mutual_info_score``)."""
    a, na = _labels(torch.as_tensor(a))
    b, nb = _labels(torch.as_tensor(b))
    if a.numel() != b.numel():
        raise MetricError(f"label vectors differ in length ({a.numel()} vs {b.numel()})")
    n = a.numel()
    joint = torch.bincount(a * nb + b, minlength=na * nb).view(na, nb).double()
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    mi = (joint[nz] / n * torch.log(joint[nz] * n / (pa * pb).expand_as(joint)[nz])).sum()
    return max(float(mi), 0.0)  # rounding can leave -1e-17 for independent labels


def _check_codes_factors(codes, factors) -> tuple[torch.Tensor, torch.Tensor]:
    codes, factors = torch.as_tensor(codes), torch.as_tensor(factors)
    if codes.dim() != 2 or not codes.dtype.is_floating_point:
        raise MetricError(f"codes must be a float [N, L] tensor (posterior means); got "
                          f"{codes.dtype} of shape {tuple(codes.shape)}")
    if factors.dim() != 2 or factors.dtype.is_floating_point or factors.dtype == torch.bool:
        raise MetricError(f"factors must be an integer [N, K] tensor of factor classes; got "
                          f"{factors.dtype} of shape {tuple(factors.shape)} (pass "
                          f"grid.factors(indices), not factor values)")
    if codes.shape[0] != factors.shape[0]:
        raise MetricError(f"codes and factors must have one row per datapoint; got "
                          f"{codes.shape[0]} codes and {factors.shape[0]} factor rows")
    if not torch.isfinite(codes).all():
        raise MetricError("codes contain nan or inf; check the encoder's output")
    return codes.detach().cpu(), factors.cpu()


def mig(codes, factors, *, num_bins: int = 20) -> MIGResult:
    """Mutual Information Gap (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of
    Disentanglement in VAEs"), discretized as in Locatello et al. 2019.

        MIG = 1/K sum_k (I(v_k; c_(1)) - I(v_k; c_(2))) / H(v_k),

    with c_(1), c_(2) the code dims of largest and second largest I with factor v_k.
    Factors constant over the sample are skipped (their gap is 0/0): listed in
    ``skipped_factors``, ``nan`` in ``per_factor``, left out of the mean.

    :param codes: float ``[N, L]``, L >= 2 (the gap needs a runner-up); posterior means.
    :param factors: integer ``[N, K]`` factor classes (any integer labels).
    :param num_bins: equal-width bins per code dim (20 in disentanglement_lib).
    :returns: :class:`MIGResult`.
    """
    codes, factors = _check_codes_factors(codes, factors)
    if codes.shape[1] < 2:
        raise MetricError(f"MIG needs at least 2 code dims (the gap to the runner-up); "
                          f"got {codes.shape[1]}")
    if not isinstance(num_bins, int) or num_bins < 2:
        raise MetricError(f"num_bins must be an integer >= 2; got {num_bins!r}")
    binned = histogram_discretize(codes, num_bins)
    L, K = codes.shape[1], factors.shape[1]
    mi = torch.tensor([[discrete_mutual_info(binned[:, j], factors[:, k]) for k in range(K)]
                       for j in range(L)], dtype=torch.float64).view(L, K)
    entropy = torch.tensor([discrete_entropy(factors[:, k]) for k in range(K)],
                           dtype=torch.float64)
    top2 = mi.topk(2, dim=0).values
    per_factor, skipped = [], []
    for k in range(K):
        if entropy[k] <= 0:
            per_factor.append(math.nan)
            skipped.append(k)
        else:
            per_factor.append(float((top2[0, k] - top2[1, k]) / entropy[k]))
    kept = [g for g in per_factor if not math.isnan(g)]
    if not kept:
        raise MetricError("every factor is constant over these rows; MIG needs data where "
                          "at least one factor varies")
    return MIGResult(sum(kept) / len(kept), tuple(per_factor), mi, entropy, tuple(skipped))


@dataclass(frozen=True)
class FactorVAEResult:
    """:param score: accuracy of the majority-vote classifier on the evaluation votes.
    :param train_accuracy: its accuracy on the votes it was built from.
    :param active_dims: code dims kept (empirical std >= ``prune_threshold``).
    :param classifier: the factor each active dim votes for (argmax of ``train_votes``).
    :param train_votes: ``[K, len(active_dims)]`` vote counts (factor, argmin dim)."""
    score: float
    train_accuracy: float
    active_dims: tuple
    classifier: tuple
    train_votes: torch.Tensor


def sample_factors(factor_sizes, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` independent uniform draws of every factor: LongTensor ``[n, K]``."""
    return torch.stack([torch.randint(int(s), (n,), generator=generator)
                        for s in factor_sizes], 1)


@torch.no_grad()
def encode_factors(encode, source, factors: torch.Tensor, *, chunk: int = 4096):
    """``encode(source.render(f))`` in chunks of rows: float64 CPU ``[N, L]``."""
    parts = []
    for start in range(0, factors.shape[0], chunk):
        z = torch.as_tensor(encode(source.render(factors[start:start + chunk])))
        if z.dim() != 2 or z.shape[0] != min(chunk, factors.shape[0] - start):
            raise MetricError(f"encode must map [N, D] observations to [N, L] codes; got "
                              f"shape {tuple(z.shape)}")
        parts.append(z.detach().double().cpu())
    return torch.cat(parts)


def _votes(encode, source, num_votes, batch_size, scale, active, generator, chunk_votes):
    """Vote counts ``[K, len(active)]``: one (fixed factor, argmin dim) pair per vote."""
    K = len(source.factor_sizes)
    counts = torch.zeros(K * len(active), dtype=torch.long)
    for start in range(0, num_votes, chunk_votes):
        v = min(chunk_votes, num_votes - start)
        k = torch.randint(K, (v,), generator=generator)
        f = sample_factors(source.factor_sizes, v * batch_size, generator).view(v, batch_size, K)
        rows = torch.arange(v)
        f[rows, :, k] = f[rows, 0, k].unsqueeze(1)  # factor k shares the batch's first value
        z = encode_factors(encode, source, f.view(-1, K)).view(v, batch_size, -1)
        local = z[:, :, active].var(dim=1) / scale[active] ** 2  # Var of c_j / s_j
        counts += torch.bincount(k * len(active) + local.argmin(1), minlength=counts.numel())
    return counts.view(K, len(active))


def factorvae_score(encode, source, *, num_train_votes: int = 10000,
                    num_eval_votes: int = 5000, batch_size: int = 64,
                    num_variance_estimate: int = 10000, prune_threshold: float = 0.05,
                    generator: torch.Generator | None = None,
                    votes_per_call: int = 64) -> FactorVAEResult:
    """FactorVAE disentanglement metric (Kim & Mnih 2018, "Disentangling by Factorising").

        vote = (k, argmin_j Var_{x ~ data | v_k fixed}[c_j(x) / s_j]),  score = accuracy
        of the dim -> most-voted-factor classifier on fresh votes,

    with s_j the std of code dim j over ``num_variance_estimate`` random datapoints. Dims
    with s_j < ``prune_threshold`` are dropped first (collapsed to the prior); with none
    left the score is 0, as in disentanglement_lib. Defaults are the paper's and
    disentanglement_lib's (batch 64, 10,000 / 5,000 votes, 10,000 points, threshold 0.05).

    :param encode: ``observations [N, D] -> codes [N, L]`` (posterior means); called under
        ``torch.no_grad`` with CPU observations, so move them to the model's device inside.
    :param source: the data's ground truth: ``factor_sizes`` (a tuple, every combination
        valid, drawn uniformly) and ``render(factors [N, K] long) -> observations [N, D]``,
        e.g. a :class:`sprites.SpriteGrid`.
    :param generator: CPU generator for every random draw (default: seeded with 0).
    :param votes_per_call: votes whose ``batch_size`` observations go to ``encode`` at once.
    :returns: :class:`FactorVAEResult`.
    """
    sizes = tuple(getattr(source, "factor_sizes", ()))
    if not sizes or not hasattr(source, "render") or min(sizes) < 1:
        raise MetricError("source must have factor_sizes (positive ints) and render(factors)"
                          "; pass e.g. a sprites.SpriteGrid")
    for name, value, low in (("num_train_votes", num_train_votes, 1),
                             ("num_eval_votes", num_eval_votes, 1),
                             ("batch_size", batch_size, 2),
                             ("num_variance_estimate", num_variance_estimate, 2),
                             ("votes_per_call", votes_per_call, 1)):
        if not isinstance(value, int) or value < low:
            raise MetricError(f"{name} must be an integer >= {low}; got {value!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    z = encode_factors(encode, source, sample_factors(sizes, num_variance_estimate, g))
    scale = z.std(dim=0)
    active = torch.nonzero(scale >= prune_threshold).flatten()
    if active.numel() == 0:
        empty = torch.zeros(len(sizes), 0, dtype=torch.long)
        return FactorVAEResult(0.0, 0.0, (), (), empty)
    train = _votes(encode, source, num_train_votes, batch_size, scale, active, g,
                   votes_per_call)
    classifier = train.argmax(0)  # dims never voted for map to factor 0 and score nothing
    cols = torch.arange(active.numel())
    evals = _votes(encode, source, num_eval_votes, batch_size, scale, active, g,
                   votes_per_call)
    return FactorVAEResult(float(evals[classifier, cols].sum()) / num_eval_votes,
                           float(train[classifier, cols].sum()) / num_train_votes,
                           tuple(active.tolist()), tuple(classifier.tolist()), train)


def disentanglement_report(guide, data, *, num_votes: int = 2000, seed: int = 0) -> dict:
    """MIG and the FactorVAE score of a guide's posterior means on a dataset with known
    factors (:class:`~pyrovae.data.ImageData` with ``test_factors`` and ``factor_source``)."""
    if data.test_factors is None or data.factor_source is None:
        raise MetricError(f"dataset {data.name!r} has no known factors; MIG and the FactorVAE "
                          f"score need one such as sprites")
    device = data.test_x.device
    codes = posterior_means(guide, data.test_x).double().cpu()
    result = mig(codes, data.test_factors.cpu())
    fvae = factorvae_score(lambda x: posterior_means(guide, x.to(device)), data.factor_source,
                           num_train_votes=num_votes, num_eval_votes=num_votes,
                           generator=torch.Generator().manual_seed(seed))
    names = data.factor_names
    return {"mig": result.score,
            "mig_per_factor": dict(zip(names, result.per_factor)),
            "factorvae": fvae.score, "factorvae_active_dims": len(fvae.active_dims),
            "factorvae_votes": num_votes,
            "dim_factor": [names[k] for k in fvae.classifier]}
