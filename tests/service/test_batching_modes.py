"""`--no-batching` and `--model-workers 2`: the same answers, computed differently."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import encode, in_process, random_pixels
from tests.service.helpers import RunningServer, batch_histogram, settings_for

IMAGES = [encode(random_pixels(20 + i % 5, 20, seed=200 + i), "PNG") for i in range(32)]


@pytest.fixture(scope="module")
def expected(model_dir: Path) -> np.ndarray:
    return in_process(model_dir, IMAGES)


def serve_concurrently(running: RunningServer) -> tuple[np.ndarray, float, float]:
    """Sends IMAGES from 16 threads; (probabilities, images computed, model calls)."""
    before = batch_histogram(running.metrics())
    with running.client(retries=0, timeout=120) as client, ThreadPoolExecutor(16) as pool:
        served = list(
            pool.map(lambda im: client.classify(im, probabilities=True).probabilities, IMAGES)
        )
    after = batch_histogram(running.metrics())
    return np.asarray(served), after[0] - before[0], after[1] - before[1]


@pytest.fixture
def make_server(model_dir: Path) -> Iterator:  # type: ignore[type-arg]
    servers: list[RunningServer] = []

    def make(**settings: object) -> RunningServer:
        running = RunningServer(settings_for(model_dir, **settings))
        servers.append(running)
        running.load()
        return running

    yield make
    for running in servers:
        running.stop()


def test_no_batching_runs_one_image_per_model_call(make_server, expected: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    running = make_server(batching=False, max_batch_size=8)
    with running.client() as client:
        assert client.metadata().max_batch_size == 1
    served, images, calls = serve_concurrently(running)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert images == calls == len(IMAGES)


def test_batching_is_on_by_default_for_the_same_load(make_server, expected: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """The contrast that makes the test above mean something."""
    running = make_server(max_batch_size=8, batch_timeout_ms=50)
    served, images, calls = serve_concurrently(running)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert images == len(IMAGES) and calls < len(IMAGES)


def test_two_model_workers_give_every_caller_its_own_answer(
    make_server,  # type: ignore[no-untyped-def]
    expected: np.ndarray,
) -> None:
    running = make_server(model_workers=2, max_batch_size=4)
    served, images, _ = serve_concurrently(running)
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert images == len(IMAGES)
    with running.client() as client:
        assert client.health() == "SERVING"
