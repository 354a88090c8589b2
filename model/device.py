"""Names the device TensorFlow computes on, for reports and benchmarks."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import tensorflow as tf


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux: platform's answer is the best there is
        return platform.processor() or "unknown CPU"
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """ "GPU: <name>" when TensorFlow sees a GPU, else "CPU: <model> (<n> cores)"."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores)"
