"""Draining a server with a ClassifyStream open (issue 10, item 6, server side)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for
from vggclient.client import Client

IMAGE = encode(random_pixels(16, 16))


def test_an_open_stream_is_answered_then_ended_unavailable_by_the_drain(model_dir: Path) -> None:
    running = RunningServer(settings_for(model_dir, metrics_port=-1))
    running.load()
    to_send: queue.Queue[bytes | None] = queue.Queue()

    def images() -> Iterator[bytes]:  # a batch job that has more to send
        while (image := to_send.get()) is not None:
            yield image

    stopping: threading.Thread | None = None
    answers = []
    try:
        with Client(running.target, retries=0) as client:
            stream = client.classify_many(images())
            for _ in range(3):
                to_send.put(IMAGE)
            answers += [next(stream) for _ in range(3)]
            # The drain must end this stream, not wait for it until its timeout
            # and then cut it (CANCELLED).
            stopping = threading.Thread(target=running.stop)
            stopping.start()
            with pytest.raises(grpc.RpcError) as info:
                answers += list(stream)
    finally:
        to_send.put(None)
        if stopping is None:
            running.stop()
        else:
            stopping.join(timeout=120)
    assert [position for position, _ in answers] == [0, 1, 2]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in info.value.details()
