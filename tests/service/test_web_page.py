"""The web page at `/` on the REST port, driven in a real headless browser.

Debian's chromium (`.ci/run` installs it) through Playwright's sync API:
Playwright's own browser download cannot work offline, so `executable_path`
points at the system's. Without chromium or Playwright these tests skip, and
fail under CI=true. Every wait is on the page's state, bounded by TIMEOUT_MS.

VGGSERVE_WEB_SCREENSHOT=PATH saves the answered page there as a PNG (how
docs/web-page.png is made).
"""

from __future__ import annotations

import base64
import fnmatch
import http.client
import importlib.util
import json
import os
import re
import shutil
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model import layout
from model.data import synthetic
from service.adapters import web_page
from tests.helpers import ROOT, encode, in_process, random_pixels, require_tool
from tests.service.helpers import RunningServer, settings_for

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000
TOKEN = "web-page-token"
# The guarded server's body limit: an upload above it must show the server's 413 message.
SMALL_BODY_LIMIT = 256 * 1024
SCREENSHOT_ENV = "VGGSERVE_WEB_SCREENSHOT"


def _image() -> bytes:
    """A 64x64 synthetic shape (a blue square), as PNG."""
    pixels = synthetic.render(5, (64, 64), np.random.default_rng(3))
    return encode(pixels, "PNG")


def _file(name: str, mime: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _explain_error(server: RunningServer, data: bytes, token: str = "") -> str:
    """The error message the server itself answers for `data` sent to `:explain`."""
    request = urllib.request.Request(
        f"{server.rest_url}/v1/models/tiny:explain",
        data=json.dumps({"instances": [{"b64": base64.b64encode(data).decode()}]}).encode(),
        headers={"Authorization": f"Bearer {token}"} if token else {},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=30)
    message: str = json.loads(failed.value.read())["error"]
    return message


# --- fixtures: the browser, and a server with tokens and a small body limit ---------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_tool(
        "playwright" if importlib.util.find_spec("playwright") else None,
        "Playwright for Python is not installed (requirements-dev.txt)",
    )
    require_tool(shutil.which(CHROMIUM), f"chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    # expect() waits 5 s by default: too little for a model call on a busy 2-core machine.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], timeout=TIMEOUT_MS
        )
        yield launched
        launched.close()


