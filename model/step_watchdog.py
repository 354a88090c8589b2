"""One thread that fails a step which waits on the other workers for too long.

`--collective-timeout` used to be TensorFlow's own collective timeout
(`CommunicationOptions(timeout_seconds=...)`). TensorFlow implements that
timeout with a new detached OS thread for every collective op, which sleeps
for the whole timeout before it checks whether the op finished
(`BaseCollectiveExecutor::ExecuteAsync` -> `Env::SchedClosureAfter`, which
spawns a `std::thread`; TensorFlow's own TODO says "share the timeout watchdog
thread among collectives"). A training step of a batch-normalised VGG runs
about two dozen collectives (one all-reduce per synchronised batch-norm layer
forward and backward, the gradients, the loss and accuracy), so at 300 s each
worker gained about 500 threads a second and died after a few epochs
(`std::system_error: Resource temporarily unavailable`).

`StepWatchdog` keeps the flag's promise with one thread for the whole run:
every call that runs collectives is wrapped in `watchdog.step(...)`, and when
one outlasts the timeout the watchdog calls `abort` (in training, TensorFlow's
`abort_collective_ops`), which fails the waiting collective with
DEADLINE_EXCEEDED, exactly as TensorFlow's per-op timeout did.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class StepWatchdog:
    """Calls `abort(message)` once when a step outlasts `timeout_s` seconds.

    Args:
        timeout_s: how long one step may take, in seconds (positive).
        abort: called from the watchdog's thread with a message naming the
            step and the timeout; it should make the waiting step fail.

    Use as a context manager (it starts and stops its one thread):

        with StepWatchdog(300, abort) as watchdog:
            with watchdog.step("training step"):
                train_step()
    """

    def __init__(self, timeout_s: float, abort: Callable[[str], None]) -> None:
        if timeout_s <= 0:
            raise ValueError(f"the step timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._abort = abort
        self._changed = threading.Condition()
        self._step: tuple[str, float] | None = None  # (what, deadline)
        self._closed = False
        self.fired: str | None = None  # the message `abort` got, once it fired
        self._thread = threading.Thread(target=self._watch, name="step-watchdog", daemon=True)

    def __enter__(self) -> StepWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Bounds the body's run time by the timeout; `what` names it in the message."""
        with self._changed:
            self._step = (what, time.monotonic() + self.timeout_s)
            self._changed.notify()
        try:
            yield
        finally:
            with self._changed:
                self._step = None
                self._changed.notify()

    def _watch(self) -> None:
        with self._changed:
            while not self._closed and self.fired is None:
                if self._step is None:
                    self._changed.wait()
                    continue
                what, deadline = self._step
                left = deadline - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                self.fired = (
                    f"{what} waited more than --collective-timeout {self.timeout_s:g} s "
                    "for the other workers"
                )
                # Outside the lock: `abort` wakes the step, which then leaves `step()`.
                self._changed.release()
                try:
                    self._abort(self.fired)
                finally:
                    self._changed.acquire()
