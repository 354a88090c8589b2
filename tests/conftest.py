"""Shared fixtures: tiny models trained and exported for real, once per session.

Helpers live in tests/helpers.py; this file holds fixtures only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from model.train import TrainResult, train
from tests.helpers import tiny_options


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A tiny vgg-mini trained on the synthetic set and exported as version 1."""
    return train(tiny_options(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def older_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Another tiny vgg-mini: other seed (other start and images), one epoch; other weights."""
    return train(tiny_options(tmp_path_factory.mktemp("older-models"), seed=1, epochs=1))


@pytest.fixture(scope="session")
def model_dir(
    tiny_model: TrainResult,
    older_tiny_model: TrainResult,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """models/tiny with two versions of different weights: 1 (older_tiny_model), 2 (tiny_model).

    Different weights let a test check which version answered by its
    probabilities (tests.helpers.assert_answered_by), not by the number the
    server reports.
    """
    root = tmp_path_factory.mktemp("served") / "tiny"
    shutil.copytree(older_tiny_model.version_dir, root / "1")
    shutil.copytree(tiny_model.version_dir, root / "2")
    return root