class Page:
    """A fresh browser tab and what its console reported (errors, CSP violations)."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1100, "height": 850})
        self.tab = self.context.new_page()
        self.tab.set_default_timeout(TIMEOUT_MS)
        self.console: list[str] = []
        self.crashes: list[str] = []
        self.tab.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.tab.on("pageerror", lambda e: self.crashes.append(str(e)))

    def open(self, server: RunningServer) -> Any:
        self.tab.goto(f"{server.rest_url}/")
        return self.tab

    def assert_clean(self) -> None:
        """No script error and no Content-Security-Policy violation happened."""
        assert not self.crashes, self.crashes
        blocked = [m for m in self.console if "Content Security Policy" in m]
        assert not blocked, blocked


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.context.close()


@pytest.fixture(scope="module")
def guarded_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    tokens = tmp_path_factory.mktemp("web-tokens") / "tokens.txt"
    tokens.write_text(f"{TOKEN}\n")
    running = RunningServer(
        settings_for(
            model_dir,
            versions="latest:2",
            auth_token_file=str(tokens),
            max_message_bytes=SMALL_BODY_LIMIT,
        )
    )
    running.load()
    yield running
    running.stop()


# --- in the browser -------------------------------------------------------------------------------


def test_an_image_shows_the_models_answer_and_explanation(
    server: RunningServer, page: Page, model_dir: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    image = _image()
    probabilities = in_process(model_dir, [image], version=2)[0]
    labels = layout.read_labels(model_dir / "2")
    tab = page.open(server)
    expect(tab.locator("#served")).to_have_text("Serving versions 1, 2 (default 2)")
    expect(tab.locator("#versions tr")).to_have_count(2)
    expect(tab.locator("#versions")).to_contain_text("AVAILABLE")

    tab.set_input_files("#file", _file("shape.png", "image/png", image))

    expect(tab.locator("#result")).to_be_visible()
    expect(tab.locator("#top li")).to_have_count(5)
    expect(tab.locator("#top li .label").first).to_have_text(labels[int(probabilities.argmax())])
    shown = tab.locator("#top li .probability").first.inner_text()
    assert abs(float(shown.rstrip("%")) - probabilities.max() * 100) <= 0.051, shown
    expect(tab.locator("#answered-by")).to_have_text("Answered by tiny version 2")
    expect(tab.locator("#latency")).to_have_text(
        re.compile(r"^Latency: \d+ ms in this page .*; the server took \d+ ms$")
    )
    # The overlay is a real PNG the browser decoded, at the image's own size.
    overlay = tab.locator("#overlay")
    expect(overlay).to_have_js_property("complete", True)
    expect(overlay).to_have_js_property("naturalWidth", 64)
    expect(overlay).to_have_attribute("alt", re.compile(r"^Explanation of class \w+"))
    expect(tab.locator("#picture")).to_have_js_property("naturalWidth", 64)
    page.assert_clean()

    shot = tmp_path / "web-page.png"
    tab.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])


def test_a_dropped_text_file_shows_the_servers_error(server: RunningServer, page: Page) -> None:
    from playwright.sync_api import expect

    text = b"hello, this is not an image\n"
    tab = page.open(server)
    expect(tab.locator("#versions tr")).to_have_count(2)
    dropped = tab.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "text/plain" }));
            return data;
        }""",
        ["notes.txt", base64.b64encode(text).decode()],
    )
    tab.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})

    expect(tab.locator("#error")).to_have_text(_explain_error(server, text))
    expect(tab.locator("#error")).to_contain_text("not a JPEG, PNG, BMP or GIF")
    expect(tab.locator("#result")).to_be_hidden()
    page.assert_clean()


def test_with_tokens_the_page_asks_for_one_until_given(
    guarded_server: RunningServer, page: Page, model_dir: Path
) -> None:
    from playwright.sync_api import expect

    image = _image()
    tab = page.open(guarded_server)  # the page itself needs no token
    expect(tab.locator("#auth")).to_be_visible()
    expect(tab.locator("#auth-message")).to_contain_text("missing credentials")

    tab.set_input_files("#file", _file("shape.png", "image/png", image))
    expect(tab.locator("#error")).to_contain_text("missing credentials")
    expect(tab.locator("#result")).to_be_hidden()

    tab.fill("#token", "not-the-token")
    tab.click("#token-form button")
    expect(tab.locator("#error")).to_have_text(_explain_error(guarded_server, image, "wrong"))
    expect(tab.locator("#error")).to_contain_text("not valid")
    expect(tab.locator("#auth")).to_be_visible()

    tab.fill("#token", TOKEN)
    tab.press("#token", "Enter")
    # The file waiting for a token is sent again with it, and the versions load.
    expect(tab.locator("#result")).to_be_visible()
    labels = layout.read_labels(model_dir / "2")
    best = labels[int(in_process(model_dir, [image], version=2)[0].argmax())]
    expect(tab.locator("#top li .label").first).to_have_text(best)
    expect(tab.locator("#auth")).to_be_hidden()
    expect(tab.locator("#versions tr")).to_have_count(2)

    # Over the body limit: the server's 413 message, as it says it.
    big = encode(random_pixels(400, 400), "PNG")
    assert len(big) * 4 / 3 > SMALL_BODY_LIMIT
    tab.set_input_files("#file", _file("big.png", "image/png", big))
    expect(tab.locator("#error")).to_have_text(
        f"request body is larger than {SMALL_BODY_LIMIT} bytes, the limit (--max-message-bytes)"
    )
    page.assert_clean()


