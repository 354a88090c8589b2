"""Metrics and logs tell the truth: model info, image errors, cancelled streams, load failures."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from model.train import TrainResult
from protos.vggserve.v1 import classifier_pb2 as pb
from service.adapters.grpc_calls import answering
from service.core import NATIVE_GRPC, CoreOptions, RequestContext, build_core
from tests.helpers import encode, random_pixels, wait_for
from tests.service.helpers import RunningServer, publish, scrape, settings_for
from vggclient.client import Client


def model_info(server: RunningServer) -> dict[str, str]:
    match = re.search(r"^vggserve_model_info\{(.*)\} 1\.0$", server.metrics(), re.M)
    assert match, "vggserve_model_info is not exported"
    return dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))


@pytest.fixture
def two_versions(tiny_model: TrainResult, tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    publish(tiny_model.version_dir, model_dir, 1)
    publish(tiny_model.version_dir, model_dir, 2)
    running = RunningServer(settings_for(model_dir, versions="latest:2", poll_interval_s=0.1))
    running.load()
    yield running, model_dir
    running.stop()


def test_model_info_follows_a_removed_version(two_versions: tuple[RunningServer, Path]) -> None:
    running, model_dir = two_versions
    assert model_info(running)["default_version"] == "2"
    shutil.rmtree(model_dir / "2")
    wait_for(
        lambda: 'vggserve_model_version_loaded{version="2"}' not in running.metrics(),
        60,
        "version 2 to be unloaded",
    )
    assert model_info(running)["default_version"] == "1"


def test_a_version_missing_a_file_is_logged_with_the_file_name(
    two_versions: tuple[RunningServer, Path],
    tiny_model: TrainResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    running, model_dir = two_versions
    staging = model_dir / ".staging-3"
    shutil.copytree(tiny_model.version_dir, staging)
    (staging / "assets" / "labels.txt").unlink()
    failures = 'vggserve_model_loads_total{result="failure"}'
    before = scrape(running, failures, default=0.0)  # exported from the first failure on
    with caplog.at_level(logging.ERROR, logger="service"):
        staging.rename(model_dir / "3")
        wait_for(
            lambda: scrape(running, failures, default=0.0) > before, 60, "a failed load counted"
        )
    message = next(r.getMessage() for r in caplog.records if "version 3" in r.getMessage())
    assert f"No such file or directory: {model_dir / '3' / 'assets' / 'labels.txt'}" in message


def images_total(server: RunningServer, code: str, default: float | None = None) -> float:
    outcome = "ok" if code == "OK" else "error"
    name = f'vggserve_images_total{{code="{code}",outcome="{outcome}",protocol="native-grpc"}}'
    return scrape(server, name) if default is None else scrape(server, name, default)


def test_every_image_error_is_counted_by_its_code(server: RunningServer, client: Client) -> None:
    half_png = encode(random_pixels(64, 64))[:300]  # header intact, data cut
    codes = ("OK", "INVALID_ARGUMENT", "NOT_FOUND")
    # A code's series appears with its first image: missing before means none yet.
    before = {code: images_total(server, code, default=0.0) for code in codes}
    client.classify(encode(random_pixels(8, 8)))
    for call in (
        lambda: client.classify(b"not an image"),  # refused by the header check
        lambda: client.classify(half_png),  # fails to decode in the batch
        lambda: client.classify(encode(random_pixels(8, 8)), version=9),  # unknown version
    ):
        with pytest.raises(grpc.RpcError):
            call()
    results = client.classify_batch([encode(random_pixels(8, 8)), b"junk"])
    assert [type(r).__name__ for r in results] == ["Classification", "ImageError"]
    after = {code: images_total(server, code) for code in codes}
    assert after["OK"] - before["OK"] == 2
    assert after["INVALID_ARGUMENT"] - before["INVALID_ARGUMENT"] == 3
    assert after["NOT_FOUND"] - before["NOT_FOUND"] == 1


def test_a_cancelled_stream_is_counted_cancelled_not_ok(
    server: RunningServer, client: Client
) -> None:
    ok = 'vggserve_requests_total{code="OK",method="ClassifyStream",protocol="native-grpc"}'
    cancelled = (
        'vggserve_requests_total{code="CANCELLED",method="ClassifyStream",protocol="native-grpc"}'
    )
    # Either series appears with its first count; missing means none yet.
    before_ok, before_cancelled = scrape(server, ok, 0.0), scrape(server, cancelled, 0.0)
    stop = threading.Event()

    def one_then_wait() -> Iterator[pb.ClassifyRequest]:
        yield pb.ClassifyRequest(image=pb.Image(encoded=encode(random_pixels(8, 8))))
        stop.wait(30)

    call = client.stub.ClassifyStream(one_then_wait(), timeout=60)
    try:
        assert next(call).result.WhichOneof("outcome") == "response"
        call.cancel()
        wait_for(
            lambda: scrape(server, cancelled, 0.0) == before_cancelled + 1,
            60,
            "the cancelled stream to be counted",
        )
    finally:
        stop.set()
    assert scrape(server, ok, 0.0) == before_ok  # absent still, when no stream ever ended OK


def test_exported_versions_are_readable_as_the_umask_allows(tiny_model: TrainResult) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder = tiny_model.version_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    readable = 0o444 & ~umask
    for path in [folder, *folder.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & readable == readable, path


class _ClientGone:
    """The few ServicerContext methods answering() reads, for a client that went away."""

    def cancelled(self) -> bool:
        return True

    def code(self) -> None:
        return None


def test_a_stream_closed_at_its_yield_is_counted_cancelled(tmp_path: Path) -> None:
    # grpc.aio closes a streaming handler whose client went away at its `yield`
    # (GeneratorExit, not CancelledError) when the cancel lands while an answer
    # is being sent; that path was counted OK.
    core = build_core(CoreOptions(model_dir=str(tmp_path)))  # nothing loaded: not needed
    metrics = core.metrics
    ctx = RequestContext(NATIVE_GRPC, "ClassifyStream")

    async def handler() -> AsyncIterator[int]:
        async with answering(core, ctx, _ClientGone()):  # type: ignore[arg-type]
            yield 1
            yield 2

    async def run() -> None:
        stream = handler()
        assert await anext(stream) == 1
        await stream.aclose()

    asyncio.run(run())
    text = generate_latest(metrics.registry).decode()
    assert (
        'vggserve_requests_total{code="CANCELLED",method="ClassifyStream",'
        'protocol="native-grpc"} 1.0' in text
    )
    assert 'vggserve_requests_total{code="OK"' not in text
