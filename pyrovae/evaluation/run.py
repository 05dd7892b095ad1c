"""Evaluate a trained run directory on its test set and write eval.json / eval.md there."""
from __future__ import annotations

from collections.abc import Sequence

from pyrovae.evaluation import report as eval_report
from pyrovae.evaluation.bounds import evaluate
from pyrovae.build import model_needs_labels, model_takes_labels
from pyrovae.evaluation.classify import label_accuracy
from pyrovae.evaluation.disentanglement import disentanglement_report
from pyrovae import distributed
from pyrovae.errors import PyroVAEError
from pyrovae.evaluation.marginal import ais_row
from pyrovae.runs import load_run


def evaluate_run(run_dir, *, num_particles: Sequence[int] = (1, 10, 100, 1000, 5000),
                 limit: int | None = None, batch_size: int = 32, device: str = "auto",
                 progress: bool = True, ais_steps: Sequence[int] = (), ais_chains: int = 16,
                 ais_batch_size: int = 100, precision: str = "float32") -> dict:
    """:func:`~pyrovae.evaluation.bounds.evaluate` on a run's test set (the first ``limit``
    datapoints), plus an AIS row per number of steps in ``ais_steps``; the report is
    written into the run and returned.  Inside a ``torch.distributed`` process group the
    datapoints are shared among the ranks and rank 0 writes.  ``precision`` is the IWAE
    bounds' GEMM precision (:func:`~pyrovae.evaluation.bounds.evaluate`)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise PyroVAEError(f"limit must be a positive integer, got {limit!r}")
    run = load_run(run_dir, device=device)
    x, y = run.data.test_x, run.data.test_y
    if limit is not None:
        x, y = x[:limit], y[:limit]
    # a conditional model bounds log p(x | y); a semi-supervised one sums y: log p(x)
    labels = y if model_needs_labels(run.config.model.model) else None
    report = evaluate(run.model, run.guide, x, labels, num_particles=num_particles,
                      batch_size=batch_size, progress=progress, levels=run.data.levels,
                      precision=precision)
    if model_takes_labels(run.config.model.model) and labels is None:
        report["accuracy"] = label_accuracy(run.guide, x, y)
    if run.data.test_factors is not None:  # known generating factors: MIG, FactorVAE score
        report["disentanglement"] = disentanglement_report(run.guide, run.data)
    for steps in ais_steps:
        eval_report.add_ais(report, ais_row(run.model, run.guide, x, labels, num_steps=steps,
                                            num_chains=ais_chains, batch_size=ais_batch_size,
                                            reference=report["per_datapoint"]["iwae"],
                                            progress=progress))
    report["run"] = str(run_dir)
    report["dataset"] = run.config.dataset
    world = distributed.current()
    report["processes"] = world.size
    if not world.is_main:  # under torchrun every rank has the report; one writes
        return report
    paths = eval_report.write_report(report, run.dir)
    print(eval_report.markdown_table(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return report
