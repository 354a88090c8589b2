"""The gRPC API end to end: a real server, a real channel, a real SavedModel."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from model.data import synthetic
from protos.vggserve.v1 import classifier_pb2 as pb
from tests.helpers import (
    assert_answered_by,
    bomb_png,
    encode,
    half_a_jpeg,
    in_process,
    random_pixels,
)
from tests.service.helpers import (
    RunningServer,
    batch_histogram,
    rpc_count,
    scrape,
    settings_for,
    wait_for_metric,
)
from vggclient.client import Client, ImageError

N_CLASSES = len(synthetic.CLASS_NAMES)


def rpc_error(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# --- readiness, health, reflection -------------------------------------------------------


def test_not_serving_and_unavailable_until_warm(model_dir: Path) -> None:
    running = RunningServer(settings_for(model_dir, metrics_port=-1))
    try:
        with running.client(retries=0) as client:
            assert client.health() == "NOT_SERVING"
            assert client.health("vggserve.v1.ImageClassifier") == "NOT_SERVING"
            error = rpc_error(lambda: client.classify(encode(random_pixels(8, 8))))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "no model version is loaded yet" in error.details()
            running.load()
            client.wait_until_serving(timeout=30)
            assert client.health() == "SERVING"
            assert client.health("vggserve.v1.ImageClassifier") == "SERVING"
            assert client.classify(encode(random_pixels(8, 8))).model_version == 2
    finally:
        running.stop()


def test_reflection_lists_the_services(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in response.list_services_response.service}
    assert {"vggserve.v1.ImageClassifier", "grpc.health.v1.Health"} <= names


# --- Classify ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", None),
        ("PNG", None),
        ("BMP", None),
        ("GIF", "P"),
        ("PNG", "L"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
    ],
)
def test_classify_every_format_and_colour_mode(client: Client, fmt: str, mode: str | None) -> None:
    result = client.classify(encode(random_pixels(40, 30), fmt, mode), top_k=3)
    assert len(result.classes) == 3
    assert result.model_name == "tiny" and result.model_version == 2
    assert [c.probability for c in result.classes] == sorted(
        (c.probability for c in result.classes), reverse=True
    )
    assert all(c.label == synthetic.CLASS_NAMES[c.index] for c in result.classes)


def test_served_probabilities_equal_the_in_process_savedmodel(
    client: Client, model_dir: Path
) -> None:
    images = [encode(random_pixels(24 + i, 20, seed=i), "JPEG") for i in range(4)]
    expected = in_process(model_dir, images)
    for image, row in zip(images, expected, strict=True):
        served = client.classify(image, probabilities=True).probabilities
        np.testing.assert_allclose(served, row, atol=1e-6)
        assert_answered_by(served, model_dir, [image], version=2, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_raw_pixels_match_the_same_image_encoded(client: Client, channels: int) -> None:
    rgb = random_pixels(16, 16, seed=3)
    pixels = {1: rgb[:, :, :1], 3: rgb, 4: np.dstack([rgb, np.full((16, 16), 77, np.uint8)])}
    mode = {1: "L", 3: None, 4: "RGBA"}[channels]
    array = pixels[channels]
    by_pixels = client.classify(array, probabilities=True).probabilities
    source = array[:, :, 0] if channels == 1 else array
    by_bytes = client.classify(encode(source, "PNG", mode), probabilities=True).probabilities
    np.testing.assert_allclose(by_pixels, by_bytes, atol=1e-6)


@pytest.mark.parametrize(
    ("top_k", "expected"), [(0, 5), (1, 1), (N_CLASSES, N_CLASSES), (1000, N_CLASSES)]
)
def test_top_k_bounds(client: Client, top_k: int, expected: int) -> None:
    assert len(client.classify(encode(random_pixels(8, 8)), top_k=top_k).classes) == expected


def test_version_selection_and_unknown_version(client: Client, model_dir: Path) -> None:
    image = encode(random_pixels(8, 8))
    for asked, answering in [(1, 1), (2, 2), (0, 2)]:  # 0: the default, the newest
        result = client.classify(image, version=asked, probabilities=True)
        assert result.model_version == answering
        # The weights that answered are that version's, not only the number reported.
        assert_answered_by(result.probabilities, model_dir, [image], answering)
    error = rpc_error(lambda: client.classify(image, version=9))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "version 9 is not loaded (loaded: 1, 2)" in error.details()


def test_metadata(client: Client) -> None:
    meta = client.metadata()
    assert meta.model_name == "tiny"
    assert list(meta.versions) == [1, 2] and meta.default_version == 2
    assert list(meta.labels) == synthetic.CLASS_NAMES
    assert (meta.input_height, meta.input_width) == (16, 16)
    assert '"resize_method": "bilinear"' in meta.preprocessing_json
    assert any(s.startswith("serving_default(images") for s in meta.signatures)
    assert meta.max_batch_size == 8


# --- ClassifyBatch and ClassifyStream ---------------------------------------------------------


def test_batch_with_one_bad_image_fails_only_that_image(client: Client, model_dir: Path) -> None:
    good = [encode(random_pixels(20, 20, seed=i)) for i in range(3)]
    truncated = half_a_jpeg()  # passes the header check, fails inside the batch
    results = client.classify_batch([good[0], b"not an image", good[1], truncated, good[2]])
    assert [type(r).__name__ for r in results] == [
        "Classification",
        "ImageError",
        "Classification",
        "ImageError",
        "Classification",
    ]
    assert results[1].code == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[union-attr]
    assert results[3].code == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[union-attr]
    expected = in_process(model_dir, good).argmax(axis=1)
    assert [r.classes[0].index for r in results[::2]] == expected.tolist()  # type: ignore[union-attr]


def test_stream_answers_every_request_with_its_id(client: Client, model_dir: Path) -> None:
    images = [encode(random_pixels(12, 12, seed=i)) for i in range(40)]
    images[7] = b"GIF89a broken"
    answers = dict(client.classify_many(images, top_k=1, timeout=60))
    assert sorted(answers) == list(range(40))
    assert isinstance(answers[7], ImageError)
    expected = in_process(model_dir, [im for i, im in enumerate(images) if i != 7]).argmax(axis=1)
    got = [a.classes[0].index for i, a in sorted(answers.items()) if i != 7]  # type: ignore[union-attr]
    assert got == expected.tolist()


# --- batching ----------------------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_each_caller_gets_its_own_answer(
    server: RunningServer, client: Client, model_dir: Path
) -> None:
    images = [encode(random_pixels(32, 32, seed=100 + i), "PNG") for i in range(64)]
    expected = in_process(model_dir, images)
    before = batch_histogram(server.metrics())
    with ThreadPoolExecutor(32) as pool:
        served = list(
            pool.map(lambda im: client.classify(im, probabilities=True).probabilities, images)
        )
    np.testing.assert_allclose(np.asarray(served), expected, atol=1e-6)
    after = batch_histogram(server.metrics())
    images_computed, batches = after[0] - before[0], after[1] - before[1]
    assert images_computed == 64
    assert batches < 64, "64 concurrent requests ran as 64 single-image batches"


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (pb.Image(encoded=b""), "image is empty"),
        (pb.Image(encoded=bytes(range(256)) * 4), "not a JPEG, PNG, BMP or GIF"),
        (pb.Image(encoded=bomb_png()), "30000x30000 = 900000000 pixels; the limit is"),
        (
            pb.Image(pixels=pb.RawPixels(data=b"\0" * 10, height=4, width=4, channels=3)),
            "pixel buffer is 10 bytes; 4x4x3 needs 48",
        ),
        (
            pb.Image(pixels=pb.RawPixels(data=b"\0" * 32, height=4, width=4, channels=2)),
            "2 channels; supported: 1 (grey), 3 (RGB), 4 (RGBA)",
        ),
        (
            pb.Image(pixels=pb.RawPixels(data=b"", height=0, width=4, channels=3)),
            "both sides must be at least 1 pixel",
        ),
        (pb.Image(), "request has no image"),
        (pb.Image(encoded=encode(random_pixels(64, 64), "JPEG")[:100]), "image header is corrupt"),
        # The header is intact, so this one reaches a batch and fails to decode there.
        (pb.Image(encoded=half_a_jpeg()), "image does not decode"),
    ],
)
def test_bad_images_get_invalid_argument_and_the_server_keeps_answering(
    client: Client, image: pb.Image, message: str
) -> None:
    error = rpc_error(lambda: client.stub.Classify(pb.ClassifyRequest(image=image), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert "Traceback" not in error.details()
    assert client.classify(encode(random_pixels(8, 8))).classes


def test_oversized_message_is_refused_by_size(model_dir: Path) -> None:
    running = RunningServer(settings_for(model_dir, max_message_bytes=64 * 1024, metrics_port=-1))
    running.load()
    try:
        with running.client(retries=0) as client:
            error = rpc_error(lambda: client.classify(b"\xff\xd8" + b"\0" * 100_000))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert client.classify(encode(random_pixels(8, 8))).classes
    finally:
        running.stop()


def test_overload_gets_resource_exhausted_and_nothing_hangs(model_dir: Path) -> None:
    running = RunningServer(settings_for(model_dir, max_queue=1, max_batch_size=1, metrics_port=-1))
    running.load()
    big = encode(random_pixels(600, 600), "PNG")  # slow enough to decode to back up the queue

    def call(_: int) -> grpc.StatusCode:
        try:
            client.classify(big)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
            assert "requests queued); retry with backoff" in exc.details()
            return exc.code()

    try:
        with running.client(retries=0, timeout=60) as client, ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(call, range(64)))
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        running.stop()


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_not_computed(
    model_dir: Path,
) -> None:
    """The server drops an expired request itself: it never reaches the model.

    One image per model call and a queue of slow images; a request whose
    deadline is shorter than the work queued ahead of it must come back
    DEADLINE_EXCEEDED, and the model must compute only the slow images.
    """
    running = RunningServer(settings_for(model_dir, max_batch_size=1))
    running.load()
    # Slow to decode (9 megapixels), quick to send (a flat image compresses to a
    # few KB): the time of one call is the server's work, not the transport's.
    slow = encode(np.full((3000, 3000, 3), 90, dtype=np.uint8), "PNG")
    quick = pb.ClassifyRequest(image=pb.Image(encoded=encode(random_pixels(8, 8))))
    queued = 12
    try:
        with running.client(retries=0, timeout=300) as client, ThreadPoolExecutor(queued) as pool:
            one_slow_call = float("inf")  # on this machine, now: the quickest of three
            for _ in range(3):
                started = time.monotonic()
                client.classify(slow)
                one_slow_call = min(one_slow_call, time.monotonic() - started)
            images_before = batch_histogram(running.metrics())[0]
            calls_before = rpc_count(running, "Classify")
            slow_calls = [pool.submit(client.classify, slow) for _ in range(queued)]
            # Several slow images are waiting: the quick one queues behind them.
            ahead = queued // 2 + 2
            depth = wait_for_metric(running, "vggserve_queue_depth", lambda v: v >= ahead)
            assert depth <= queued
            # Three slow calls' time: long enough to reach the server on a busy
            # machine, well short of the eight or more slow calls queued ahead.
            error = rpc_error(lambda: client.stub.Classify(quick, timeout=3 * one_slow_call))
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # Queued after the expired one, so answered after it was dropped or
            # computed (one model call at a time, first in first out).
            fence = client.stub.Classify(quick, timeout=300)
            assert fence.model_version == 2
            assert [c.result().model_version for c in slow_calls] == [2] * queued
        images_after = batch_histogram(running.metrics())[0]
        assert images_after - images_before == queued + 1, "the expired request was computed"
        # The server did receive it (it is counted), so the server dropped it.
        assert rpc_count(running, "Classify") - calls_before == queued + 2
        assert scrape(running, "vggserve_queue_depth") == 0
    finally:
        running.stop()


# --- metrics -----------------------------------------------------------------------------------


def test_metrics_move_with_real_requests(server: RunningServer, client: Client) -> None:
    ok = 'vggserve_requests_total{code="OK",method="Classify",protocol="native-grpc"}'
    bad = (
        'vggserve_requests_total{code="INVALID_ARGUMENT",method="Classify",protocol="native-grpc"}'
    )
    images_ok = 'vggserve_images_total{code="OK",outcome="ok",protocol="native-grpc"}'
    latency = 'vggserve_request_duration_seconds_count{method="Classify",protocol="native-grpc"}'
    # A labelled series is exported from its first count: before this test's
    # calls, a missing one means none yet. After them, each must be there.
    before = {name: scrape(server, name, default=0.0) for name in (ok, bad, images_ok, latency)}
    for seed in range(5):
        client.classify(encode(random_pixels(12, 12, seed=seed)))
    rpc_error(lambda: client.classify(b"junk"))
    after = {name: scrape(server, name) for name in (ok, bad, images_ok, latency)}
    assert after[ok] - before[ok] == 5
    assert after[bad] - before[bad] == 1
    assert after[images_ok] - before[images_ok] == 5
    assert after[latency] - before[latency] == 6
    assert scrape(server, "vggserve_images_per_second") > 0
    assert scrape(server, 'vggserve_model_version_loaded{version="1"}') == 1
    assert scrape(server, 'vggserve_model_version_loaded{version="2"}') == 1
    assert scrape(server, 'vggserve_model_loads_total{result="success"}') >= 2
    assert scrape(server, "vggserve_queue_depth") == 0  # every call above was answered
