"""Header validation: refuses bad images without decoding them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.core import headers, images
from service.core.errors import InvalidImage
from tests.helpers import bomb_png, encode, random_pixels

LIMITS = images.Limits(max_bytes=1 << 20, max_pixels=1000 * 1000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF"])
def test_supported_formats_report_their_size(fmt: str) -> None:
    image = images.encoded(encode(random_pixels(30, 40), fmt), LIMITS)
    assert (image.format, image.height, image.width) == (fmt, 30, 40)


def test_tiff_is_not_accepted() -> None:
    with pytest.raises(InvalidImage, match="not a JPEG, PNG, BMP or GIF"):
        images.encoded(encode(random_pixels(8, 8), "TIFF"), LIMITS)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(InvalidImage, match="30000x30000"):
        images.encoded(bomb_png(), LIMITS)


def test_byte_limit() -> None:
    with pytest.raises(InvalidImage, match="the limit is 10"):
        images.encoded(encode(random_pixels(8, 8)), images.Limits(max_bytes=10, max_pixels=100))


def test_pixels_keep_their_shape() -> None:
    array = random_pixels(5, 7)
    image = images.pixels(array.tobytes(), 5, 7, 3, LIMITS)
    np.testing.assert_array_equal(image.array, array)


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("PNG", "RGB"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("PNG", "RGBA"),
        ("BMP", "RGB"),
        ("BMP", "L"),
        ("BMP", "P"),
        ("GIF", "P"),
        ("GIF", "L"),
    ],
)
def test_header_reader_agrees_with_pillow(fmt: str, mode: str) -> None:
    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (17, 300), (480, 640), tuple(rng.integers(1, 2000, 2))]:
        data = encode(random_pixels(height, width), fmt, mode)
        with Image.open(io.BytesIO(data)) as image:
            expected = (image.format, image.width, image.height)
        assert tuple(headers.read(data))[:3] == expected


def test_progressive_jpeg_and_exif_segments_are_skipped_to_the_frame() -> None:
    image = Image.fromarray(random_pixels(33, 77))
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "a description long enough to make an APP1 segment"
    image.save(buffer, format="JPEG", progressive=True, exif=exif)
    assert tuple(headers.read(buffer.getvalue()))[:3] == ("JPEG", 77, 33)


@pytest.mark.parametrize(
    "data", [b"\x89PNG\r\n\x1a\n\0\0", b"\xff\xd8\xff\xe0\x00\x10JFIF", b"GIF89a\x01", b"BM\0\0"]
)
def test_truncated_headers_are_errors(data: bytes) -> None:
    with pytest.raises(headers.HeaderError):
        headers.read(data)
