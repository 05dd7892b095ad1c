"""pyrovae: variational autoencoders as Pyro model/guide pairs.

Parameters are module-local (each PyroModule owns its parameters), so several models
can live in one script without sharing Pyro's global parameter store.
"""
import pyro

pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"
