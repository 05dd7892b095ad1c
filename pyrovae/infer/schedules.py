"""β over training: pure functions of the progress (in epochs, fractional), built once.

``BetaSchedule.from_config(train_config)`` validates the schedule's name and numbers when
it is built; calling it gives β at a point of training, which the trainer hands to the β
handler (:func:`pyrovae.infer.handlers.scale_latents`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pyrovae.errors import PyroVAEError


def constant(progress: float, *, beta: float, **_) -> float:
    """beta(t) = beta."""
    return beta


def linear_warmup(progress: float, *, beta: float, warmup_epochs: float, **_) -> float:
    """KL annealing (Bowman et al. 2016): beta(t) = beta * min(1, t / warmup_epochs)."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, progress / warmup_epochs)


def cyclical(progress: float, *, beta: float, epochs: float, cycles: int,
             ratio: float = 0.5, **_) -> float:
    """Cyclical annealing (Fu et al. 2019): ``cycles`` periods of length T = epochs / cycles;
    within each, beta(t) = beta * min(1, tau / ratio) with tau = (t mod T) / T, i.e. a
    linear rise over the first ``ratio`` of the period, then held at ``beta``."""
    period = epochs / cycles
    phase = (progress % period) / period
    return beta * min(1.0, phase / ratio)


SCHEDULES = {"constant": constant, "linear": linear_warmup, "cyclical": cyclical}


@dataclass(frozen=True)
class BetaSchedule:
    """``schedule(progress) -> β``, validated when built."""

    name: str = "constant"
    beta: float = 1.0
    warmup_epochs: float = 10.0
    epochs: int = 1
    cycles: int = 4

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise PyroVAEError(f"unknown beta schedule {self.name!r}; valid: "
                               f"{', '.join(SCHEDULES)}")
        if not (self.beta >= 0) or math.isinf(self.beta):
            raise PyroVAEError(f"--beta must be finite and >= 0, got {self.beta}")
        if self.name == "cyclical" and (self.cycles < 1 or self.epochs < 1):
            raise PyroVAEError(f"the cyclical schedule needs --cycles >= 1 and --epochs >= 1, "
                               f"got cycles={self.cycles}, epochs={self.epochs}")

    @classmethod
    def from_config(cls, cfg) -> "BetaSchedule":
        """The schedule of a :class:`~pyrovae.config.TrainConfig`."""
        return cls(cfg.beta_schedule, cfg.beta, cfg.warmup_epochs, cfg.epochs, cfg.cycles)

    def __call__(self, progress: float) -> float:
        return SCHEDULES[self.name](progress, beta=self.beta, warmup_epochs=self.warmup_epochs,
                                    epochs=self.epochs, cycles=self.cycles)
