"""Does `headers.ends_early` flag only files TensorFlow refuses? Compares both on damaged files.

    .venv/bin/python scripts/ends_early_check.py

Makes JPEGs (baseline, progressive, optimized, greyscale, 4:4:4, one with an
EXIF-style thumbnail in APP1) and PNGs (RGB, greyscale) at four sizes, then
damages each: cut at every one of its last 40 bytes and 60 random places,
trailing garbage or zeros, cut then garbage, cut then an end marker, 40 single
byte changes and 20 deletions. For each variant it asks TensorFlow's decoder
(model.preprocessing.decode, as the server runs it) and the hint, and prints
one JSON object: how many variants each accepts or refuses, how often the
runtime's confirmation of a flagged file (the decoder op alone) disagrees
with decode(), the variants the hint flags that TensorFlow decodes (each
costs the server one wasted decode alone; none is refused because of the
hint) and the cut files that pass the header check and TensorFlow refuses
but the hint misses (those still fail their batch, and cost it a second
model call).
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from PIL import Image

from model.data import synthetic
from model.preprocessing import decode
from service.core import headers
from service.core.runtime import _decoder_refuses

SIZES = ((16, 16), (64, 64), (128, 128), (96, 200))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decodes(data: tf.Tensor) -> tf.Tensor:
    return tf.shape(decode(data, 36_000_000))


def tensorflow_decodes(data: bytes) -> bool:
    try:
        _decodes(tf.constant(data))
    except tf.errors.InvalidArgumentError:
        return False
    return True


def encode(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    made = {}
    for size in SIZES:
        px = synthetic.render(1, size, rng)
        name = f"{size[1]}x{size[0]}"
        made[f"jpeg-{name}"] = encode(px, "JPEG", quality=90)
        made[f"jpeg-progressive-{name}"] = encode(px, "JPEG", quality=90, progressive=True)
        made[f"jpeg-optimized-{name}"] = encode(px, "JPEG", quality=75, optimize=True)
        made[f"jpeg-grey-{name}"] = encode(px[..., 0], "JPEG")
        made[f"jpeg-444-{name}"] = encode(px, "JPEG", quality=100, subsampling=0)
        made[f"png-{name}"] = encode(px, "PNG")
        made[f"png-grey-{name}"] = encode(px[..., 0], "PNG")
    thumbnail, main = made["jpeg-16x16"], made["jpeg-128x128"]
    app1 = b"Exif\0\0" + thumbnail  # an end marker before the main frame
    made["jpeg-thumbnail-128x128"] = (
        main[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + main[2:]
    )
    return made


def variants(data: bytes, r: random.Random) -> list[tuple[str, bytes]]:
    n = len(data)
    cuts = set(range(max(3, n - 40), n)) | {r.randrange(3, n) for _ in range(60)} | {n // 2}
    out = [(f"cut at {k}", data[:k]) for k in sorted(cuts)]
    marker = b"\xff\xd9" if data[:2] == b"\xff\xd8" else b"\0\0\0\0IEND\xaeB`\x82"
    out += [
        ("trailing garbage", data + b"garbage" * 5),
        ("trailing zeros", data + b"\0" * 100),
        ("half, then garbage", data[: n // 2] + b"garbage"),
        ("half, then an end marker", data[: n // 2] + marker),
    ]
    for _ in range(40):
        changed = bytearray(data)
        changed[r.randrange(n)] = r.randrange(256)
        out.append(("a byte changed", bytes(changed)))
    for _ in range(20):
        shorter = bytearray(data)
        at = r.randrange(n)
        del shorter[at : at + r.randrange(1, 50)]
        out.append(("bytes deleted", bytes(shorter)))
    return out


def passes_header(data: bytes) -> bool:
    try:
        headers.read(data)
    except headers.HeaderError:
        return False
    return True


def main() -> int:
    r = random.Random(0)
    counts = {"variants": 0, "tensorflow_decodes": 0, "tensorflow_refuses": 0, "flagged": 0}
    counts |= {"flagged_and_refused": 0, "refused_after_header_check": 0, "cuts_refused": 0}
    counts["confirmation_disagrees"] = 0  # the runtime's check of a flagged file vs decode()
    wrongly_flagged: list[str] = []
    missed_cuts: list[str] = []
    made = files()
    for name, data in made.items():
        assert tensorflow_decodes(data), name
        for kind, variant in variants(data, r):
            decodes = tensorflow_decodes(variant)
            flagged = headers.ends_early(variant)
            counts["variants"] += 1
            counts["tensorflow_decodes" if decodes else "tensorflow_refuses"] += 1
            counts["flagged"] += flagged
            counts["flagged_and_refused"] += flagged and not decodes
            if flagged:
                counts["confirmation_disagrees"] += decodes != (_decoder_refuses(variant) is None)
            if flagged and decodes:
                wrongly_flagged.append(f"{name}: {kind}")
            if not decodes and passes_header(variant):
                counts["refused_after_header_check"] += 1
                if kind.startswith("cut"):
                    counts["cuts_refused"] += 1
                    if not flagged:
                        missed_cuts.append(f"{name}: {kind}")
    result = {
        "files": len(made),
        **counts,
        "flagged_yet_decoded": wrongly_flagged,
        "cuts_refused_yet_not_flagged": missed_cuts,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
