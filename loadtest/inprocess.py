"""The SavedModel called directly in this process: what served figures are measured against.

`throughput` runs batches for a few seconds per batch size (the in-process
table of loadtest.bench); `batch1_ms` times single-image calls one at a
time and takes their median, the figure a served p50 at one caller is
compared with (the per-call overhead of loadtest.protocol_bench). Both call
`serving_default` as the server does: encoded bytes in, decoding in the graph.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BATCH1_CALLS = 200
WARMUP_CALLS = 10  # the first calls at a new input shape set up kernels


def load(model_dir: str | Path) -> Any:
    """The `serving_default` signature of `model_dir`'s newest version (or of a version folder)."""
    from model import layout

    version_dir = layout.latest_version_dir(model_dir)
    if version_dir is None:
        raise FileNotFoundError(
            f"no exported version under {model_dir} (a folder with saved_model.pb, or with "
            "integer version folders holding one): run `make train` first"
        )
    import tensorflow as tf  # after the check: a wrong folder fails without the long import

    return tf.saved_model.load(str(version_dir)).signatures[layout.SERVING_SIGNATURE]


def throughput(
    signature: Any, images: Sequence[bytes], batch_sizes: Sequence[int], seconds: float
) -> list[dict[str, Any]]:
    """Images/s and mean ms per batch at each batch size, each run for `seconds`."""
    import tensorflow as tf

    from model import layout

    rows = []
    for size in batch_sizes:
        batch = [images[i % len(images)] for i in range(size)]
        for _ in range(3):
            signature(images=tf.constant(batch))
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            signature(images=tf.constant(batch))[layout.OUTPUT].numpy()
            calls += 1
        elapsed = time.perf_counter() - started
        rows.append(
            {
                "batch": size,
                "images_per_s": calls * size / elapsed,
                "ms_per_batch": 1000.0 * elapsed / calls,
            }
        )
    return rows


def batch1_ms(signature: Any, images: Sequence[bytes], calls: int = BATCH1_CALLS) -> float:
    """Median ms of one call on one image, over `calls` calls cycling through `images`.

    A median, like the served p50 it is subtracted from: a burst of other
    work on the machine moves a few calls, not the figure. The tensor is
    built and the answer read back inside each timed call, as the server does.
    """
    if not images or calls < 1:
        raise ValueError(
            f"batch1_ms needs at least one image and one call (got {len(images)} image(s), "
            f"calls={calls})"
        )
    import tensorflow as tf

    from model import layout

    times = []
    for i in range(WARMUP_CALLS + calls):
        data = images[i % len(images)]
        started = time.perf_counter()
        signature(images=tf.constant([data]))[layout.OUTPUT].numpy()
        if i >= WARMUP_CALLS:
            times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)
