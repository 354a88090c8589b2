"""`model.step_watchdog`: one thread bounds every step that waits on other workers."""

from __future__ import annotations

import threading

import pytest

from model.step_watchdog import StepWatchdog


class Abort:
    """Records what the watchdog said and wakes the step it aborted."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.called = threading.Event()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self.called.set()


def test_a_step_that_outlasts_the_timeout_is_aborted_once_and_named() -> None:
    abort = Abort()
    with StepWatchdog(0.05, abort) as watchdog:
        for _ in range(200):  # steps in time: none fires
            with watchdog.step("a quick step"):
                pass
        with watchdog.step("a training step"):
            # Stands for a collective waiting on a stuck peer: abort wakes it.
            assert abort.called.wait(timeout=30)
    assert abort.messages == [
        "a training step waited more than --collective-timeout 0.05 s for the other workers"
    ]
    assert watchdog.fired == abort.messages[0]


def test_the_whole_run_uses_one_thread() -> None:
    before = threading.active_count()
    abort = Abort()
    with StepWatchdog(60, abort) as watchdog:
        for _ in range(500):
            with watchdog.step("a training step"):
                assert threading.active_count() == before + 1
    assert threading.active_count() == before  # stopped and joined
    assert abort.messages == []


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="step timeout must be positive, got 0"):
        StepWatchdog(0, Abort())
