"""pyrovae: variational autoencoders as Pyro model/guide pairs.

The stable public API is this module's attributes; each is imported on first use, so
``import pyrovae`` stays cheap and changes no global Pyro setting::

    import pyrovae
    model, guide = pyrovae.build_pair(pyrovae.ModelConfig(), x_dim=784)
    pyrovae.fit(model, guide, pyrovae.load_dataset("mnist-sample"), pyrovae.TrainConfig())
    pyrovae.log_likelihood_bound(model, guide, x, num_particles=1000)
"""
import importlib

__version__ = "0.1.0"

_API = {
    # configs, construction, data, runs
    "ModelConfig": "pyrovae.config", "TrainConfig": "pyrovae.config",
    "RunConfig": "pyrovae.config", "build_pair": "pyrovae.build",
    "load_dataset": "pyrovae.data", "ImageData": "pyrovae.data", "binarize": "pyrovae.data",
    "class_names": "pyrovae.data", "IndependentBernoulli": "pyrovae.distributions",
    "bernoulli_log_prob": "pyrovae.distributions",
    "load_run": "pyrovae.runs", "open_run": "pyrovae.runs", "Run": "pyrovae.runs",
    "prepare_run_dir": "pyrovae.runs", "resolve_device": "pyrovae.runs",
    "register": "pyrovae.registry",
    "PyroVAEError": "pyrovae.errors", "TrainingDiverged": "pyrovae.errors",
    # inference
    "make_objective": "pyrovae.infer.objectives", "objective_syntax": "pyrovae.infer.objectives",
    "scale_latents": "pyrovae.infer.handlers", "scale_observed": "pyrovae.infer.handlers",
    "BetaSchedule": "pyrovae.infer.schedules",
    # training
    "fit": "pyrovae.train.fit", "TrainStep": "pyrovae.train.step",
    "PairLoss": "pyrovae.train.step", "make_optimizer": "pyrovae.train.step",
    # evaluation
    "evaluate": "pyrovae.evaluation.bounds", "log_likelihood_bound": "pyrovae.evaluation.bounds",
    "log_importance_weights": "pyrovae.evaluation.bounds",
    "elbo_terms": "pyrovae.evaluation.bounds", "iwae_from_log_weights": "pyrovae.evaluation.bounds",
    "particle_ladder": "pyrovae.evaluation.bounds", "evaluate_run": "pyrovae.evaluation.run",
    "write_report": "pyrovae.evaluation.report", "markdown_table": "pyrovae.evaluation.report",
    "make_plan": "pyrovae.evaluation.weights",
    # figures
    "tile_images": "pyrovae.plots.tiles", "posterior_means": "pyrovae.plots.readers",
    "decode": "pyrovae.plots.readers", "activity": "pyrovae.plots.readers",
    "INACTIVE": "pyrovae.plots.readers", "kl_per_unit": "pyrovae.plots.readers",
    "plot_traversal": "pyrovae.plots.latent", "plot_interpolation": "pyrovae.plots.latent",
    "plot_class_grid": "pyrovae.plots.latent", "plot_latent_scatter": "pyrovae.plots.latent",
    "plot_manifold": "pyrovae.plots.latent", "plot_samples": "pyrovae.plots.run",
    "plot_reconstructions": "pyrovae.plots.run",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
