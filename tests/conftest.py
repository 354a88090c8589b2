"""Shared fixtures: tiny models trained and exported for real, once per session."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from model.train import TrainOptions, TrainResult, train

# Small enough to train in seconds on 2 cores, big enough to learn the task.
# (No batch norm or augmentation: both slow down learning over a few epochs.)
TINY = dict(
    preset="vgg-mini",
    input_size=16,
    width=0.5,
    per_class=60,
    epochs=3,
    batch_size=32,
    learning_rate=3e-3,
    batch_norm=False,
    augment=False,
    patience=3,
    verbose=0,
)


def tiny_options(output: Path, **overrides: object) -> TrainOptions:
    return TrainOptions(output=str(output), name="tiny", **{**TINY, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A tiny vgg-mini trained on the synthetic set and exported as version 1."""
    return train(tiny_options(tmp_path_factory.mktemp("models")))


def require_tool(path: str | None, missing: str, env: Mapping[str, str] = os.environ) -> str:
    """`path` if the tool was found; else skip the test, or fail it under CI=true.

    A developer's machine may lack nginx, docker-compose or hadolint; CI must
    not, or the tests that need them would pass there without running.
    """
    if path:
        return path
    if env.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(f"{missing}, and CI=true: CI must run this test", pytrace=False)
    pytest.skip(missing)


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    """Encodes uint8 pixels as an image file (optionally converted to `mode`)."""
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def random_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def model_dir(tiny_model: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/tiny with versions 1 and 2 (the same weights, told apart by number)."""
    root = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(tiny_model.version_dir, root / "1")
    shutil.copytree(tiny_model.version_dir, root / "2")
    return root
