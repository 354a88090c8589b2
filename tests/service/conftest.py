"""Fixtures: one real server on port 0 per module, serving versions 1 and 2 of the tiny model
(or the same model under the name the docs use, `vgg-mini`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers import RunningServer, settings_for
from vggclient.client import Client


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(settings_for(model_dir, versions="latest:2"))
    running.load()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with server.client(timeout=30.0) as c:
        c.wait_until_serving()
        yield c


@pytest.fixture(scope="module")
def vgg_mini(model_dir: Path) -> Iterator[RunningServer]:
    """The tiny model served as `vgg-mini`, the name `make serve` gives: the docs'
    commands name it (REST paths, V2 model names)."""
    running = RunningServer(settings_for(model_dir, model_name="vgg-mini"))
    running.load()
    yield running
    running.stop()
