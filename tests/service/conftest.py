"""A real server on port 0, in a thread of its own, serving a real tiny export."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from service.server import Server
from service.settings import Settings
from vggclient.client import Client


class RunningServer:
    """Runs `Server` on its own event loop thread; tests talk to it over gRPC."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(self._make())
        self.port = self._call(self.server.start())

    async def _make(self) -> Server:
        return Server(self.settings)  # the gRPC server must be made on its loop

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def load(self) -> None:
        self._call(self.server.load())

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> Client:
        return Client(self.target, **kwargs)  # type: ignore[arg-type]

    @property
    def rest_url(self) -> str:
        """http://127.0.0.1:PORT of its REST APIs (and /metrics)."""
        return f"http://127.0.0.1:{self.server.rest_port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.rest_url}/metrics", timeout=10) as response:
            return response.read().decode()

    def stop(self) -> None:
        self._call(self.server.stop(timeout_s=5.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Polls what the server shows (metrics, answers) until `condition` holds.

    For state with no event to wait on, such as a Prometheus gauge; bounded by
    `timeout`.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def settings_for(model_dir: Path, **overrides: object) -> Settings:
    base = Settings(
        model_dir=str(model_dir),
        host="127.0.0.1",
        port=0,
        rest_port=0,
        max_batch_size=8,
        batch_timeout_ms=2.0,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


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
