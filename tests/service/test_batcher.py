"""The batcher alone: plain asyncio, no gRPC, no model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.core.batcher import Batcher, BatchStats
from service.core.errors import DeadlineExceeded, InvalidImage, QueueFull, Unavailable


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class Recorder:
    """A batch function that doubles numbers, fails on negatives, and can be held.

    `entered` is set when a batch starts; while `release` is clear the batch
    waits for it. Tests wait on these events, never on the clock.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the batch")
        self.batches.append(list(items))
        return [InvalidImage(f"bad {i}") if i < 0 else 2 * i for i in items]

    async def running(self) -> None:
        """Returns once a batch has started (it may be held)."""
        if not await asyncio.to_thread(self.entered.wait, 30):
            raise TimeoutError("no batch started")


def test_concurrent_submits_share_batches_and_get_their_own_results() -> None:
    async def main() -> tuple[list[int], Recorder, list[BatchStats]]:
        recorder = Recorder()
        stats: list[BatchStats] = []
        batcher = Batcher(recorder, max_batch_size=8, max_wait_s=0.05, on_batch=stats.append)
        recorder.release.clear()  # hold the first batch so the rest queue up behind it
        first = asyncio.create_task(batcher.submit(100))
        await recorder.running()
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(20)]
        await asyncio.sleep(0)  # let every submit reach the queue
        assert batcher.queue_depth == 20
        recorder.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results, recorder, stats

    results, recorder, stats = run(main())
    assert results == [200, *[2 * i for i in range(20)]]
    assert [len(b) for b in recorder.batches] == [1, 8, 8, 4]
    assert [s.size for s in stats] == [len(b) for b in recorder.batches]


def test_a_failing_item_fails_alone() -> None:
    async def main() -> list[object]:
        batcher = Batcher(Recorder(), max_batch_size=4, max_wait_s=0.01)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True
        )
        await batcher.close()
        return results

    one, bad, two = run(main())
    assert (one, two) == (2, 4)
    assert isinstance(bad, InvalidImage)


def test_an_error_of_the_whole_batch_reaches_every_caller() -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("model crashed")

    async def main() -> list[object]:
        batcher = Batcher(broken, max_batch_size=4, max_wait_s=0.01)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        await batcher.close()
        return results

    assert all(isinstance(r, RuntimeError) for r in run(main()))


def test_full_queue_refuses_at_once() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.clear()
        batcher = Batcher(recorder, max_batch_size=1, max_wait_s=0, max_queue=2)
        running = asyncio.create_task(batcher.submit(1))
        await recorder.running()  # taken by the (held) worker: no longer queued
        queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        assert batcher.queue_depth == 2
        with pytest.raises(QueueFull, match="2 requests queued"):
            await batcher.submit(4)
        recorder.release.set()
        assert await asyncio.gather(running, *queued) == [2, 4, 6]
        assert batcher.queue_depth == 0
        await batcher.close()

    run(main())


def test_expired_deadline_is_dropped_and_never_computed() -> None:
    async def main() -> Recorder:
        recorder = Recorder()
        recorder.release.clear()
        batcher = Batcher(recorder, max_batch_size=4, max_wait_s=0)
        holder = asyncio.create_task(batcher.submit(1))
        await recorder.running()
        # Queued behind the held batch; its deadline passes while it waits there.
        late = asyncio.create_task(batcher.submit(7, deadline=time.monotonic()))
        on_time = asyncio.create_task(batcher.submit(8, deadline=time.monotonic() + 3600))
        await asyncio.sleep(0)
        recorder.release.set()
        with pytest.raises(DeadlineExceeded, match="deadline passed while the request was queued"):
            await late
        assert (await holder, await on_time) == (2, 16)
        await batcher.close()
        return recorder

    recorder = run(main())
    assert recorder.batches == [[1], [8]]


@pytest.mark.parametrize("previous", [0, 1])
def test_a_lone_request_never_waits_for_company(previous: int) -> None:
    """With an hour of max_wait, a lone caller is answered at once (or the test times out)."""

    async def main() -> list[int]:
        recorder = Recorder()
        batcher = Batcher(recorder, max_batch_size=32, max_wait_s=3600)
        for i in range(previous):  # a lone request after lone requests, too
            await batcher.submit(i)
        result = await asyncio.wait_for(batcher.submit(21), timeout=60)
        await batcher.close()
        return [result, *[len(b) for b in recorder.batches]]

    assert run(main()) == [42, *[1] * (previous + 1)]


def test_a_batch_waits_to_grow_to_the_size_of_the_last_one() -> None:
    """After a batch of 4, the next waits (up to max_wait) until 4 are queued again."""

    async def main() -> list[list[int]]:
        recorder = Recorder()
        batcher = Batcher(recorder, max_batch_size=8, max_wait_s=3600)
        recorder.release.clear()
        held = asyncio.create_task(batcher.submit(0))
        await recorder.running()
        first = [asyncio.create_task(batcher.submit(i)) for i in (1, 2, 3, 4)]
        await asyncio.sleep(0)
        recorder.release.set()
        await asyncio.gather(held, *first)  # batches [0], [1, 2, 3, 4]
        second = [asyncio.create_task(batcher.submit(i)) for i in (5, 6)]
        for _ in range(10):  # give the dispatcher every chance to take [5, 6] early
            await asyncio.sleep(0)
        second += [asyncio.create_task(batcher.submit(i)) for i in (7, 8)]
        await asyncio.wait_for(asyncio.gather(*second), timeout=60)
        await batcher.close()
        return recorder.batches

    assert run(main()) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]


def test_close_finishes_queued_work_then_refuses() -> None:
    async def main() -> None:
        batcher = Batcher(Recorder(), max_batch_size=2, max_wait_s=0.001)
        pending = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.close()
        assert [p.result() for p in pending] == [0, 2, 4, 6, 8]
        with pytest.raises(Unavailable):
            await batcher.submit(1)

    run(main())


def test_invalid_settings_are_refused() -> None:
    async def main() -> None:
        with pytest.raises(ValueError):
            Batcher(Recorder(), max_batch_size=0)

    run(main())
