"""The batcher alone: plain asyncio, no gRPC, no model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batcher import Batcher, BatchStats
from service.errors import DeadlineExceeded, InvalidImage, QueueFull, Unavailable


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class Recorder:
    """A batch function that doubles numbers, fails on negatives, and can be held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.release.wait(timeout=10)
        self.batches.append(list(items))
        return [InvalidImage(f"bad {i}") if i < 0 else 2 * i for i in items]


def test_concurrent_submits_share_batches_and_get_their_own_results() -> None:
    async def main() -> tuple[list[int], Recorder, list[BatchStats]]:
        recorder = Recorder()
        stats: list[BatchStats] = []
        batcher = Batcher(recorder, max_batch_size=8, max_wait_s=0.05, on_batch=stats.append)
        recorder.release.clear()  # hold the first batch so the rest queue up behind it
        first = asyncio.create_task(batcher.submit(100))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(20)]
        await asyncio.sleep(0.01)
        recorder.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results, recorder, stats

    results, recorder, stats = run(main())
    assert results == [200, *[2 * i for i in range(20)]]
    assert max(len(b) for b in recorder.batches) == 8
    assert sum(len(b) for b in recorder.batches) == 21
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
        running = asyncio.create_task(batcher.submit(1))  # taken by the (held) worker
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="2 requests queued"):
            await batcher.submit(4)
        recorder.release.set()
        assert await asyncio.gather(running, *queued) == [2, 4, 6]
        await batcher.close()

    run(main())


def test_expired_deadline_is_dropped_and_never_computed() -> None:
    async def main() -> Recorder:
        recorder = Recorder()
        recorder.release.clear()
        batcher = Batcher(recorder, max_batch_size=4, max_wait_s=0)
        holder = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.01)
        late = asyncio.create_task(batcher.submit(7, deadline=time.monotonic() + 0.01))
        await asyncio.sleep(0.05)
        recorder.release.set()
        with pytest.raises(DeadlineExceeded):
            await late
        assert await holder == 2
        await batcher.close()
        return recorder

    recorder = run(main())
    assert 7 not in [i for batch in recorder.batches for i in batch]


def test_zero_wait_never_delays_a_lone_request() -> None:
    async def main() -> float:
        batcher = Batcher(Recorder(), max_batch_size=32, max_wait_s=0)
        started = time.perf_counter()
        await batcher.submit(1)
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    assert run(main()) < 1.0


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