def test_while_the_model_loads_the_page_says_so_then_shows_the_versions(
    model_dir: Path, page: Page
) -> None:
    from playwright.sync_api import expect

    loading = RunningServer(settings_for(model_dir, versions="latest:2"))  # not loaded yet
    try:
        status, _, body = _get(f"{loading.rest_url}/v1/models/tiny")
        assert status in (404, 503), body
        tab = page.open(loading)
        expect(tab.locator("#served")).to_have_text(
            f"Versions unknown: {json.loads(body)['error']}"
        )
        loading.load()
        # The page asks again by itself while the server answers 404 or 503.
        expect(tab.locator("#served")).to_have_text("Serving versions 1, 2 (default 2)")
        expect(tab.locator("#versions tr")).to_have_count(2)
        page.assert_clean()
    finally:
        loading.stop()


def test_the_file_chooser_is_reachable_by_keyboard(server: RunningServer, page: Page) -> None:
    from playwright.sync_api import expect

    tab = page.open(server)
    expect(tab.locator("#versions tr")).to_have_count(2)
    tab.keyboard.press("Tab")  # the first stop: the API docs link
    for _ in range(3):
        if tab.evaluate("document.activeElement.id") == "file":
            break
        tab.keyboard.press("Tab")
    assert tab.evaluate("document.activeElement.id") == "file"
    with tab.expect_file_chooser() as chooser:
        tab.keyboard.press("Space")  # as on a button
    chooser.value.set_files(_file("shape.png", "image/png", _image()))
    expect(tab.locator("#result")).to_be_visible()


# --- over plain HTTP ------------------------------------------------------------------------------


def test_the_page_and_its_files_carry_the_headers(guarded_server: RunningServer) -> None:
    base = guarded_server.rest_url
    for path, kind in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ]:
        status, headers, body = _get(base + path)  # no token: the page is open
        assert status == 200, (path, body)
        assert headers["Content-Type"] == kind
        assert headers["Content-Security-Policy"] == web_page.CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-cache"
        again, _, unchanged = _get(base + path, {"If-None-Match": headers["ETag"]})
        assert (again, unchanged) == (304, b"")
    status, _, page = _get(base + "/")
    assert b'<meta name="vggserve-model" content="tiny">' in page
    assert b"<script>" not in page and b"style=" not in page  # nothing inline: the CSP holds
    head = urllib.request.Request(base + "/", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(page))
        assert response.read() == b""
    # The API beside it still wants the token, and says so with the page's message.
    status, _, body = _get(base + "/v1/models/tiny")
    assert status == 401 and "missing credentials" in json.loads(body)["error"]
    # An API answer tells its time in the server (the page shows it beside its own).
    status, headers, _ = _get(base + "/v1/models/tiny", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert re.fullmatch(r"app;dur=\d+\.\d", headers["Server-Timing"]), headers["Server-Timing"]


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../service/settings.py",
        "/ui/..%2Fadapters%2Frest.py",
        "/ui/%2e%2e%2f__init__.py",
        "/ui/..%5C__init__.py",
        "/ui/%2e%2e/%2e%2e/pyproject.toml",
        "/ui/",
        "/ui/web_page.py",
        "/ui/nothing.js",
    ],
)
def test_no_file_outside_the_page_is_served(server: RunningServer, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.rest_url.rsplit(":", 1)[1]))
    try:
        connection.request("GET", path)  # sent as written: no client-side normalising
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 404, body
    assert response.getheader("Content-Type", "").startswith("application/json")
    assert "error" in json.loads(body)
    assert b"import" not in body


def test_every_file_of_the_page_ships_in_the_package() -> None:
    """pyproject's package-data globs cover service/web, so wheels and sdists carry the page."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["service"]
    files = sorted((ROOT / "service" / "web").iterdir())
    assert {f.name for f in files} >= {"index.html", "app.js", "style.css"}
    for path in files:
        relative = path.relative_to(ROOT / "service").as_posix()
        assert any(fnmatch.fnmatch(relative, g) for g in globs), f"{relative} is not package data"
    assert sorted(web_page.load_files("m")) == [f.name for f in files]


def test_the_model_name_is_escaped_in_the_page() -> None:
    files = web_page.load_files('<b onclick="x">&')
    index = files[web_page.INDEX].body
    assert b"&lt;b onclick=&quot;x&quot;&gt;&amp;" in index
    assert b"<b onclick" not in index and b"{{model}}" not in index
