"""Decompression bombs whose first bytes lie: refused before decoding, and by the graph."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import keras
import pytest
from PIL import Image

from model import layout
from model.export import export_model
from model.preprocessing import PreprocessConfig
from model.train import TrainResult
from protos.vggserve.v1 import classifier_pb2 as pb
from service.core import headers, images
from service.core.errors import InvalidImage
from tests.helpers import encode, random_pixels
from tests.service.helpers import RunningServer, settings_for
from vggclient.client import Client

LIMITS = images.Limits(max_bytes=1 << 24, max_pixels=1000 * 1000)


def _single_frame_gif(size: tuple[int, int], colour: int) -> tuple[bytes, bytes]:
    """(header up to the first frame, the frame's blocks) of a blank GIF from Pillow."""
    image = Image.new("P", size, colour)
    image.putpalette(list(range(256)) * 3)
    buffer = io.BytesIO()
    image.save(buffer, format="GIF")
    data = buffer.getvalue()
    flags = data[10]
    start = 13 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
    assert data[start] == 0x2C and data[-1] == 0x3B  # an image descriptor; the trailer
    return data[:start], data[start:-1]


def gif(*frames: tuple[int, int], screen: tuple[int, int] = (10, 10)) -> bytes:
    """A GIF of blank frames of the given (width, height), its screen set to `screen`.

    Blank frames compress to almost nothing: a 7000x7000 frame takes about 37 KB.
    """
    parts = [_single_frame_gif(size, i) for i, size in enumerate(frames)]
    head = parts[0][0]
    head = head[:6] + struct.pack("<HH", *screen) + head[10:]
    return head + b"".join(blocks for _, blocks in parts) + b";"


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def test_gif_frame_larger_than_its_screen_is_refused_by_the_server(client: Client) -> None:
    bomb = gif((7000, 7000))
    assert len(bomb) < 64 * 1024
    before = rss_bytes()
    with pytest.raises(grpc.RpcError) as info:
        client.stub.Classify(pb.ClassifyRequest(image=pb.Image(encoded=bomb)), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GIF frame is 7000x7000 = 49000000 pixels" in info.value.details()
    assert "screen says 10x10" in info.value.details()
    # Decoding it costs 147 MB for the frame alone (741 MB seen with the resize).
    assert rss_bytes() - before < 64 * 2**20
    assert client.classify(encode(random_pixels(8, 8))).classes


def test_gif_header_is_the_first_frame_and_every_frame_is_counted() -> None:
    assert tuple(headers.read(gif((30, 20), screen=(5, 5)))) == ("GIF", 30, 20, 600)
    two = gif((10, 10), (900, 1000), screen=(10, 10))
    assert tuple(headers.read(two)) == ("GIF", 10, 10, 100 + 900_000)
    # A small first frame cannot hide a huge later one: the GIF library reads all.
    with pytest.raises(InvalidImage, match="GIF frames hold 1000100 pixels in all"):
        images.encoded(gif((10, 10), (1000, 1000)), LIMITS)


def test_gif_without_a_frame_is_refused() -> None:
    with pytest.raises(InvalidImage, match="GIF is truncated before its first frame"):
        images.encoded(gif((10, 10))[:13], LIMITS)


def test_os2_bmp_is_refused_because_the_decoder_would_read_other_sizes() -> None:
    # TensorFlow reads 32-bit sizes at offsets 18 and 22 whatever the header.
    pixels = (b"\x00\x00\xff" * 4) * 3
    header = b"BM" + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26)
    os2 = header + struct.pack("<IHHHH", 12, 4, 3, 1, 24) + pixels
    with pytest.raises(InvalidImage, match="OS/2"):
        images.encoded(os2, LIMITS)


# --- the graph refuses what the header check missed ---------------------------------------


@pytest.fixture(scope="module")
def small_limit_model(tiny_model: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model re-exported with a graph limit of 300 pixels (its input: 256)."""
    model = keras.models.load_model(tiny_model.version_dir / layout.KERAS_MODEL)
    root = tmp_path_factory.mktemp("limited") / "tiny"
    export_model(
        model,
        PreprocessConfig(height=16, width=16, max_pixels=300),
        layout.read_labels(tiny_model.version_dir),
        root,
    )
    return root


@pytest.fixture(scope="module")
def lenient_server(small_limit_model: Path) -> Iterator[RunningServer]:
    """A server whose own header limit lets through what the graph refuses."""
    running = RunningServer(settings_for(small_limit_model, metrics_port=-1))
    running.load()
    yield running
    running.stop()


def test_old_preprocessing_settings_load_with_the_default_limit() -> None:
    old = PreprocessConfig.from_dict({"height": 16, "width": 16, "resize_method": "bilinear"})
    assert old.max_pixels == 36_000_000


def test_the_limit_is_recorded_in_the_export(small_limit_model: Path) -> None:
    assert layout.read_preprocessing(small_limit_model / "1").max_pixels == 300


@pytest.mark.parametrize(
    ("fmt", "mode"), [("JPEG", None), ("PNG", None), ("BMP", None), ("GIF", "P")]
)
def test_the_exported_graph_refuses_images_over_its_limit(
    lenient_server: RunningServer, fmt: str, mode: str | None
) -> None:
    with lenient_server.client(retries=0, timeout=30) as client:
        assert client.classify(encode(random_pixels(10, 30), fmt, mode)).classes  # 300: allowed
        with pytest.raises(grpc.RpcError) as info:
            client.classify(encode(random_pixels(11, 30), fmt, mode))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "image is 30x11 = 330 pixels; the limit is 300"
