"""`model.optim`: the one optimizer and schedule both training paths use."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.optim import optimizer_for, schedule_for
from model.plan import Plan


def plan(warmup_steps: int, learning_rate: float = 1e-3) -> Plan:
    return Plan(
        batch_size=8,
        epochs=10,
        steps_per_epoch=20,  # 200 steps in all
        learning_rate=learning_rate,
        warmup_steps=warmup_steps,
        patience_epochs=3,
        batch_norm_momentum=0.9,
        flip=False,
        shift=0.0,
        class_weights=None,
    )


def rates(schedule: keras.optimizers.schedules.LearningRateSchedule, steps: list[int]) -> list:
    return [float(schedule(step)) for step in steps]


def test_warm_up_rises_linearly_to_the_peak_then_cosine_decays_to_one_percent() -> None:
    schedule = schedule_for(plan(warmup_steps=10))
    assert rates(schedule, [0, 5, 10]) == pytest.approx([0.0, 5e-4, 1e-3])
    # Half-way through the decay: the cosine's midpoint between the peak and 1% of it.
    assert float(schedule(105)) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-4)
    assert float(schedule(200)) == pytest.approx(1e-5)
    assert np.all(np.diff(rates(schedule, list(range(10, 201, 10)))) < 0)


def test_without_warm_up_the_schedule_starts_at_the_peak() -> None:
    schedule = schedule_for(plan(warmup_steps=0, learning_rate=0.01))
    assert rates(schedule, [0, 200]) == pytest.approx([0.01, 1e-4])


def test_the_optimizer_is_adam_on_the_plans_schedule() -> None:
    optimizer = optimizer_for(plan(warmup_steps=10))
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(optimizer.learning_rate) == pytest.approx(0.0)  # step 0 of the warm-up
    optimizer.iterations.assign(10)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)
