"""A real server on port 0, in a thread of its own, and what it shows: metrics, model folders.

Test modules import shared server code from here, never from each other or
from a conftest (tests/service/conftest.py holds the fixtures only).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from service.server import Server
from service.settings import Settings
from tests.helpers import (
    ROOT,
    bomb_png,
    encode,
    half_a_jpeg,
    random_pixels,
    require_tool,
    truncated,
    wait_for,
)
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


def addressed(text: str, server: RunningServer) -> str:
    """A command the docs show for `make serve` (gRPC 127.0.0.1:8500, REST
    127.0.0.1:8501), pointed at `server` instead; nothing else changes."""
    rest = server.rest_url.removeprefix("http://")
    return text.replace("127.0.0.1:8500", server.target).replace("127.0.0.1:8501", rest)


# --- metrics ------------------------------------------------------------------------------------

_MISSING = object()


def series(text: str, name: str, default: float | object = _MISSING) -> float:
    """The value of series `name` (with its labels, as exported) in a /metrics text.

    A series that is not there fails the test: a misspelled name or label must
    not read as 0. Pass `default` only where "not exported yet" is expected
    (a labelled counter appears at its first increment), and say why there.
    """
    match = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.M)
    if match:
        return float(match.group(1))
    if default is _MISSING:
        names = sorted(set(re.findall(r"^(\w+)", text, re.M)))
        raise AssertionError(f"/metrics has no series {name}; metric names: {', '.join(names)}")
    return float(default)  # type: ignore[arg-type]


def scrape(server: RunningServer, name: str, default: float | object = _MISSING) -> float:
    """Reads /metrics now and returns series `name`; see `series` for `default`."""
    return series(server.metrics(), name, default)


def rpc_count(server: RunningServer, method: str) -> float:
    """RPCs of `method` the server answered, whatever their status code."""
    pattern = (
        rf'^vggserve_requests_total{{code="\w+",method="{method}",protocol="native-grpc"}} '
        r"([\d.e+-]+)$"
    )
    values = re.findall(pattern, server.metrics(), re.M)
    assert values, f"/metrics counts no {method} call of the native gRPC protocol"
    return sum(float(v) for v in values)


def batch_histogram(metrics: str) -> tuple[float, float]:
    """(images computed, model calls) so far, from the batch size histogram."""
    return series(metrics, "vggserve_batch_size_sum"), series(metrics, "vggserve_batch_size_count")


def wait_for_metric(
    server: RunningServer, name: str, condition: Callable[[float], bool], timeout: float = 60.0
) -> float:
    """Scrapes /metrics until series `name` satisfies `condition`; returns its value."""
    seen: list[float] = []

    def reached() -> bool:
        seen.append(scrape(server, name))
        return condition(seen[-1])

    try:
        wait_for(reached, timeout, f"{name} to reach the value wanted")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it stayed at {seen[-1]}") from None
    return seen[-1]


# --- model folders ------------------------------------------------------------------------------


def publish(source: Path, model_dir: Path, version: int) -> None:
    """Copies a version in the way an export does: staged, then renamed into place."""
    staging = model_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    staging.rename(model_dir / str(version))


# --- the Open Inference Protocol, through tritonclient in a subprocess --------------------------

PROBE = Path(__file__).with_name("triton_probe.py")

# Encoded images that must fail with INVALID_ARGUMENT, and a piece of the reason.
BAD_ENCODED = [
    (b"", "image is empty"),
    (bytes(range(256)) * 4, "not a JPEG, PNG, BMP or GIF"),
    (bomb_png(), "30000x30000 = 900000000 pixels; the limit is"),
    (encode(random_pixels(64, 64), "JPEG")[:100], "image header is corrupt"),
    (half_a_jpeg(), "image does not decode"),
    (truncated("PNG"), "Invalid PNG data"),
]


def run_probe(*args: str) -> dict[str, Any]:
    """Runs tests/service/triton_probe.py (tritonclient cannot share this process's stubs)."""
    require_tool(
        "tritonclient" if importlib.util.find_spec("tritonclient") else None,
        "tritonclient is not installed (`make venv` installs it)",
    )
    done = subprocess.run(
        [sys.executable, str(PROBE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def post_json(server: RunningServer, path: str, body: object) -> tuple[int, dict[str, Any]]:
    """POSTs `body` as JSON to the server's REST port; (status, JSON answer), errors included."""
    request = urllib.request.Request(
        f"{server.rest_url}{path}", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def model_calls(server: RunningServer) -> float:
    """vggserve_model_calls_total: model calls that served requests."""
    return scrape(server, "vggserve_model_calls_total")
