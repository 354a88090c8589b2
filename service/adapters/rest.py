"""The one HTTP server every REST protocol shares (aiohttp, on the server's loop).

It owns what is the same for every REST API: the port, TLS, bearer tokens,
the body size limit, the concurrent-call limit (shared with gRPC), request
deadlines, the drain, per-request metrics (and a `Server-Timing` header), the
unauthenticated `/metrics` and web page (adapters/web_page.py), and turning
errors into `{"error": "..."}` with the HTTP status of their code.
It also serves the OpenAPI description of every route it mounts at
`/openapi.json` (built from each protocol's `Api`; a route without one stops
the start), rendered at `/docs` (adapters/api_docs.py).

A protocol module adds its routes through a `Protocol`: a metrics label and a
function `routes(context) -> list[Route]`. Its handlers take the request and
its `RequestContext` (made here: the request id from `X-Request-Id` or a new
one, sent back in the same header; the deadline; the caller's token
fingerprint) and return a response, raising `ServiceError` (or an aiohttp
HTTPException) for anything a client did wrong; they never write error
bodies themselves. Bodies larger than OFF_LOOP_BYTES are parsed in a worker
thread (`parse`), so one large request never holds the event loop for long.
For example:

    async def live(request: web.Request, ctx: RequestContext) -> web.Response:
        return web.json_response({"live": True})

    PROTOCOL = rest.Protocol(V2_REST, lambda context: [
        rest.Route("GET", "/v2/health/live", live, "ServerLive", open=True),
    ], v2_openapi.API)  # v2_openapi.API.operations["ServerLive"] describes it

aiohttp's AppRunner installs no signal handlers (uvicorn's serve() would take
SIGTERM from the drain in service.__main__).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.adapters import api_docs, http_guard, openapi, openapi_build, web_page
from service.adapters.grpc_calls import INTERNAL_MESSAGE, principal_of
from service.adapters.grpc_limits import RpcLimit
from service.core import (
    REQUEST_ID_HEADER,
    Core,
    DeadlineExceeded,
    InvalidRequest,
    RequestContext,
    ServiceError,
    request_id,
)
from service.security import bearer_problem, ssl_context
from service.settings import Settings

log = logging.getLogger(__name__)

# A request's timeout, in seconds: this header, else this query parameter.
TIMEOUT_HEADER = "Request-Timeout"
TIMEOUT_QUERY = "timeout"
METRICS_PATH = "/metrics"
# Each API answer's time in the server, in W3C Server-Timing form: `app;dur=<ms>`.
SERVER_TIMING_HEADER = "Server-Timing"
# The status a shutting-down server refuses new requests with, and its message.
SHUTTING_DOWN = "the server is shutting down; retry on another replica"

# gRPC code names (ServiceError.code) -> HTTP status. The one such mapping.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,  # as Google's API guide maps it
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# HTTP status -> the code name recorded in the metrics' `code` label, so REST
# and gRPC requests are counted in the same terms.
_CODE_OF_STATUS = {status: code for code, status in HTTP_STATUS.items()} | {
    400: "INVALID_ARGUMENT",  # FAILED_PRECONDITION shares 400; a bare 400 is a bad request
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",  # a body that stalled past --http-body-timeout-s
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
}

# Bodies up to this size are parsed on the event loop (about a millisecond);
# larger ones in a worker thread, so health and other callers stay answered.
OFF_LOOP_BYTES = 256 * 1024
T = TypeVar("T")

Handler = Callable[[web.Request, RequestContext], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One endpoint of a protocol.

    Attributes:
        method: the HTTP method.
        path: an aiohttp path pattern, e.g. `/v1/models/{name}`.
        handler: `handler(request, ctx)`; `ctx.deadline` is a time.monotonic()
            instant or None.
        name: the `method` label of its metrics (e.g. "Predict").
        open: answered without a bearer token (health probes only).
    """

    method: str
    path: str
    handler: Handler
    name: str
    open: bool = False


@dataclass(frozen=True)
class Context:
    """What a protocol's routes may use: the core (`core.serving`: ready for traffic)."""

    core: Core


@dataclass(frozen=True)
class Protocol:
    label: str  # its `protocol` metrics label (service.core.protocols)
    routes: Callable[[Context], list[Route]]
    api: openapi.Api  # the OpenAPI description of each route, by `Route.name`


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def load_json(data: bytes, what: str = "the request body") -> Any:
    """The JSON document of `data`; InvalidRequest (HTTP 400) for anything else.

    Nesting deeper than Python's recursion limit is a client's mistake too.
    """
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{what} nests JSON too deeply") from None


async def parse(body: bytes, parser: Callable[[bytes], T]) -> T:
    """`parser(body)`, on the event loop for small bodies, in a worker thread for large ones."""
    if len(body) <= OFF_LOOP_BYTES:
        return parser(body)
    return await asyncio.to_thread(parser, body)


def deadline_of(request: web.Request) -> float | None:
    """The request's deadline (time.monotonic()), from its header or query parameter.

    Raises:
        InvalidRequest: the value is not a positive number of seconds.
    """
    raw = request.headers.get(TIMEOUT_HEADER) or request.query.get(TIMEOUT_QUERY)
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise InvalidRequest(
            f"timeout {raw!r}: give a positive number of seconds "
            f"(header {TIMEOUT_HEADER} or query parameter {TIMEOUT_QUERY})"
        )
    return time.monotonic() + seconds


