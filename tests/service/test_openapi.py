"""The REST port's OpenAPI description (/openapi.json) and its viewer (/docs).

The description must be valid OpenAPI, list exactly the routes the server
mounts, and allow every answer the server gives: here each described route
is called once, and the REST tests (test_tfserving.py, test_v2_rest.py) check
their answers against it too (tests.service.helpers.assert_matches_openapi).
The viewer is Swagger UI from swagger-ui-bundle's files, served by the
server itself; a headless chromium renders it offline when it is installed.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import shutil
import tomllib
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from service.adapters import api_docs, openapi, rest, web_page
from service.adapters.grpc_limits import RpcLimit
from service.core import RequestContext
from service.server import REST_PROTOCOLS
from tests.helpers import ROOT, require_tool
from tests.service.helpers import (
    RunningServer,
    assert_matches_openapi,
    openapi_document,
    settings_for,
)

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000


def is_page(path: str) -> bool:
    """Browser pages and their files, which the description leaves out (they are no API):
    the viewer (/docs...) and the web page (/ and /ui/...)."""
    pages, folders = (web_page.INDEX_PATH, api_docs.DOCS_PATH), (web_page.FILES_PREFIX, "/docs/")
    return path in pages or path.startswith(folders)


def get(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body); POSTs when there is `data`."""
    request = urllib.request.Request(url, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, _lower(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _lower(error.headers), error.read()


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture(scope="module")
def spec(server: RunningServer) -> dict[str, Any]:
    return openapi_document(server.rest_url)


def test_the_description_is_valid_openapi_3_0(spec: dict[str, Any]) -> None:
    validate(spec)  # openapi-spec-validator: raises on any fault
    # 3.0, not 3.1: Swagger UI 4 (swagger-ui-bundle 1.1) renders 3.0.n only.
    assert spec["openapi"] == "3.0.3"
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_route_served_is_described_and_nothing_else(
    server: RunningServer, spec: dict[str, Any]
) -> None:
    served = {
        (method, openapi.openapi_path(path))
        for method, path in server.server.rest_routes()
        if not is_page(path)
    }
    described = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert served == described, (
        f"served, not described: {sorted(served - described)}; "
        f"described, not served: {sorted(described - served)}"
    )
    # No description outlives its route: every operation of every Api is used.
    stems = {
        operation["operationId"].removesuffix("Version")
        for item in spec["paths"].values()
        for operation in item.values()
    }
    apis = [openapi.SERVER_API, *(protocol.api for protocol in REST_PROTOCOLS)]
    assert stems == {name for api in apis for name in api.operations}
    # The pages are served all the same.
    assert {(m, p) for m, p in server.server.rest_routes() if is_page(p)} == {
        ("GET", "/"),
        ("GET", "/ui/{file}"),
        ("GET", "/docs"),
        ("GET", "/docs/static/{file}"),
    }


def test_each_described_route_answers_as_described(
    server: RunningServer, spec: dict[str, Any]
) -> None:
    """Every operation, called with its examples (POSTs with an empty object: a 400)."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            examples = {
                p["name"]: p["schema"]["example"]
                for p in operation.get("parameters", [])
                if p.get("in") == "path"
            }
            concrete = path
            for name, example in examples.items():
                concrete = concrete.replace(f"{{{name}}}", str(example))
            status, headers, body = get(
                server.rest_url + concrete, b"{}" if method == "post" else None
            )
            media = headers["content-type"]
            expected = 400 if method == "post" else 200
            assert status == expected, (method, concrete, status, body[:200])
            parsed = json.loads(body) if media.startswith("application/json") else body
            assert_matches_openapi(spec, method, concrete, status, parsed, media)
            # The answer carries the headers described (X-Request-Id, Server-Timing), if any.
            described = {h.lower() for h in operation["responses"][str(status)].get("headers", {})}
            assert described <= set(headers), (method, concrete, described - set(headers))
            assert ("x-request-id" in headers) == ("x-request-id" in described), (method, concrete)


def test_open_routes_say_so_and_the_rest_need_the_bearer(spec: dict[str, Any]) -> None:
    open_routes = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == []
    }
    assert open_routes == {
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
    }
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if (method.upper(), path) not in open_routes:
                assert {"401", "429"} <= set(operation["responses"]), (method, path)
            if "requestBody" in operation:
                assert {"400", "408", "413"} <= set(operation["responses"]), (method, path)


def test_the_model_name_is_a_path_parameter_with_the_served_model_as_example(
    spec: dict[str, Any],
) -> None:
    operation = spec["paths"]["/v1/models/{name}/versions/{version}:predict"]["post"]
    parameters = {p.get("name") or p["$ref"]: p for p in operation["parameters"]}
    assert parameters["name"]["in"] == "path" and parameters["name"]["schema"]["example"] == "tiny"
    assert parameters["version"]["schema"]["pattern"] == "^[0-9]+$"
    assert {
        "#/components/parameters/RequestId",
        "#/components/parameters/RequestTimeout",
        "#/components/parameters/Timeout",
    } <= set(parameters)


def test_before_the_model_is_loaded_the_answers_are_as_described(model_dir: Path) -> None:
    """Readiness probes answer 503 with their own body; the rest 503 with an error."""
    waiting = RunningServer(settings_for(model_dir))  # started, never loaded
    try:
        spec = openapi_document(waiting.rest_url)
        calls = [
            ("GET", "/v2/health/ready", None, {"ready": False}),
            ("GET", "/v2/models/tiny/ready", None, {"name": "tiny", "ready": False}),
            ("GET", "/v2/health/live", None, {"live": True}),
        ]
        for method, path, data, expected in calls:
            status, _, body = get(waiting.rest_url + path, data)
            assert json.loads(body) == expected
            assert_matches_openapi(spec, method, path, status, json.loads(body))
        for method, path, data in [
            ("POST", "/v1/models/tiny:predict", b'{"instances": []}'),
            ("GET", "/v1/models/tiny/metadata", None),
            ("POST", "/v2/models/tiny/infer", b'{"inputs": []}'),
        ]:
            status, _, body = get(waiting.rest_url + path, data)
            assert status == 503, (path, body)
            assert_matches_openapi(spec, method, path, status, json.loads(body))
    finally:
        waiting.stop()


def test_a_route_without_a_description_stops_the_start(server: RunningServer) -> None:
    async def handler(request: web.Request, ctx: RequestContext) -> web.Response:
        return web.json_response({})

    undescribed = rest.Protocol(
        "extra", lambda context: [rest.Route("GET", "/extra", handler, "Extra")], openapi.Api({})
    )
    settings = settings_for(ROOT)
    with pytest.raises(ValueError, match=r"GET /extra \(extra Extra\) has no OpenAPI description"):
        rest.RestServer(
            settings,
            rest.Context(server.server.core),
            [undescribed],
            [],
            RpcLimit(settings.max_concurrent_rpcs, server.server.metrics),
        )


# --- the viewer ----------------------------------------------------------------------------------


class _Links(HTMLParser):
    """The src and href values of a page, and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.inline: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        values = dict(attrs)
        self.links += [v for k, v in values.items() if k in ("src", "href") and v]
        self.inline += [k for k in values if k == "style" or k.startswith("on")]
        if tag == "style":
            self.inline.append("<style>")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.inline.append("<script> with a body")


def test_docs_page_and_its_files_load_from_the_server(server: RunningServer) -> None:
    docs = f"{server.rest_url}{api_docs.DOCS_PATH}"
    status, headers, body = get(docs)
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    page = _Links()
    page.feed(body.decode())
    assert not page.inline, page.inline  # a strict CSP allows no inline script or style
    kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
    loaded = []
    for link in page.links:
        url = urljoin(docs, link)
        assert urlsplit(url).netloc == urlsplit(docs).netloc, f"{link}: not from this server"
        status, headers, content = get(url)
        kind = kinds[link[link.rindex(".") :]]
        assert (status, headers["content-type"].split(";")[0]) == (200, kind), link
        assert headers["x-content-type-options"] == "nosniff" and content
        loaded.append(url.rsplit("/", 1)[1])
    assert {"swagger-ui-bundle.js", "initializer.js", "swagger-ui.css"} <= set(loaded)
    # The initializer points at this server's description, by a relative URL.
    _, _, initializer = get(urljoin(docs, "docs/static/initializer.js"))
    assert b'url: "openapi.json"' in initializer and b"http" not in initializer
    assert urljoin(docs, "openapi.json") == f"{server.rest_url}/openapi.json"


@pytest.mark.parametrize("name", ["index.html", "swagger-ui.js.map", "..%2Fapi_docs.py", "x.js"])
def test_only_the_viewers_files_are_served(server: RunningServer, name: str) -> None:
    status, _, body = get(f"{server.rest_url}/docs/static/{name}")
    assert status == 404 and "error" in json.loads(body)


def test_the_viewers_own_files_ship_in_the_package() -> None:
    """pyproject's package-data globs cover service/adapters/swagger (wheels carry the page)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["service.adapters"]
    files = sorted((ROOT / "service" / "adapters" / "swagger").iterdir())
    assert {f.name for f in files} == {"index.html", *api_docs.OWN_FILES}
    for path in files:
        relative = path.relative_to(ROOT / "service" / "adapters").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not package data"
    assert set(api_docs.static_files()) == {*api_docs.VENDOR_FILES, *api_docs.OWN_FILES}


def test_swagger_ui_renders_every_operation_offline(
    server: RunningServer, spec: dict[str, Any]
) -> None:
    """Headless chromium, every request outside this server refused: the page still renders."""
    require_tool(
        "playwright" if importlib.util.find_spec("playwright") else None,
        "Playwright for Python is not installed (requirements-dev.txt)",
    )
    require_tool(shutil.which(CHROMIUM), f"chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    operations = sum(len(item) for item in spec["paths"].values())
    own = urlsplit(server.rest_url).netloc
    outside: list[str] = []
    console: list[str] = []
    crashes: list[str] = []

    def only_here(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], timeout=TIMEOUT_MS
        )
        try:
            tab = browser.new_page()
            tab.set_default_timeout(TIMEOUT_MS)
            tab.route("**/*", only_here)
            tab.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            tab.on("pageerror", lambda e: crashes.append(str(e)))
            tab.goto(f"{server.rest_url}/docs")
            expect(tab.locator(".opblock")).to_have_count(operations, timeout=TIMEOUT_MS)
            expect(tab.locator(".info .title")).to_contain_text("vggserve REST API")
            # Predict opens and shows its request body's example and its error answers.
            tab.locator("#operations-TensorFlow_Serving-Predict .opblock-summary").click()
            predict = tab.locator("#operations-TensorFlow_Serving-Predict")
            expect(predict.locator(".opblock-section-request-body")).to_contain_text('"instances"')
            expect(predict.locator(".responses-table")).to_contain_text("--max-message-bytes")
            # "Try it out" calls this server from the page (the CSP's connect-src 'self').
            live = tab.locator("#operations-Open_Inference_Protocol_V2-ServerLive")
            live.locator(".opblock-summary").click()
            live.locator("button.try-out__btn").click()
            live.locator("button.execute").click()
            expect(live.locator(".live-responses-table")).to_contain_text('"live": true')
        finally:
            browser.close()
    assert not crashes, crashes
    assert not outside, f"the page asked for files elsewhere: {outside}"
    blocked = [m for m in console if "Content Security Policy" in m or m.startswith("error")]
    assert not blocked, blocked
