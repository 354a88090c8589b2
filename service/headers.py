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
    format: str  # "JPEG", "PNG", "BMP" or "GIF"
    width: int
    height: int


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
        if len(data) < 10:
            raise HeaderError("GIF header is truncated")
        width, height = struct.unpack_from("<HH", data, 6)
        return Header("GIF", width, height)
    if data[:2] == b"BM":
        return _bmp(data)
    raise HeaderError("unknown format")


def _png(data: bytes) -> Header:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("PNG header is truncated or lacks IHDR")
    width, height = struct.unpack_from(">II", data, 16)
    return Header("PNG", width, height)


def _bmp(data: bytes) -> Header:
    if len(data) < 26:
        raise HeaderError("BMP header is truncated")
    (info_size,) = struct.unpack_from("<I", data, 14)
    if info_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    elif info_size >= 40:
        width, height = struct.unpack_from("<ii", data, 18)
    else:
        raise HeaderError(f"BMP info header of unsupported size {info_size}")
    # A negative height means rows are stored top-down; the size is its magnitude.
    return Header("BMP", width, abs(height))


def _jpeg(data: bytes) -> Header:
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
            return Header("JPEG", width, height)
        position += 2 + length
    raise HeaderError("JPEG header is truncated before its frame header")
