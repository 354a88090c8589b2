"""Graceful shutdown of a real server process."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from loadtest.serverproc import local_server
from service.client import Client
from tests.conftest import encode, random_pixels
from tests.service.conftest import RunningServer, settings_for

GRACE_S = 2.0
DRAIN_S = 20.0


def test_sigterm_answers_calls_in_flight_and_exits_zero(model_dir: Path) -> None:
    big = encode(random_pixels(800, 800), "PNG")  # slow to decode: calls stay in flight
    args = [
        "--drain-grace-s",
        str(GRACE_S),
        "--drain-timeout-s",
        str(DRAIN_S),
        "--max-batch-size",
        "4",
    ]
    with (
        local_server(model_dir, args) as child,
        Client(child.target, retries=0, timeout=60) as client,
        ThreadPoolExecutor(24) as pool,
    ):
        calls = [pool.submit(client.classify, big) for _ in range(24)]
        child.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Load balancers see NOT_SERVING at once, while calls are still answered.
        assert client.health() == "NOT_SERVING"
        versions = [call.result().model_version for call in calls]
        code = child.process.wait(timeout=GRACE_S + DRAIN_S + 30)
        elapsed = time.monotonic() - signalled
    assert versions == [2] * 24
    assert code == 0
    assert elapsed < GRACE_S + DRAIN_S


def test_after_the_grace_new_calls_are_unavailable(model_dir: Path) -> None:
    running = RunningServer(settings_for(model_dir, metrics_port=-1))
    running.load()
    try:
        running._call(running.server.repository.close())  # what stop() does after the grace
        with running.client(retries=0) as client:
            try:
                client.classify(encode(random_pixels(8, 8)))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in exc.details()
            else:
                raise AssertionError("a call after the grace was answered")
    finally:
        running.stop()
