"""Header validation: refuses bad images without decoding them."""

from __future__ import annotations

import numpy as np
import pytest

from service import images
from service.errors import InvalidImage
from tests.conftest import encode, random_pixels
from tests.service.test_server import bomb_png

LIMITS = images.Limits(max_bytes=1 << 20, max_pixels=1000 * 1000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF"])
def test_supported_formats_report_their_size(fmt: str) -> None:
    image = images.encoded(encode(random_pixels(30, 40), fmt), LIMITS)
    assert (image.format, image.height, image.width) == (fmt, 30, 40)


def test_tiff_is_not_accepted_even_though_pillow_reads_it() -> None:
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
