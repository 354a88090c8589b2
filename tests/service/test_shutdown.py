"""Graceful shutdown of a real `python -m service` process, as docs "Graceful
shutdown" documents it: on SIGTERM, health turns NOT_SERVING at once (and so
does every protocol's readiness: V2 gRPC and REST) while the server keeps
answering for --drain-grace-s; then new calls are refused with
UNAVAILABLE, every accepted unary call is answered, an open stream is told to
resend what it has not sent, and the process exits 0. A second signal skips
the grace.

Every step waits on what the server says (health, answers, its queue gauge),
never on a clock.
"""

from __future__ import annotations

import base64
import json
import queue
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest.serverproc import local_server
from protos.inference import open_inference_grpc_pb2 as oip
from protos.inference import open_inference_grpc_pb2_grpc as oip_grpc
from protos.vggserve.v1 import classifier_pb2 as pb
from service.server import SERVICES
from tests.helpers import encode, random_pixels, wait_for
from tests.service.helpers import series
from vggclient.client import Client

DRAIN_S = 20.0
LONG_GRACE = ["--drain-grace-s", "600", "--drain-timeout-s", "120"]  # ended by a second signal
IMAGE = encode(random_pixels(8, 8))
REFUSED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def wait_for_health(target: str, wanted: str, timeout: float = 60.0) -> None:
    """Watches the standard health service until the server reports `wanted`."""
    request = health_pb2.HealthCheckRequest(service="")
    with grpc.insecure_channel(target) as channel:
        for response in health_pb2_grpc.HealthStub(channel).Watch(request, timeout=timeout):
            if health_pb2.HealthCheckResponse.ServingStatus.Name(response.status) == wanted:
                return
    raise AssertionError(f"{target} never reported {wanted}")


class HealthWatch:
    """A health Watch opened now and read in a thread: each status the server reports.

    Opened before a signal, it sees NOT_SERVING even under a zero grace, when
    a health call made after the signal would be refused. Close it once done:
    the drain waits for open streams.
    """

    def __init__(self, target: str, timeout: float = 120.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._call = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
        self.seen: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                with self._changed:
                    self.seen.append(status)
                    self._changed.notify_all()
        except grpc.RpcError:
            pass  # closed by us, or the server went away: `seen` says what came first
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, wanted: str, timeout: float = 60.0) -> None:
        with self._changed:
            self._changed.wait_for(lambda: wanted in self.seen or self._ended, timeout)
            assert wanted in self.seen, f"health reported {self.seen}, never {wanted}"

    def close(self) -> None:
        self._call.cancel()
        self._reader.join(timeout=10)
        self._channel.close()


