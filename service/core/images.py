"""Request images as plain Python objects, validated from their headers alone.

The server never decodes an image in Python: decoding happens batched inside
the SavedModel's graph. Here we only read the few header bytes that say the
format and the size (`service.core.headers`), so an unsupported file, an empty
buffer or a decompression bomb (a small PNG that claims 30000x30000) is
refused before it can reach a batch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from service.core import headers
from service.core.errors import InvalidImage

CHANNELS = (1, 3, 4)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-image limits, and the most images one request may carry (service.core.admission)."""

    max_bytes: int
    max_pixels: int
    max_images: int = 1024


@dataclass(frozen=True, slots=True)
class EncodedImage:
    data: bytes
    format: str
    height: int
    width: int


@dataclass(frozen=True, slots=True)
class PixelImage:
    array: np.ndarray  # uint8 (height, width, channels), channels in CHANNELS


ImageInput = EncodedImage | PixelImage


def encoded(data: bytes, limits: Limits) -> EncodedImage:
    """Validates encoded image bytes from the header."""
    if not data:
        raise InvalidImage("image is empty: send JPEG, PNG, BMP or GIF bytes, or raw pixels")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        header = headers.read(data)
    except headers.HeaderError as exc:
        if str(exc) == "unknown format":
            raise InvalidImage(
                f"image is not a JPEG, PNG, BMP or GIF file (starts with {data[:8]!r})"
            ) from None
        raise InvalidImage(f"image header is corrupt: {exc}") from None
    fmt, width, height, held = header
    if fmt == "GIF":
        _check_gif(data, width, height, held, limits)
    _check_size(height, width, limits)
    return EncodedImage(data, fmt, height, width)


def pixels(data: bytes, height: int, width: int, channels: int, limits: Limits) -> PixelImage:
    """Validates raw row-major uint8 pixels against their stated shape."""
    if channels not in CHANNELS:
        raise InvalidImage(
            f"pixels have {channels} channels; supported: 1 (grey), 3 (RGB), 4 (RGBA)"
        )
    _check_size(height, width, limits)
    expected = height * width * channels
    if len(data) != expected:
        raise InvalidImage(
            f"pixel buffer is {len(data)} bytes; {height}x{width}x{channels} needs {expected}"
        )
    return PixelImage(np.frombuffer(data, dtype=np.uint8).reshape(height, width, channels))


def _check_gif(data: bytes, width: int, height: int, held: int, limits: Limits) -> None:
    screen = "{}x{}".format(*struct.unpack_from("<HH", data, 6))
    if height * width > limits.max_pixels:
        raise InvalidImage(
            f"GIF frame is {width}x{height} = {width * height} pixels (its screen says "
            f"{screen}); the limit is {limits.max_pixels}"
        )
    if held > limits.max_pixels:
        raise InvalidImage(
            f"GIF frames hold {held} pixels in all; the limit is {limits.max_pixels} "
            "(every frame is read to decode the first)"
        )


def _check_size(height: int, width: int, limits: Limits) -> None:
    if height <= 0 or width <= 0:
        raise InvalidImage(f"image is {width}x{height}; both sides must be at least 1 pixel")
    if height * width > limits.max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
