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

_API = {  # module -> the public names it holds
    "pyrovae.config": ("ModelConfig", "TrainConfig", "RunConfig"),
    "pyrovae.build": ("build_pair",),
    "pyrovae.data": ("load_dataset", "ImageData", "binarize", "class_names", "with_labels"),
    "pyrovae.distributions": ("IndependentBernoulli", "DiscretizedLogistic", "bernoulli_log_prob"),
    "pyrovae.runs": ("load_run", "open_run", "Run", "prepare_run_dir", "resolve_device"),
    "pyrovae.registry": ("register",),
    "pyrovae.machine": ("machine_info", "cpu_model"),
    "pyrovae.gemm": ("cpu_gemm", "set_cpu_gemm"),
    "pyrovae.errors": ("PyroVAEError", "TrainingDiverged", "TrainingInterrupted"),
    "pyrovae.infer.objectives": ("make_objective", "objective_syntax"),
    "pyrovae.infer.handlers": ("scale_latents", "scale_observed", "classify_labels",
                               "label_likelihood"),
    "pyrovae.infer.schedules": ("BetaSchedule",),
    "pyrovae.train.fit": ("fit",),
    "pyrovae.train.step": ("TrainStep", "PairLoss", "make_optimizer"),
    "pyrovae.evaluation.bounds": ("evaluate", "log_likelihood_bound", "log_importance_weights",
                                  "elbo_terms", "iwae_from_log_weights", "iwae_estimate",
                                  "particle_ladder"),
    "pyrovae.evaluation.run": ("evaluate_run",),
    "pyrovae.evaluation.classify": ("label_accuracy", "predict_labels"),
    "pyrovae.evaluation.disentanglement": ("mig", "factorvae_score", "disentanglement_report"),
    "pyrovae.sprites": ("SpriteGrid", "reduced_grid"),
    "pyrovae.evaluation.marginal": ("ais_log_likelihood", "bdmc", "ais_row", "AISEstimate"),
    "pyrovae.evaluation.report": ("write_report", "markdown_table"),
    "pyrovae.evaluation.weights": ("make_plan",),
    "pyrovae.plots.tiles": ("tile_images", "save_figure"),
    "pyrovae.plots.readers": ("posterior_means", "decode", "activity", "INACTIVE",
                              "kl_per_unit", "observation_mean", "prior_draws"),
    "pyrovae.plots.latent": ("plot_traversal", "plot_interpolation", "plot_class_grid",
                             "plot_latent_scatter", "plot_manifold", "plot_style_transfer"),
    "pyrovae.plots.run": ("plot_samples", "plot_reconstructions"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
