"""Format and size of an encoded image, read from its first bytes.

The server must refuse bad images before they reach a batch, without decoding
them. Pillow's lazy open does this too, but costs 50-200 us a request (it
builds a whole image object); these fixed-layout reads cost a few us. Each
parser is checked against Pillow in the tests.
"""

from __future__ import annotations

import struct
from typing import NamedTuple


class Header(NamedTuple):
    """What the decoder will allocate for an image.

    `width` and `height` are the size the decoder outputs: for a GIF the first
    frame's own size (TensorFlow decodes that frame at its size, whatever the
    logical screen says). `held_pixels` is what the decoder holds in memory
    while it works: for a GIF every frame's pixels (the GIF library reads all
    frames before TensorFlow keeps the first), otherwise width x height.
    """

    format: str  # "JPEG", "PNG", "BMP" or "GIF"
    width: int
    height: int
    held_pixels: int


class HeaderError(ValueError):
    """The bytes are not a supported image, or its header is cut short or corrupt."""


# JPEG start-of-frame markers (baseline, progressive, lossless, ...), which
# carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def read(data: bytes) -> Header:
    """The header of a JPEG, PNG, BMP or GIF image.

    Raises:
        HeaderError: unknown format, or a header that is truncated or corrupt.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data)
    if data[:2] == b"BM":
        return _bmp(data)
    raise HeaderError("unknown format")


def _png(data: bytes) -> Header:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("PNG header is truncated or lacks IHDR")
    width, height = struct.unpack_from(">II", data, 16)
    return Header("PNG", width, height, width * height)


def _bmp(data: bytes) -> Header:
    if len(data) < 26:
        raise HeaderError("BMP header is truncated")
    (info_size,) = struct.unpack_from("<I", data, 14)
    # TensorFlow's decoder reads 32-bit sizes at offsets 18 and 22 whatever the
    # info header says, so an OS/2 header (16-bit sizes) would be decoded at a
    # size other than the one it states: refuse it rather than guess.
    if info_size < 40:
        raise HeaderError(
            f"BMP info header of {info_size} bytes (OS/2?); only Windows BMPs (40+) decode"
        )
    width, height = struct.unpack_from("<ii", data, 18)
    # A negative height means rows are stored top-down; the size is its magnitude.
    return Header("BMP", width, abs(height), abs(width * height))


def _jpeg(data: bytes) -> Header:
    _, width, height = _jpeg_frame(data)
    return Header("JPEG", width, height, width * height)


def _jpeg_frame(data: bytes) -> tuple[int, int, int]:
    """(position, width, height) of a JPEG's first start-of-frame segment."""
    position = 2
    end = len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            raise HeaderError("JPEG marker expected")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2:
            raise HeaderError("JPEG segment length is corrupt")
        if marker in _SOF:
            if position + 9 > end:
                break
            height, width = struct.unpack_from(">HH", data, position + 5)
            return position, width, height
        position += 2 + length
    raise HeaderError("JPEG header is truncated before its frame header")


def _gif(data: bytes) -> Header:
    """Walks the GIF's blocks to every frame's image descriptor.

    The logical screen size (bytes 6-9) is only a hint: a 10x10 screen may hold
    a 30000x30000 frame in under 1 MB, and the decoder sizes its output by the
    frame. Walking the blocks reads one length byte per 255 bytes of image data.
    """
    if len(data) < 13:
        raise HeaderError("GIF header is truncated")
    flags = data[10]
    position = 13 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0)
    frames: list[tuple[int, int]] = []
    end = len(data)
    while position < end:
        block = data[position]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            position = _skip_sub_blocks(data, position + 2)
        elif block == 0x2C:  # image descriptor: left, top, width, height, flags
            if position + 10 > end:
                break
            width, height = struct.unpack_from("<HH", data, position + 5)
            frames.append((width, height))
            local = data[position + 9]
            position += 10 + (3 << ((local & 0x07) + 1) if local & 0x80 else 0)
            position = _skip_sub_blocks(data, position + 1)  # after the LZW code size
        else:
            raise HeaderError(f"GIF block 0x{block:02x} is not a frame or an extension")
    if not frames:
        raise HeaderError("GIF is truncated before its first frame")
    width, height = frames[0]
    return Header("GIF", width, height, sum(w * h for w, h in frames))


def _skip_sub_blocks(data: bytes, position: int) -> int:
    """The position after a chain of sub-blocks (length byte, data; 0 ends it)."""
    end = len(data)
    while position < end:
        size = data[position]
        position += 1 + size
        if size == 0:
            return position
    return end


# The whole IEND chunk: empty, so its length and CRC never vary.
_IEND = b"\0\0\0\0IEND\xaeB`\x82"


def ends_early(data: bytes) -> bool:
    """Whether a JPEG or PNG file looks cut short: it lacks its end marker.

    A JPEG ends with an end-of-image marker (FF D9) after its frame; a PNG
    with a whole IEND chunk (its CRC included). Neither marker can occur in a
    complete JPEG's image data (its entropy-coded bytes escape every FF), and
    bytes after them (trailing garbage) are ignored by the decoders and here.
    A file that ends with its marker is answered from its last bytes (well
    under a microsecond); others cost a walk to the frame and a scan back to
    it (10 us for 2.5 kB, 130 us for 50 kB cut from 128x128 and 640x640 JPEGs).

    Only a hint, which the runtime confirms with TensorFlow's decoder before
    refusing anything. Of 4706 damaged variants of 29 files
    (scripts/ends_early_check.py) it flagged 2757, every cut file that
    passes read() and that TensorFlow refuses; TensorFlow refused all of them
    but one, a JPEG cut between the FF and the D9 of its end marker. Bytes
    that merely look like the marker (in a table or a comment) would hide a
    cut, and other damage (a changed byte) leaves the marker in place.
    """
    if data[:3] == b"\xff\xd8\xff":
        if data.endswith(b"\xff\xd9"):  # the frame comes before: read() found it
            return False
        try:
            frame, _, _ = _jpeg_frame(data)
        except HeaderError:
            return False
        return data.rfind(b"\xff\xd9", frame) < 0
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.endswith(_IEND):
            return False
        end = data.rfind(b"IEND", 33)  # after the signature and the IHDR chunk
        return end < 0 or end + 8 > len(data)  # the tag, then its 4-byte CRC
    return False
