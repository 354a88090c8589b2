"""Admission: a request's claimed counts and shapes, checked as a whole first.

Runs before any per-image object exists, on every protocol: the number of
images against the most one request may carry (the queue's size: a request
the queue could never hold is refused at once, not after a thousand header
reads), and a pixel tensor's shape (no zero or negative side, a channel
count the model takes, the pixel limit, the data's length). A 110-byte
request that claims 10^12 empty images costs a few comparisons.
"""

from __future__ import annotations

from service.core.errors import InvalidImage, InvalidRequest, QueueFull
from service.core.images import CHANNELS, Limits
from service.core.requests import Images, PixelBlock


def count(n: int, limits: Limits) -> None:
    """Refuses a request with no image, or more than one request may carry."""
    if n <= 0:
        raise InvalidRequest("the request holds no image: send at least one")
    if n > limits.max_images:
        raise QueueFull(
            f"the request holds {n} images; one request may carry at most {limits.max_images} "
            "(the queue's size, --max-queue): split it"
        )


def shape(height: int, width: int, channels: int, limits: Limits) -> None:
    """Refuses a pixel shape no image can have, before any buffer is read."""
    if channels not in CHANNELS:
        raise InvalidImage(
            f"pixels have {channels} channels; supported: 1 (grey), 3 (RGB), 4 (RGBA)"
        )
    if height <= 0 or width <= 0:
        raise InvalidImage(f"image is {width}x{height}; both sides must be at least 1 pixel")
    if height * width > limits.max_pixels:
        raise InvalidImage(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )


def block(pixels: PixelBlock, limits: Limits) -> None:
    """A whole [N, H, W, C] tensor: count, shape and data length, in that order."""
    count(pixels.count, limits)
    shape(pixels.height, pixels.width, pixels.channels, limits)
    expected = pixels.count * pixels.height * pixels.width * pixels.channels
    if len(pixels.data) != expected:
        claimed = [pixels.count, pixels.height, pixels.width, pixels.channels]
        raise InvalidImage(
            f"pixel data of shape {claimed} needs {expected} bytes; got {len(pixels.data)}"
        )


def request(images: Images, limits: Limits) -> None:
    """Everything about a request's images that can be checked without reading one."""
    if isinstance(images, PixelBlock):
        block(images, limits)
    else:
        count(len(images), limits)