def metrics_text(rest_url: str) -> str:
    with urllib.request.urlopen(f"{rest_url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def held_by_the_server(rest_url: str, calls: list[Future[Any]]) -> bool:
    """Every call has reached the server, and some wait in its queue.

    Counted before the scrape, a call answered in between is in neither
    count: the sum can only be short, never make a call not yet sent look held.
    """
    answered = sum(call.done() for call in calls)
    assert answered < len(calls), "every call was answered before any was seen queued"
    text = metrics_text(rest_url)
    in_flight = series(text, "vggserve_rpcs_in_flight")  # health checks not counted
    return in_flight + answered >= len(calls) and series(text, "vggserve_queue_depth") > 0


def wait_until_refused(client: Client, timeout: float = 60.0) -> grpc.RpcError:
    """Sends calls until one is refused (the grace is over); returns the refusal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.classify(IMAGE)
        except grpc.RpcError as exc:
            return exc
    raise AssertionError("new calls were still answered")


class OpenStream:
    """A ClassifyStream kept open: send one image at a time, read its answer."""

    def __init__(self, client: Client) -> None:
        self._requests: queue.Queue[pb.ClassifyRequest | None] = queue.Queue()
        self._sent = 0
        self.responses = client.stub.ClassifyStream(self._iterate(), timeout=300)

    def _iterate(self) -> Iterator[pb.ClassifyRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def classify(self, image: bytes) -> pb.StreamResult:
        self._sent += 1
        self._requests.put(
            pb.ClassifyRequest(image=pb.Image(encoded=image), request_id=str(self._sent))
        )
        return next(self.responses)

    def close(self) -> grpc.StatusCode:
        """Ends the request side; returns the call's final status."""
        self._requests.put(None)
        try:
            for _ in self.responses:
                pass
        except grpc.RpcError:
            pass  # the status is read below either way
        return self.responses.code()


def test_sigterm_answers_the_queued_calls_and_exits_zero(model_dir: Path) -> None:
    """Drain now (zero grace): new calls are refused at once, yet every call
    the server holds, queued or computing, is answered."""
    big = encode(random_pixels(800, 800), "PNG")  # slow to decode: calls stay queued
    count = 24
    # A drain timeout far above any answer time, so ending before it shows the
    # drain ended because the calls were answered (no wall-clock bound asserted).
    drain_s = 120.0
    args = ["--drain-grace-s", "0", "--drain-timeout-s", str(drain_s), "--max-batch-size", "4"]
    with (
        local_server(model_dir, args) as child,
        Client(child.target, retries=0, timeout=60) as client,
        ThreadPoolExecutor(count) as pool,
    ):
        rest_url = child.rest_url
        assert rest_url is not None
        watch = HealthWatch(child.target)
        try:
            watch.wait_for("SERVING")
            calls = [pool.submit(client.classify, big) for _ in range(count)]
            # Signal only once the server holds every call and some are queued:
            # else the test would prove nothing about calls in flight.
            wait_for(lambda: held_by_the_server(rest_url, calls), 60, "the calls to be queued")
            child.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Load balancers see NOT_SERVING while the calls are still answered.
            watch.wait_for("NOT_SERVING")
        finally:
            watch.close()
        versions = [call.result().model_version for call in calls]
        code = child.process.wait(timeout=drain_s + 30)
        elapsed = time.monotonic() - signalled
    assert versions == [2] * count  # a call cancelled at the drain timeout would raise
    assert code == 0
    assert elapsed < drain_s


def test_grace_then_new_calls_are_unavailable_and_the_open_stream_is_told_to_resend(
    model_dir: Path,
) -> None:
    with (
        local_server(model_dir, LONG_GRACE) as child,
        Client(child.target, retries=0, timeout=30) as client,
    ):
        stream = OpenStream(client)
        assert stream.classify(IMAGE).result.WhichOneof("outcome") == "response"
        child.process.send_signal(signal.SIGTERM)
        wait_for_health(child.target, "NOT_SERVING")
        # The grace: NOT_SERVING, yet answering, new calls and the open stream alike.
        assert client.classify(IMAGE).model_version == 2
        assert stream.classify(IMAGE).result.WhichOneof("outcome") == "response"
        child.process.send_signal(signal.SIGTERM)  # the second signal skips the grace
        refusal = wait_until_refused(client)
        # UNAVAILABLE, or CANCELLED for a call that reached gRPC in the very
        # moment it stopped taking calls (gRPC's own race at shutdown).
        assert refusal.code() in REFUSED, refusal.details()
        # After the grace an open stream takes no new image: it is ended with
        # UNAVAILABLE so that its client resends the rest elsewhere (docs/operations/shutdown.md).
        assert stream.close() == grpc.StatusCode.UNAVAILABLE
        assert "resend" in (stream.responses.details() or "")
        assert child.process.wait(timeout=DRAIN_S + 30) == 0


def http_get(url: str) -> tuple[int, dict[str, object]]:
    """Status and JSON body of a GET; 4xx/5xx are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rest_predict(rest_url: str) -> int:
    """Status of one TF Serving REST :predict; 0 when the connection is refused or cut."""
    body = json.dumps({"instances": [{"b64": base64.b64encode(IMAGE).decode()}]}).encode()
    request = urllib.request.Request(f"{rest_url}/v1/models/tiny:predict", data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


def grpc_health(target: str) -> dict[str, str]:
    """The health status of every service the server lists."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return {
            service: health_pb2.HealthCheckResponse.ServingStatus.Name(
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            )
            for service in SERVICES
        }


def v2_server_ready(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ServerReady(oip.ServerReadyRequest(), timeout=10).ready)


def test_every_protocol_sees_the_drain_and_rest_is_refused_after_the_grace(
    model_dir: Path,
) -> None:
    with local_server(model_dir, [*LONG_GRACE, "--model-name", "tiny"]) as child:
        assert child.rest_url is not None
        assert set(grpc_health(child.target).values()) == {"SERVING"}
        assert v2_server_ready(child.target)
        assert http_get(f"{child.rest_url}/v2/health/ready") == (200, {"ready": True})
        child.process.send_signal(signal.SIGTERM)
        wait_for_health(child.target, "NOT_SERVING")
        # The grace: every protocol's readiness says "not ready" at once, so a
        # balancer of any kind stops sending, while calls are still answered.
        assert set(grpc_health(child.target).values()) == {"NOT_SERVING"}
        assert not v2_server_ready(child.target)
        assert http_get(f"{child.rest_url}/v2/health/ready") == (503, {"ready": False})
        assert http_get(f"{child.rest_url}/v2/models/tiny/ready")[1]["ready"] is False
        assert rest_predict(child.rest_url) == 200
        child.process.send_signal(signal.SIGTERM)  # the second signal skips the grace
        # Then REST refuses new requests (503, or the connection closed or
        # refused once the listener is gone), and the process exits 0.
        deadline = time.monotonic() + 60
        while (status := rest_predict(child.rest_url)) == 200:
            assert time.monotonic() < deadline, "REST still answered after the grace"
        assert status in (503, 0)
        assert child.process.wait(timeout=DRAIN_S + 30) == 0
