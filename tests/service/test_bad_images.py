"""Images that pass the header check but do not decode: their cost and their message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.helpers import encode, in_process, random_pixels, truncated
from tests.service.helpers import RunningServer, model_calls, settings_for
from vggclient.client import Classification, ImageError


@pytest.fixture(scope="module")
def batching_server(model_dir: Path) -> Iterator[RunningServer]:
    # One ClassifyBatch of 32 queues all its images before the batcher looks,
    # so they are computed in one batch.
    running = RunningServer(settings_for(model_dir, max_batch_size=32))
    running.load()
    yield running
    running.stop()


def test_a_bad_image_costs_its_batch_mates_one_extra_model_call(
    batching_server: RunningServer, model_dir: Path
) -> None:
    good = [encode(random_pixels(20, 20, seed=i), "JPEG") for i in range(32)]
    with batching_server.client(retries=0, timeout=60) as client:
        before = model_calls(batching_server)
        assert all(isinstance(r, Classification) for r in client.classify_batch(good))
        assert model_calls(batching_server) - before == 1  # the batch was one call

        images = [*good[:13], truncated("JPEG"), *good[14:]]
        before = model_calls(batching_server)
        results = client.classify_batch(images)
        assert model_calls(batching_server) - before <= 2  # halving took 11

    bad = results[13]
    assert isinstance(bad, ImageError) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Invalid JPEG data" in bad.message
    mates = [r for i, r in enumerate(results) if i != 13]
    expected = in_process(model_dir, [im for i, im in enumerate(images) if i != 13])
    for row, answer in zip(expected, mates, strict=True):
        assert isinstance(answer, Classification)
        assert answer.classes[0].index == int(np.argmax(row))
        for score in answer.classes:
            assert score.probability == pytest.approx(row[score.index], abs=1e-6)


@pytest.mark.parametrize(
    ("fmt", "reason"),
    [("JPEG", "Invalid JPEG data"), ("PNG", "Invalid PNG data, size")],
)
def test_decode_errors_keep_tensorflows_reason(
    batching_server: RunningServer, fmt: str, reason: str
) -> None:
    with batching_server.client(retries=0, timeout=30) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.classify(truncated(fmt))
        (in_batch,) = client.classify_batch([truncated(fmt)])
    assert isinstance(in_batch, ImageError)
    for message in (info.value.details(), in_batch.message):
        assert message.startswith("image does not decode: ")
        assert reason in message
        assert "Op:__inference" not in message and "]]" not in message and "{{" not in message
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_batch_of_only_bad_images_costs_one_model_call(batching_server: RunningServer) -> None:
    with batching_server.client(retries=0, timeout=30) as client:
        before = model_calls(batching_server)
        results = client.classify_batch([truncated("JPEG"), truncated("PNG"), truncated("JPEG")])
        assert model_calls(batching_server) - before == 1
    assert [type(r) for r in results] == [ImageError] * 3
    assert "Invalid JPEG data" in results[0].message  # type: ignore[union-attr]
    assert "Invalid PNG data" in results[1].message  # type: ignore[union-attr]
