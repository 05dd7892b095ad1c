"""Figures: one tiler (``tiles.py``), readers of a pair (``readers.py``), run figures
(``run.py``) and latent-space figures (``latent.py``)."""
