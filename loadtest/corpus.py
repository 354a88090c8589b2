"""Image corpora for load tests and benchmarks, generated (nothing downloaded).

Images are drawn by the synthetic data set's renderer, so they look like what
the default model was trained on, then encoded as JPEG or PNG.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# (height, width) pairs from thumbnail to VGA, for the mixed corpus.
MIXED_SIZES = ((32, 32), (64, 64), (96, 128), (128, 128), (240, 320), (480, 640))


def encode(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def fixed(count: int = 64, size: int = 128, fmt: str = "JPEG", seed: int = 0) -> list[bytes]:
    """`count` square images of one size and format (the benchmark's corpus)."""
    # Here, not at the top: model.data imports TensorFlow, and loadtest.bench's
    # --help must answer without it.
    from model.data import synthetic

    rng = np.random.default_rng(seed)
    n_classes = len(synthetic.CLASS_NAMES)
    return [encode(synthetic.render(i % n_classes, (size, size), rng), fmt) for i in range(count)]


def mixed(count: int = 48, seed: int = 0) -> list[bytes]:
    """JPEG and PNG images of mixed sizes, 32x32 up to 640x480 (the load test's corpus)."""
    # Here, not at the top: model.data imports TensorFlow, and loadtest.bench's
    # --help must answer without it.
    from model.data import synthetic

    rng = np.random.default_rng(seed)
    n_classes = len(synthetic.CLASS_NAMES)
    images = []
    for i in range(count):
        height, width = MIXED_SIZES[i % len(MIXED_SIZES)]
        pixels = synthetic.render(i % n_classes, (height, width), rng)
        images.append(encode(pixels, "JPEG" if i % 2 == 0 else "PNG"))
    return images
