"""ClassifyStream under pressure: many more requests than the stream's window,
and a client that cancels mid-stream."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.vggserve.v1 import classifier_pb2 as pb
from tests.helpers import encode, random_pixels, wait_for
from tests.service.helpers import RunningServer, scrape, settings_for
from vggclient.client import Classification

MAX_BATCH = 8
WINDOW = 2 * MAX_BATCH  # images of one stream in flight at once (server.py)


@pytest.fixture(scope="module")
def small_queue_server(model_dir: Path) -> Iterator[RunningServer]:
    """A queue that holds exactly one stream's window: more would be refused."""
    running = RunningServer(settings_for(model_dir, max_batch_size=MAX_BATCH, max_queue=WINDOW))
    running.load()
    yield running
    running.stop()


def test_a_stream_far_longer_than_its_window_is_answered_whole(
    small_queue_server: RunningServer,
) -> None:
    """300 images through a queue of 16: the stream reads no faster than it is answered.

    A server that read the whole stream at once would overflow the queue and
    answer images RESOURCE_EXHAUSTED.
    """
    count = 300
    images = [encode(random_pixels(12, 12, seed=i)) for i in range(count)]
    with small_queue_server.client(retries=0) as client:
        answers = list(client.classify_many(images, top_k=1, timeout=300))
    positions = [position for position, _ in answers]
    assert sorted(positions) == list(range(count))  # each request answered once, by its id
    failed = {str(outcome) for _, outcome in answers if not isinstance(outcome, Classification)}
    assert failed == set()


def stream_count(server: RunningServer, code: str) -> float:
    """ClassifyStream calls ended with `code` so far.

    0 when the series is absent: it is exported from its first count, and
    before it (a fresh module server) no stream has ended with that code.
    """
    name = (
        f'vggserve_requests_total{{code="{code}",method="ClassifyStream",protocol="native-grpc"}}'
    )
    return scrape(server, name, default=0.0)


def test_a_client_cancelling_mid_stream_leaves_the_server_healthy(
    small_queue_server: RunningServer,
) -> None:
    server = small_queue_server
    before = {code: stream_count(server, code) for code in ("OK", "CANCELLED")}
    requests: queue.Queue[pb.ClassifyRequest | None] = queue.Queue()

    def pending() -> Iterator[pb.ClassifyRequest]:
        while (request := requests.get()) is not None:
            yield request

    image = pb.Image(encoded=encode(random_pixels(12, 12)))
    with server.client(retries=0) as client:
        call = client.stub.ClassifyStream(pending(), timeout=300)
        for i in range(3):
            requests.put(pb.ClassifyRequest(image=image, request_id=str(i)))
            assert next(call).request_id == str(i)
        for i in range(3, 3 + WINDOW):  # some in flight when the client goes away
            requests.put(pb.ClassifyRequest(image=image, request_id=str(i)))
        call.cancel()
        requests.put(None)
        with pytest.raises(grpc.RpcError) as info:
            next(call)
        assert info.value.code() == grpc.StatusCode.CANCELLED
        # The server counts it once it has noticed; each poll is a real scrape.
        wait_for(
            lambda: stream_count(server, "CANCELLED") != before["CANCELLED"],
            60,
            "the cancelled stream to be counted",
        )
        assert stream_count(server, "CANCELLED") - before["CANCELLED"] == 1
        assert stream_count(server, "OK") == before["OK"], "a cancelled stream counted as OK"
        assert client.health() == "SERVING"
        answers = list(client.classify_many([image.encoded] * 40, timeout=60))
        assert all(isinstance(outcome, Classification) for _, outcome in answers)
