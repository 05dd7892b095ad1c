"""Inference: objectives by name, K-particle bounds, the β handler and its schedules, and
the pair contract read from traces (``sites.py``)."""
