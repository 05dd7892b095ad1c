"""β schedules: values at known points and clear errors for bad settings."""
import pytest

from pyrovae.config import TrainConfig
from pyrovae.errors import PyroVAEError
from pyrovae.infer.schedules import BetaSchedule


def cfg(schedule, **kw):
    return TrainConfig(beta_schedule=schedule, **{"beta": 2.0, **kw})


@pytest.mark.parametrize("schedule, kw, points", [
    ("constant", {}, [(0, 2.0), (0.3, 2.0), (99, 2.0)]),
    ("linear", {"warmup_epochs": 4}, [(0, 0.0), (1, 0.5), (3, 1.5), (4, 2.0), (10, 2.0)]),
    ("linear", {"warmup_epochs": 0}, [(0, 2.0), (5, 2.0)]),
    # 8 epochs, 4 cycles: period 2 epochs, rise over the first half of each
    ("cyclical", {"epochs": 8, "cycles": 4},
     [(0, 0.0), (0.5, 1.0), (1.0, 2.0), (1.5, 2.0), (2.0, 0.0), (2.25, 0.5), (7.99, 2.0)]),
])
def test_schedule_values(schedule, kw, points):
    c = cfg(schedule, **kw)
    for progress, beta in points:
        assert BetaSchedule.from_config(c)(progress) == pytest.approx(beta), (schedule, progress)


@pytest.mark.parametrize("kw, message", [
    ({"name": "cosine"}, "unknown beta schedule 'cosine'; valid: constant"),
    ({"beta": -1.0}, "--beta must be finite"),
    ({"beta": float("nan")}, "--beta must be finite"),
    ({"name": "cyclical", "cycles": 0}, "--cycles >= 1"),
])
def test_bad_schedule_settings_are_clear_errors(kw, message):
    with pytest.raises(PyroVAEError, match=message):
        BetaSchedule(**kw)


@pytest.mark.parametrize("kw, message", [
    ({"beta_schedule": "cosine"}, r"beta_schedule \(--beta-schedule\) = 'cosine'.*one of constant"),
    ({"beta": -1.0}, r"beta \(--beta\) = -1.0 .*>= 0"),
    ({"beta_schedule": "cyclical", "cycles": 0}, r"cycles \(--cycles\) = 0 .*>= 1"),
])
def test_train_config_checks_its_schedule_when_built(kw, message):
    with pytest.raises(PyroVAEError, match=message):
        TrainConfig(**kw)
