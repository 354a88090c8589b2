"""The REST port's description: `/openapi.json`, rendered by Swagger UI at `/docs`.

The viewer's files come from the swagger-ui-bundle package (pinned in
requirements.txt), served from `/docs/static/`: nothing is fetched from a
CDN, so the page works offline and behind firewalls. The page and its
initializer are ours (service/adapters/swagger/): no inline script or style,
so the Content-Security-Policy allows only this server's own files. Every
route here is open, like the health probes: the description holds no secret.
URLs in the page are relative, so it works behind a path-prefixing proxy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
STATIC_PATH = "/docs/static"
# Our page and initializer; the viewer's own files, from the package.
OWN = Path(__file__).with_name("swagger")
VENDOR = Path(str(swagger_ui_path))
VENDOR_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png")
OWN_FILES = ("initializer.js",)
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".html": "text/html; charset=utf-8",
}
# Only this server's own files run or style the page; data: images are the
# viewer's icons (in its CSS); connect-src lets "Try it out" call the API.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def static_files() -> dict[str, Path]:
    """File name -> path of everything served under /docs/static/.

    Raises:
        FileNotFoundError: a file is missing (a broken install of
            swagger-ui-bundle or of this package), naming it.
    """
    files = {name: VENDOR / name for name in VENDOR_FILES} | {
        name: OWN / name for name in OWN_FILES
    }
    for path in [*files.values(), OWN / "index.html"]:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: reinstall vggserve and swagger-ui-bundle")
    return files


def add_routes(router: web.UrlDispatcher, document: dict[str, Any]) -> None:
    """GET /openapi.json (the document), /docs (the page) and /docs/static/{file}."""
    spec = json.dumps(document, indent=1).encode()
    files = static_files()
    page = (OWN / "index.html").read_bytes()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json", headers=_HEADERS)

    async def docs(request: web.Request) -> web.Response:
        return web.Response(body=page, headers={**_HEADERS, "Content-Type": MEDIA_TYPES[".html"]})

    async def static(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["file"])
        if path is None:
            raise web.HTTPNotFound(
                text=f"no such file: {request.path}; the files are {', '.join(sorted(files))}"
            )
        headers = {**_HEADERS, "Content-Type": MEDIA_TYPES[path.suffix]}
        # Sent by the kernel (sendfile) or a worker thread: the event loop only schedules.
        return web.FileResponse(path, headers=headers)

    router.add_get(OPENAPI_PATH, openapi)
    router.add_get(DOCS_PATH, docs)
    router.add_get(STATIC_PATH + "/{file}", static)
