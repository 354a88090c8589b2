"""Every call's request id: the caller's `x-request-id` is kept and sent back, on every
protocol; a missing or unreasonable one is replaced by a fresh id."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.vggserve.v1 import classifier_pb2 as pb
from protos.vggserve.v1 import classifier_pb2_grpc as pb_grpc
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for

FRESH = re.compile(r"[0-9a-f]{16}")


@pytest.fixture(scope="module")
def context_server(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(model_dir))
    running.load()
    yield running
    running.stop()


def _trailing_id(call: grpc.Call) -> str:
    return dict(call.trailing_metadata() or ()).get("x-request-id", "")


def _classify(server: RunningServer, metadata: tuple[tuple[str, str], ...]) -> grpc.Call:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.ImageClassifierStub(channel)
        request = pb.ClassifyRequest(image=pb.Image(encoded=encode(random_pixels(8, 8))))
        _, call = stub.Classify.with_call(request, metadata=metadata, timeout=30)
        return call


def test_grpc_keeps_the_callers_request_id(context_server: RunningServer) -> None:
    call = _classify(context_server, (("x-request-id", "trace-42.a:b"),))
    assert _trailing_id(call) == "trace-42.a:b"


@pytest.mark.parametrize("incoming", [None, "x" * 500, "bad id with spaces"])
def test_grpc_makes_a_fresh_id_when_none_is_usable(
    context_server: RunningServer, incoming: str | None
) -> None:
    metadata = () if incoming is None else (("x-request-id", incoming),)
    assert FRESH.fullmatch(_trailing_id(_classify(context_server, metadata)))


def test_a_refused_grpc_call_carries_its_request_id_too(context_server: RunningServer) -> None:
    with grpc.insecure_channel(context_server.target) as channel:
        stub = pb_grpc.ImageClassifierStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Classify(
                pb.ClassifyRequest(image=pb.Image(encoded=b"not an image")),
                metadata=(("x-request-id", "refused-1"),),
                timeout=30,
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _trailing_id(caught.value) == "refused-1"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v2/health/ready", None), ("/v1/models/tiny:predict", {"instances": []})],
)
def test_rest_keeps_the_callers_request_id(
    context_server: RunningServer, path: str, body: object
) -> None:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        context_server.rest_url + path, data=data, headers={"X-Request-Id": "rest-7"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            echoed = response.headers["X-Request-Id"]
    except urllib.error.HTTPError as error:  # the empty :predict is a 400: still echoed
        echoed = error.headers["X-Request-Id"]
    assert echoed == "rest-7"


def test_rest_makes_a_fresh_id(context_server: RunningServer) -> None:
    with urllib.request.urlopen(f"{context_server.rest_url}/v2/health/live", timeout=30) as answer:
        assert FRESH.fullmatch(answer.headers["X-Request-Id"])
