"""Images that pass the header check but do not decode: their cost and their message.

Two kinds take two paths: a file cut short (no end marker, flagged by
`headers.ends_early`) is decoded alone before its batch runs and never fails
it; other damage is found when the batched call fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.helpers import encode, in_process, random_pixels, truncated
from tests.service.helpers import RunningServer, model_calls, settings_for
from vggclient.client import Classification, ImageError


def damaged(fmt: str) -> bytes:
    """A file that does not decode yet ends with its end marker (not flagged as cut)."""
    data = encode(random_pixels(64, 64), fmt)
    if fmt == "JPEG":  # a second frame header in the middle of the image data
        middle = (data.index(b"\xff\xda") + len(data)) // 2
        return data[:middle] + b"\xff\xc0\x00\x11" + data[middle + 4 :]
    return data[: len(data) // 2] + b"\0\0\0\0IEND\xaeB`\x82"  # PNG: a whole IEND chunk


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

        images = [*good[:13], damaged("JPEG"), *good[14:]]
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


@pytest.mark.parametrize("make", [truncated, damaged])
@pytest.mark.parametrize(
    ("fmt", "reason"),
    [("JPEG", "Invalid JPEG data"), ("PNG", "Invalid PNG data, size")],
)
def test_decode_errors_keep_tensorflows_reason(
    batching_server: RunningServer, make: Callable[[str], bytes], fmt: str, reason: str
) -> None:
    with batching_server.client(retries=0, timeout=30) as client:
        with pytest.raises(grpc.RpcError) as info:
            client.classify(make(fmt))
        (in_batch,) = client.classify_batch([make(fmt)])
    assert isinstance(in_batch, ImageError)
    for message in (info.value.details(), in_batch.message):
        assert message.startswith("image does not decode: ")
        assert reason in message
        assert "Op:__inference" not in message and "]]" not in message and "{{" not in message
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_batch_of_only_bad_images_costs_one_model_call(batching_server: RunningServer) -> None:
    with batching_server.client(retries=0, timeout=30) as client:
        before = model_calls(batching_server)
        results = client.classify_batch([damaged("JPEG"), damaged("PNG"), damaged("JPEG")])
        assert model_calls(batching_server) - before == 1
    assert [type(r) for r in results] == [ImageError] * 3
    assert "Invalid JPEG data" in results[0].message  # type: ignore[union-attr]
    assert "Invalid PNG data" in results[1].message  # type: ignore[union-attr]


def test_files_cut_short_cost_no_model_call_and_fail_alone(
    batching_server: RunningServer, model_dir: Path
) -> None:
    good = [encode(random_pixels(20, 20, seed=100 + i), "JPEG") for i in range(30)]
    images = [*good[:7], truncated("JPEG"), *good[7:20], truncated("PNG"), *good[20:]]
    bad = {7: "Invalid JPEG data", 21: "Invalid PNG data"}
    with batching_server.client(retries=0, timeout=60) as client:
        before = model_calls(batching_server)
        results = client.classify_batch(images)
        assert model_calls(batching_server) - before == 1  # the good images' batch only
        before = model_calls(batching_server)
        only_bad = client.classify_batch([truncated("JPEG"), truncated("PNG")])
        assert model_calls(batching_server) - before == 0
    for index, reason in bad.items():
        answer = results[index]
        assert isinstance(answer, ImageError) and answer.code == grpc.StatusCode.INVALID_ARGUMENT
        assert answer.message.startswith("image does not decode: ") and reason in answer.message
    assert [type(r) for r in only_bad] == [ImageError] * 2
    expected = in_process(model_dir, good)
    mates = [r for i, r in enumerate(results) if i not in bad]
    for row, answer in zip(expected, mates, strict=True):
        assert isinstance(answer, Classification)
        assert answer.classes[0].index == int(np.argmax(row))