class RestServer:
    """The REST APIs of `protocols` and /metrics on `settings.host:settings.rest_port`."""

    def __init__(
        self,
        settings: Settings,
        context: Context,
        protocols: Sequence[Protocol],
        tokens: list[bytes],
        limit: RpcLimit,
    ) -> None:
        self.settings = settings
        self.core = context.core
        self._tokens = tokens
        self._limit = limit
        self._draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # The body limit is the gRPC message limit: the same images fit both.
        app = web.Application(
            client_max_size=settings.max_message_bytes, middlewares=[self._json_errors]
        )
        app.router.add_get(METRICS_PATH, self._metrics)
        web_page.add_routes(app.router, self.core.model_name)  # `/` and `/ui/*`, open too
        described = [
            openapi.describe(openapi.SERVER_API, "server", "GET", path, name, open=True)
            for path, name in ((METRICS_PATH, "Metrics"), (api_docs.OPENAPI_PATH, "OpenAPI"))
        ]
        for protocol in protocols:
            for route in protocol.routes(context):
                described.append(_described(protocol, route))
                app.router.add_route(route.method, route.path, self._wrap(protocol.label, route))
        # The description of exactly what is mounted: a route without one stops the start.
        apis = [openapi.SERVER_API, *(p.api for p in protocols)]
        self.openapi = openapi_build.document(described, apis, self.core.model_name)
        api_docs.add_routes(app.router, self.openapi)
        self._router = app.router
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        self.port: int | None = None

    def routes(self) -> list[tuple[str, str]]:
        """(method, path pattern) of every route the port answers, HEAD left out."""
        return [
            (route.method, route.resource.canonical)
            for route in self._router.routes()
            if route.method != "HEAD" and route.resource is not None
        ]

    async def start(self) -> int:
        """Binds and serves; returns the port. Raises OSError naming the address."""
        await self._runner.setup()
        # Timeouts and a connection limit: idle or slow clients cannot hold the port.
        site = http_guard.site(self._runner, self.settings, ssl_context(self.settings))
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise OSError(
                f"cannot serve REST on {self.settings.host}:{self.settings.rest_port}: "
                f"{os.strerror(exc.errno) if exc.errno else exc} (--rest-port -1 turns REST off)"
            ) from None
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self, timeout_s: float) -> None:
        """Refuses new requests, waits up to `timeout_s` for the accepted ones, closes."""
        self._draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("%d REST request(s) still running after the drain", self._in_flight)
        await self._runner.cleanup()

    @web.middleware
    async def _json_errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Errors outside any route (unknown path, wrong method) as JSON too."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error(exc.status, _message(exc, request, self.settings.max_message_bytes))

    async def _metrics(self, request: web.Request) -> web.Response:
        # Unauthenticated, like the probes: scrapers carry no token.
        body = generate_latest(self.core.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _wrap(
        self, protocol: str, route: Route
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            authorization = request.headers.get("Authorization", "")
            ctx = RequestContext(
                protocol,
                route.name,
                request_id=request_id(request.headers.get(REQUEST_ID_HEADER)),
                principal=principal_of(authorization),
            )
            response, code = await self._answer(request, route, ctx, authorization)
            elapsed = time.perf_counter() - ctx.started
            response.headers[REQUEST_ID_HEADER] = ctx.request_id
            # The server's share of the latency a client sees (the web page shows it).
            response.headers[SERVER_TIMING_HEADER] = f"app;dur={elapsed * 1000:.1f}"
            self.core.finish(ctx, code, elapsed)
            return response

        return handle

    async def _answer(
        self, request: web.Request, route: Route, ctx: RequestContext, authorization: str
    ) -> tuple[web.StreamResponse, str]:
        if self._draining:
            refused = error(503, SHUTTING_DOWN)
            refused.force_close()
            return refused, "UNAVAILABLE"
        if not route.open and self._tokens:
            problem = bearer_problem(self._tokens, authorization)
            if problem is not None:
                denied = error(401, problem)
                denied.headers["WWW-Authenticate"] = "Bearer"
                return denied, "UNAUTHENTICATED"
        limited = not route.open
        if limited and not self._limit.try_enter():
            return error(429, self._limit.refusal), "RESOURCE_EXHAUSTED"
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._run(request, route, ctx), "OK"
        except ServiceError as exc:
            return error(HTTP_STATUS.get(exc.code, 500), exc.message), exc.code
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error(
                exc.status, _message(exc, request, self.settings.max_message_bytes)
            ), _CODE_OF_STATUS.get(
                exc.status, "INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL"
            )
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error(500, INTERNAL_MESSAGE), "INTERNAL"
        finally:
            if limited:
                self._limit.leave()
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _run(
        self, request: web.Request, route: Route, ctx: RequestContext
    ) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.settings.max_message_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self.settings.max_message_bytes, actual_size=length
            )
        deadline = ctx.deadline = deadline_of(request)
        if deadline is None:
            return await route.handler(request, ctx)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await route.handler(request, ctx)
        except TimeoutError:
            raise DeadlineExceeded(
                "deadline passed before the request was answered (its timeout)"
            ) from None


def _described(protocol: Protocol, route: Route) -> openapi.Described:
    return openapi.describe(
        protocol.api, protocol.label, route.method, route.path, route.name, route.open
    )


def _loop_time(deadline: float) -> float:
    """A time.monotonic() instant on the event loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


def _message(exc: web.HTTPException, request: web.Request, max_bytes: int) -> str:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"request body is larger than {max_bytes} bytes, the limit (--max-message-bytes)"
    if exc.status == 404 and exc.text == "404: Not Found":
        return f"no such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    return exc.text or exc.reason
