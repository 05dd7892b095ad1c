"""Training: the one loop for every Pyro pair (``fit.py``), its step (``step.py``), data
parallelism (with :mod:`pyrovae.distributed`) and what loops keep between epochs (``state.py``)."""
