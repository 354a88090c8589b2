"""The images of a request as the adapters hand them to the core.

An adapter turns its wire format into these without per-image work: a
sequence of `Encoded`/`Pixels` whose length is known up front (a protobuf
repeated field or a parsed JSON list wrapped lazily), or one `PixelBlock`
for a whole [N, H, W, C] tensor. The core checks the claimed counts and
shapes as a whole (service.core.admission) before it touches any image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Encoded:
    """An encoded image (JPEG, PNG, BMP, GIF) as the client sent it."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pixels:
    """Raw row-major uint8 pixels and the shape the client says they have."""

    data: bytes
    height: int
    width: int
    channels: int


RawImage = Encoded | Pixels | None  # None: the request carried no image


@dataclass(frozen=True, slots=True)
class PixelBlock:
    """`count` images of one shape, row-major uint8, back to back in `data`.

    Nothing is sliced until the whole shape has been checked against the
    data's length and the limits, so a claim of a trillion 0x0 images costs
    one comparison.
    """

    data: bytes | memoryview
    count: int
    height: int
    width: int
    channels: int

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[RawImage]:
        size = self.height * self.width * self.channels
        view = memoryview(self.data)
        for i in range(self.count):
            yield Pixels(
                bytes(view[i * size : (i + 1) * size]), self.height, self.width, self.channels
            )


class Lazy(Sequence[RawImage], Generic[S]):
    """A sequence of wire items turned into images one at a time, when read.

    `len()` is the wire sequence's, so the core can refuse by count before
    converting (base64 decoding, tf.Example reading) a single item.
    """

    def __init__(self, items: Sequence[S], convert: Callable[[int, S], RawImage]) -> None:
        self._items = items
        self._convert = convert

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> RawImage: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RawImage]: ...
    def __getitem__(self, index: int | slice) -> RawImage | Sequence[RawImage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._convert(index, self._items[index])

    def __iter__(self) -> Iterator[RawImage]:
        for index, item in enumerate(self._items):
            yield self._convert(index, item)


Images = Sequence[RawImage] | PixelBlock
