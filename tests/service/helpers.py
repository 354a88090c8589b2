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
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker

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
    """POSTs `body` as JSON to the server's REST port; (status, JSON answer), errors included.

    The answer is checked against the server's OpenAPI description first.
    """
    url = f"{server.rest_url}{path}"
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, content_type, raw = (
                response.status,
                response.headers["Content-Type"],
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        with exc:
            status, content_type, raw = exc.code, exc.headers["Content-Type"], exc.read()
    assert_answer_described(url, "POST", status, content_type, raw, sent=data)
    return status, json.loads(raw)


def model_calls(server: RunningServer) -> float:
    """vggserve_model_calls_total: model calls that served requests."""
    return scrape(server, "vggserve_model_calls_total")


# --- the REST port's OpenAPI description ---------------------------------------------------------


def openapi_document(base_url: str, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """The description the server at `base_url` (http[s]://host:port) serves at /openapi.json."""
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10, context=context) as answer:
        document: dict[str, Any] = json.loads(answer.read())
    return document


def _described(spec: dict[str, Any], method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """(path template, operation) of `method path`; the most literal template wins
    (`/v1/models/{name}:predict` over `/v1/models/{name}`)."""
    best: tuple[int, str, dict[str, Any]] | None = None
    for template, item in spec["paths"].items():
        operation = item.get(method.lower())
        if operation is None:
            continue
        patterns = {
            p["name"]: p["schema"].get("pattern", "^[^/]+$").removeprefix("^").removesuffix("$")
            for p in operation.get("parameters", [])
            if p.get("in") == "path"
        }
        regex = "".join(
            f"(?:{patterns.get(part[1:-1], '[^/]+')})" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{\w+\})", template)
        )
        literal = len(re.sub(r"\{\w+\}", "", template))
        if re.fullmatch(regex, path) and (best is None or literal > best[0]):
            best = (literal, template, operation)
    return None if best is None else (best[1], best[2])


def assert_matches_schema(
    spec: dict[str, Any], schema: dict[str, Any], body: Any, what: str
) -> None:
    """Fails, listing every fault, unless `body` (parsed JSON) is valid under `schema` of `spec`."""
    # The components ride along so that "#/components/..." references resolve.
    validator = OAS30Validator(
        {**schema, "components": spec["components"]}, format_checker=oas30_format_checker
    )
    faults = sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '(the body)'}: {e.message}"
        for e in validator.iter_errors(body)
    )
    assert not faults, f"{what} does not match the OpenAPI description:\n" + "\n".join(faults)


def assert_matches_openapi(
    spec: dict[str, Any],
    method: str,
    path: str,
    status: int,
    body: Any,
    content_type: str = "application/json",
) -> None:
    """Fails unless the answer is one the description allows for `method path`.

    Args:
        spec: the server's /openapi.json (`openapi_document`).
        path: the request's path; a query string is ignored.
        body: the answer's JSON, parsed; for a binary media type, its bytes
            (only the media type is checked then).
        content_type: the answer's Content-Type header.

    A path the description does not list must be the router's refusal: 404
    or 405, with the error body.
    """
    path = path.split("?", 1)[0]
    found = _described(spec, method, path)
    if found is None:
        assert status in (404, 405), f"{method} {path} is not described but answered {status}"
        assert_matches_schema(spec, {"$ref": "#/components/schemas/Error"}, body, f"{status} body")
        return
    template, operation = found
    what = f"{method} {template} -> {status}"
    response = operation["responses"].get(str(status))
    assert response is not None, (
        f"{what}: the description lists only {', '.join(operation['responses'])}"
    )
    media = content_type.split(";", 1)[0].strip()
    content = response.get("content", {})
    assert media in content, f"{what}: answered {media}, described {', '.join(content)}"
    if media == "application/json":
        assert_matches_schema(spec, content[media]["schema"], body, what)


def assert_answer_described(
    url: str,
    method: str,
    status: int,
    content_type: str,
    raw: bytes,
    context: ssl.SSLContext | None = None,
    sent: bytes | None = None,
) -> None:
    """Checks one answer of a REST port against the description that same port serves.

    A JSON request the server accepted (`sent`, answered 2xx) must be one the
    description allows too: a client generated from it can send what works.
    """
    parts = urllib.parse.urlsplit(url)
    spec = openapi_document(f"{parts.scheme}://{parts.netloc}", context)
    body = json.loads(raw) if content_type.startswith("application/json") else raw
    assert_matches_openapi(spec, method, parts.path, status, body, content_type)
    if sent is not None and 200 <= status < 300:
        try:
            request = json.loads(sent)
        except ValueError:
            return  # binary data (V2's extension): described as bytes
        found = _described(spec, method, parts.path)
        assert found is not None
        template, operation = found
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert_matches_schema(spec, schema, request, f"the request of {method} {template}")
