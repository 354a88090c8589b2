"""Dynamic batching on asyncio: many concurrent submits, one model call.

Each `submit` puts (item, future, deadline) in a bounded queue and awaits its
future. One dispatcher task forms batches and runs the batch function in a
worker thread (TensorFlow releases the GIL while it computes), so the event
loop keeps accepting requests during the computation, and the next batch
fills while the current one runs.

When to dispatch: as soon as a worker is free and something is queued, except
that the dispatcher waits up to `max_wait_s` for the batch to grow to the size
of the previous batch (capped at `max_batch_size`). Under a steady load of C
concurrent callers that keeps batches at C instead of splitting them as their
answers come back a little apart; at one caller the previous batch was 1, so a
lone request never waits.

Items whose deadline passed while they queued are failed with
DeadlineExceeded and never computed; items whose caller went away (cancelled
future) are dropped. An exception from the batch function reaches every
future of that batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.core.errors import DeadlineExceeded, QueueFull, ServiceError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one model call did, for metrics."""

    size: int
    queue_seconds: Sequence[float]  # per item, from submit to dispatch
    compute_seconds: float


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    deadline: float | None  # time.monotonic() seconds
    queued_at: float


class Batcher(Generic[T, R]):
    """Coalesces concurrent submits into calls of `run_batch`.

    Args:
        run_batch: maps a list of items to a list of results of the same
            length; a result that is an exception fails that item alone.
        max_batch_size: most items per call.
        max_wait_s: longest a batch waits to grow (0: never waits).
        max_queue: most items waiting; beyond it submit raises QueueFull.
        workers: model calls that may run at once (1 suits a CPU; TensorFlow
            already uses every core inside one call).
        on_batch: called on the event loop after each batch with its stats.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R | Exception]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        workers: int = 1,
        on_batch: Callable[[BatchStats], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size, max_queue and workers must be >= 1, max_wait_s >= 0")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: collections.deque[_Pending[T, R]] = collections.deque()
        self._arrived = asyncio.Event()
        self._free_workers = asyncio.Semaphore(workers)
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._running: set[asyncio.Task[None]] = set()
        self._last_batch = 1
        self._closed = False
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch(), name=name)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, item: T, deadline: float | None = None) -> R:
        """Queues `item` and returns its result once its batch is computed.

        Raises:
            QueueFull: the queue already holds `max_queue` items.
            DeadlineExceeded: `deadline` (time.monotonic()) passed before dispatch.
            Unavailable: the batcher is closed.
        """
        if self._closed:
            raise Unavailable("the server is shutting down; retry on another replica")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(
                f"server is at capacity ({self.max_queue} requests queued); retry with backoff"
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, future, deadline, time.monotonic()))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Stops taking items, computes every queued one, waits for all batches."""
        self._closed = True
        self._arrived.set()
        await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _dispatch(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._free_workers.acquire()
            await self._fill()
            batch = self._take()
            if not batch:
                self._free_workers.release()
                continue
            task = asyncio.get_running_loop().create_task(self._compute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill(self) -> None:
        """Waits up to max_wait_s while fewer items are queued than last time."""
        target = min(self._last_batch, self.max_batch_size)
        if self.max_wait_s <= 0 or len(self._queue) >= target or self._closed:
            return
        loop = asyncio.get_running_loop()
        # One timer that sets the same event arrivals set: cheaper than wait_for,
        # which would create a task per wait.
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            self._arrived.set()

        timer = loop.call_later(self.max_wait_s, expire)
        try:
            while len(self._queue) < target and not self._closed and not timed_out:
                self._arrived.clear()
                await self._arrived.wait()
        finally:
            timer.cancel()

    def _take(self) -> list[_Pending[T, R]]:
        now = time.monotonic()
        batch: list[_Pending[T, R]] = []
        while self._queue and len(batch) < self.max_batch_size:
            pending = self._queue.popleft()
            if pending.future.done():  # the caller cancelled (went away)
                continue
            if pending.deadline is not None and pending.deadline <= now:
                pending.future.set_exception(
                    DeadlineExceeded("deadline passed while the request was queued")
                )
                continue
            batch.append(pending)
        return batch

    async def _compute(self, batch: list[_Pending[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        dispatched = time.monotonic()
        self._last_batch = len(batch)
        try:
            results = await loop.run_in_executor(
                self._executor, self._run_batch, [p.item for p in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"batch function gave {len(results)} results for {len(batch)}")
        except Exception as exc:  # every caller of the batch gets the error
            if not isinstance(exc, ServiceError):
                log.exception("batch of %d failed", len(batch))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self._free_workers.release()
        compute = time.monotonic() - dispatched
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(len(batch), [dispatched - p.queued_at for p in batch], compute)
            )
