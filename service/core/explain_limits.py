"""Explain's own limits, checked before any work: pixels, the answer's size, calls at once.

An Explain answer carries two PNGs made in the graph: the heatmap at the
model's input size and the overlay at the export's `overlay_max_side` (exports
made before that field: the image's own size). Both sizes follow from the
image's header and the export's settings, so the answer's worst case is known
before the image is queued: raw pixels (a filter byte a row) plus PNG and
zlib framing, which noise cannot beat (zlib falls back to stored blocks).
A 4000x3000 noisy JPEG of 7 MB asked a 32 MB overlay of an unbounded export:
the server did the work, then gRPC failed to send it (RESOURCE_EXHAUSTED, a
traceback in the log) and the client could not tell that from its own limit.

Codes: a request whose answer cannot fit, or whose image is over
--explain-max-pixels, is INVALID_ARGUMENT: it fails the same way on every
retry and on every replica, and the clients here (vggclient.batch and its
--explain-dir) treat RESOURCE_EXHAUSTED as "not now" and retry it. A call
refused because --explain-max-concurrent images are being explained is
RESOURCE_EXHAUSTED: that one succeeds later, after a backoff.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from model.preprocess_config import PreprocessConfig
from service.core.errors import InvalidImage, InvalidRequest, QueueFull, ServiceError
from service.core.images import EncodedImage, ImageInput
from service.core.protocols import TFSERVING_REST, V2_REST

# Room in the answer for everything besides the two PNGs: the protocol's
# framing, the top classes and their labels, the JSON keys.
ANSWER_OVERHEAD = 64 * 1024
# Protocols whose answers carry the PNGs as base64 text (4 bytes for every 3).
_BASE64_PROTOCOLS = frozenset({TFSERVING_REST, V2_REST})

T = TypeVar("T")


@dataclass(frozen=True)
class ExplainLimits:
    """The server's bounds on Explain (flags in service.settings).

    Attributes:
        max_pixels: largest width x height explained (--explain-max-pixels).
        answer_bytes: largest answer, PNGs as sent (--max-message-bytes).
        max_concurrent: images explained at once, all protocols together
            (--explain-max-concurrent).
    """

    max_pixels: int = 16_777_216
    answer_bytes: int = 16 * 1024 * 1024
    max_concurrent: int = 4


def png_bytes(height: int, width: int, channels: int) -> int:
    """The most bytes an 8-bit PNG of that size takes, whatever its pixels.

    zlib's worst case (deflateBound) is the data plus about 0.03% and a few
    bytes; libpng adds 12 bytes per IDAT chunk (8 KB each by default) and 45
    for the signature, IHDR and IEND. 1/256 of the data and 1 KB cover all of
    these with room to spare; the tests hold real PNGs of noise against it.
    """
    raw = height * (1 + width * channels)  # a filter-type byte starts each row
    return raw + raw // 256 + 1024


def answer_bytes(image: EncodedImage, preprocess: PreprocessConfig, protocol: str) -> int:
    """The most bytes the answer to Explain of `image` takes on `protocol`."""
    overlay_height, overlay_width = preprocess.overlay_size(image.height, image.width)
    pngs = png_bytes(preprocess.height, preprocess.width, 1) + png_bytes(
        overlay_height, overlay_width, 3
    )
    if protocol in _BASE64_PROTOCOLS:
        pngs = 4 * -(-pngs // 3)
    return pngs + ANSWER_OVERHEAD


def check(
    image: EncodedImage, preprocess: PreprocessConfig, limits: ExplainLimits, protocol: str
) -> int:
    """Refuses an image Explain must not start on; returns its answer's worst-case size.

    Raises:
        InvalidImage: over --explain-max-pixels, or its answer cannot fit
            --max-message-bytes.
    """
    pixels = image.width * image.height
    if pixels > limits.max_pixels:
        raise InvalidImage(
            f"image is {image.width}x{image.height} = {pixels} pixels; Explain takes at most "
            f"{limits.max_pixels} (--explain-max-pixels): send a smaller image"
        )
    size = answer_bytes(image, preprocess, protocol)
    if size > limits.answer_bytes:
        overlay = "x".join(map(str, reversed(preprocess.overlay_size(image.height, image.width))))
        raise InvalidImage(
            f"the Explain answer for a {image.width}x{image.height} image (overlay {overlay}) "
            f"may take {size} bytes; answers are limited to {limits.answer_bytes} bytes "
            f"(--max-message-bytes): {_remedy(preprocess)}"
        )
    return size


def check_request(
    raws: Sequence[T],
    validate: Callable[[T], ImageInput],
    preprocess: PreprocessConfig,
    limits: ExplainLimits,
    protocol: str,
) -> None:
    """Refuses a request whose images' answers together cannot fit one answer.

    `validate` is the header check that turns a request's image into an
    `EncodedImage`; an image that fails it or `check` is left out of the
    sum, as it fails alone with its own message.

    Raises:
        InvalidRequest: the answers' worst-case sizes add up to more than
            --max-message-bytes.
    """
    sizes = []
    for raw in raws:
        try:
            image = validate(raw)
            if isinstance(image, EncodedImage):
                sizes.append(check(image, preprocess, limits, protocol))
        except ServiceError:
            continue
    total = sum(sizes)
    if len(sizes) > 1 and total > limits.answer_bytes:
        raise InvalidRequest(
            f"the Explain answer for these {len(sizes)} images may take {total} bytes; "
            f"answers are limited to {limits.answer_bytes} bytes (--max-message-bytes): "
            "send fewer images per request"
        )


def _remedy(preprocess: PreprocessConfig) -> str:
    if preprocess.overlay_max_side is None:
        return (
            "this version draws overlays at the image's own size (exported before "
            "overlay_max_side); send a smaller image, or re-export it with this release"
        )
    return "send a smaller image"


class ExplainGate:
    """At most `limit` images explained at once; beyond it, refused at once.

    Refused rather than queued: a gradient pass of a large image holds hundreds
    of MB and seconds of CPU, and a queue of them would take memory and the
    cores from Classify. One gate per server, shared by every protocol.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_use = 0
        self._lock = threading.Lock()  # the in-process batch tool calls from threads too

    @property
    def in_use(self) -> int:
        return self._in_use

    def acquire(self, n: int = 1) -> None:
        """Takes `n` places, all or none; `release(n)` gives them back.

        Raises:
            InvalidRequest: `n` is over the limit (no retry can succeed).
            QueueFull: fewer than `n` places are free now (RESOURCE_EXHAUSTED;
                retry with backoff).
        """
        if n > self.limit:
            raise InvalidRequest(
                f"the request holds {n} images to explain; at most {self.limit} are explained "
                "at once (--explain-max-concurrent): send fewer per request"
            )
        with self._lock:
            if self._in_use + n > self.limit:
                raise QueueFull(
                    f"{self._in_use} images are being explained, the most at once is "
                    f"{self.limit} (--explain-max-concurrent); retry with backoff"
                )
            self._in_use += n

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._in_use -= n

    @contextmanager
    def admit(self, n: int = 1) -> Iterator[None]:
        """`acquire(n)` for the body's duration."""
        self.acquire(n)
        try:
            yield
        finally:
            self.release(n)
