"""Idle streams cannot lock out other calls or health checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from protos.vggserve.v1 import classifier_pb2 as pb
from service.settings import Settings
from tests.helpers import encode, random_pixels, wait_for
from tests.service.helpers import RunningServer, scrape, settings_for
from vggclient.client import Client

LIMIT = 8
IDLE_S = 3.0


@pytest.fixture
def limited(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(
        settings_for(model_dir, max_concurrent_rpcs=LIMIT, stream_idle_timeout_s=IDLE_S)
    )
    running.load()
    yield running
    running.stop()


def idle_stream(client: Client, release: threading.Event) -> grpc.RpcError:
    """Opens a ClassifyStream that sends nothing until `release`; returns how it ended."""

    def nothing() -> Iterator[pb.ClassifyRequest]:
        release.wait()
        yield from ()

    try:
        for _ in client.stub.ClassifyStream(nothing(), timeout=120):
            pass
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the idle stream ended without an error")


def test_idle_streams_cannot_lock_out_health_and_are_ended_when_idle(
    limited: RunningServer,
) -> None:
    release = threading.Event()
    with (
        limited.client(retries=0, timeout=10) as client,
        ThreadPoolExecutor(LIMIT + 4) as pool,
    ):
        opened_at = time.monotonic()
        streams: list[Future[grpc.RpcError]] = [
            pool.submit(idle_stream, client, release) for _ in range(LIMIT + 4)
        ]
        try:
            # The limit fills up; the calls beyond it are refused at once.
            wait_for(lambda: sum(s.done() for s in streams) == 4, 30, "4 streams refused")
            assert scrape(limited, "vggserve_rpcs_in_flight") == LIMIT
            for refused in (s.result() for s in streams if s.done()):
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--max-concurrent-rpcs" in refused.details()
            # Health is not counted against the limit.
            assert client.health() == "SERVING"
            assert client.health("vggserve.v1.ImageClassifier") == "SERVING"
            # The idle ones are ended after the idle timeout, freeing their slots.
            ended = [s.result(timeout=60) for s in streams]
            assert time.monotonic() - opened_at >= IDLE_S
        finally:
            release.set()
    idle = [e for e in ended if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED]
    assert len(idle) == LIMIT
    assert all("sent no image for 3 s" in e.details() for e in idle)
    assert scrape(limited, "vggserve_rpcs_in_flight") == 0
    with limited.client(retries=0, timeout=10) as client:
        assert client.classify(encode(random_pixels(8, 8))).classes


def test_idle_timeout_is_a_setting_with_an_environment_variable() -> None:
    settings = Settings.parse(["--model-dir", "m"], env={"VGGSERVE_STREAM_IDLE_TIMEOUT_S": "2.5"})
    assert settings.stream_idle_timeout_s == 2.5
    assert Settings.parse(["--model-dir", "m"], env={}).stream_idle_timeout_s == 60.0
