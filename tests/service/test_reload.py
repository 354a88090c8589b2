"""Model versions without downtime: hot reload, refusal of broken versions, memory."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from model.train import TrainResult
from tests.helpers import assert_answered_by, encode, random_pixels, wait_for
from tests.service.helpers import RunningServer, publish, scrape, settings_for


def publish_broken(model_dir: Path, version: int) -> None:
    staging = model_dir / f".staging-{version}"
    staging.mkdir()
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    staging.rename(model_dir / str(version))


@pytest.fixture
def watched(older_tiny_model: TrainResult, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    """Serves version 1 (older_tiny_model); tests publish tiny_model, other weights, as 2."""
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    publish(older_tiny_model.version_dir, model_dir, 1)
    running = RunningServer(settings_for(model_dir, poll_interval_s=0.1))
    running.load()
    yield running, model_dir
    running.stop()


def test_new_version_takes_over_without_failing_a_request(
    watched: tuple[RunningServer, Path], tiny_model: TrainResult
) -> None:
    running, model_dir = watched
    image = encode(random_pixels(16, 16))
    # One list per caller: each caller's calls are sequential, so its answers
    # are in the order the server routed them.
    seen: list[list[int | str]] = [[] for _ in range(4)]
    stop = threading.Event()
    answered = threading.Condition()

    def traffic(mine: list[int | str]) -> None:
        with running.client(retries=0) as client:
            while not stop.is_set():
                try:
                    outcome: int | str = client.classify(image).model_version
                except grpc.RpcError as exc:
                    outcome = exc.code().name
                with answered:
                    mine.append(outcome)
                    answered.notify_all()

    def each_caller_answered(at_least: list[int]) -> None:
        with answered:
            reached = answered.wait_for(
                lambda: all(len(m) >= n for m, n in zip(seen, at_least, strict=True)), 60
            )
        assert reached, [len(m) for m in seen]

    with running.client() as client:
        workers = [threading.Thread(target=traffic, args=(mine,)) for mine in seen]
        for worker in workers:
            worker.start()
        each_caller_answered([5] * len(seen))
        publish(tiny_model.version_dir, model_dir, 2)
        wait_for(lambda: client.classify(image).model_version == 2, 60, "version 2 to answer")
        # Every poll is a real call; version 1 is unloaded once metadata lists 2 alone.
        wait_for(lambda: list(client.metadata().versions) == [2], 60, "version 1 to go")
        marks = [len(mine) for mine in seen]
        each_caller_answered([mark + 5 for mark in marks])
        # The new weights answer, not only a new number.
        answer = client.classify(image, probabilities=True)
        assert_answered_by(answer.probabilities, model_dir, [image], version=2)
        stop.set()
        for worker in workers:
            worker.join()
        assert client.health() == "SERVING"
    for mine, mark in zip(seen, marks, strict=True):
        assert all(isinstance(v, int) for v in mine), [v for v in mine if not isinstance(v, int)]
        # The switch is one step: once a caller is answered by version 2, it is
        # never answered by version 1 again.
        assert mine == sorted(mine, key=int) and set(mine) == {1, 2}, mine
        # A caller has one call in flight at a time: at most one answer after
        # the unload can come from a call routed to version 1 before it.
        assert set(mine[mark + 1 :]) == {2}, mine[mark:]


def test_broken_version_is_refused_and_the_old_one_keeps_answering(
    watched: tuple[RunningServer, Path],
) -> None:
    running, model_dir = watched
    failures = 'vggserve_model_loads_total{result="failure"}'
    before = scrape(running, failures, default=0.0)  # exported from the first failure on
    publish_broken(model_dir, 2)
    wait_for(lambda: scrape(running, failures, 0.0) > before, 60, "the failed load counted")
    with running.client() as client:
        assert client.classify(encode(random_pixels(8, 8))).model_version == 1
        assert client.health() == "SERVING"
        assert list(client.metadata().versions) == [1]


def test_removed_version_is_unloaded(watched: tuple[RunningServer, Path], tiny_model) -> None:  # type: ignore[no-untyped-def]
    running, model_dir = watched
    publish(tiny_model.version_dir, model_dir, 2)
    with running.client() as client:
        wait_for(
            lambda: client.classify(encode(random_pixels(8, 8))).model_version == 2,
            60,
            "version 2 to answer",
        )
        shutil.rmtree(model_dir / "2")
        wait_for(
            lambda: client.classify(encode(random_pixels(8, 8))).model_version == 1,
            60,
            "version 1 to answer again",
        )
        image = encode(random_pixels(8, 8))
        answer = client.classify(image, probabilities=True)
        assert_answered_by(answer.probabilities, model_dir, [image], version=1)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.slow
def test_memory_stays_bounded_across_reload_cycles(
    watched: tuple[RunningServer, Path], tiny_model: TrainResult
) -> None:
    running, model_dir = watched
    image = encode(random_pixels(8, 8))
    with running.client() as client:
        sizes = []
        for version in range(2, 12):
            publish(tiny_model.version_dir, model_dir, version)
            wait_for(
                lambda v=version: list(client.metadata().versions) == [v],
                60,
                f"version {version} alone to be loaded",
            )
            assert client.classify(image).model_version == version
            shutil.rmtree(model_dir / str(version - 1))
            sizes.append(rss_bytes())
    # The tiny model is about 1 MB on disk; TensorFlow keeps some per-load
    # graph state. 10 loads may grow the process by at most 150 MB in all
    # (a leak of a whole model per load would show as steady growth).
    growth = sizes[-1] - sizes[0]
    assert growth < 150 * 2**20, [f"{s / 2**20:.0f} MB" for s in sizes]
