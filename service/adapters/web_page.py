"""The web page on the REST port: `/` (index.html) and `/ui/<file>`, from service/web.

The page (plain HTML, CSS and JavaScript shipped as package data: no build
step, nothing from another origin) calls the REST APIs like any client, with
the caller's bearer token; the page itself is open, as `/metrics` is, so a
browser can load it before it has a token to send. It names the served model,
which `/metrics` already shows to anyone (vggserve_model_info).

Only the files found in service/web when the server starts are served, from
memory, by exact name: a path such as `/ui/../settings.py` matches no entry,
so nothing outside the folder can be reached. Every answer carries a strict
Content-Security-Policy (scripts, styles and connections from this origin
only, images also as data: and blob: URLs, no framing), an ETag and
`Cache-Control: no-cache`, so browsers revalidate and an upgraded server's
files are never mixed with stale ones.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

INDEX_PATH = "/"
FILES_PREFIX = "/ui/"
PACKAGE, FOLDER = "service", "web"
INDEX = "index.html"
# index.html's placeholder for the model's name (HTML-escaped when filled in).
MODEL_PLACEHOLDER = "{{model}}"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",  # the overlay arrives as base64, the upload as a blob
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers that predate it
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class PageFile:
    body: bytes
    content_type: str
    etag: str  # quoted, as the header carries it


def _page_file(body: bytes, content_type: str) -> PageFile:
    return PageFile(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def load_files(model_name: str) -> dict[str, PageFile]:
    """The page's files by name, index.html naming `model_name`.

    Raises:
        FileNotFoundError: the package was installed without service/web/index.html.
    """
    folder = resources.files(PACKAGE).joinpath(FOLDER)
    files = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            if entry.name == INDEX:
                body = body.replace(
                    MODEL_PLACEHOLDER.encode(), html.escape(model_name, quote=True).encode()
                )
            files[entry.name] = _page_file(body, CONTENT_TYPES[suffix])
    if INDEX not in files:
        raise FileNotFoundError(
            f"the web page's {INDEX} is missing from the installed package ({PACKAGE}/{FOLDER}/); "
            "reinstall vggserve with its package data"
        )
    return files


def _answer(request: web.Request, found: PageFile) -> web.Response:
    headers = {
        **SECURITY_HEADERS,
        "ETag": found.etag,
        "Cache-Control": "no-cache",
    }
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})


def add_routes(router: web.UrlDispatcher, model_name: str) -> None:
    """GET (and HEAD) `/` and `/ui/{file}` on `router`; no token needed."""
    files = load_files(model_name)
    listed = ", ".join(FILES_PREFIX + name for name in sorted(files))

    async def index(request: web.Request) -> web.Response:
        return _answer(request, files[INDEX])

    async def page_file(request: web.Request) -> web.Response:
        found = files.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound(
                text=f"no such file of the web page: {request.path}; its files are {listed}"
            )
        return _answer(request, found)

    router.add_get(INDEX_PATH, index)
    router.add_get(FILES_PREFIX + "{file}", page_file)
