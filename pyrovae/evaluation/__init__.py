"""Evaluation: per-datapoint importance weights (``weights.py``), bounds on log p(x)
(``bounds.py``), the report and its diagnostics (``report.py``), runs on disk (``run.py``)."""
