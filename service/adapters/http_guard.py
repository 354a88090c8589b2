"""Guards the REST port's connections: timeouts, a connection limit, JSON protocol errors.

aiohttp on its own keeps a connection as long as its client likes (an hour's
keep-alive, no bound on how slowly a request's head or body arrives, no
connection limit), so idle or trickling clients could hold file descriptors
until the process ran out and neither port accepted anything. Here each phase
of a connection is bounded, as nginx and Go's net/http bound them:

- idle (before its first request, or between keep-alive requests): closed
  after --http-keepalive-timeout-s (aiohttp's own keep-alive timer);
- a request's line and headers must all arrive within --http-header-timeout-s
  of its first byte, else 408 and the connection closes;
- while a request's body is read, a pause of --http-body-timeout-s without a
  byte ends the read with 408 and closes the connection;
- beyond --http-max-connections open connections (lowered below the process's
  open-file limit, so gRPC keeps descriptors), a new one gets 503 and is
  closed at once; that is logged once, then at most once a minute.

Protocol errors, which aiohttp answers in plain text before any route runs (a
bad request line, header or framing, an oversized header), become
`{"error": "..."}` with their 4xx, never quoting the request's bytes. After a
408 or 413 the connection closes at once instead of reading (lingering over)
a body that will not be used.

`GuardedSite` replaces aiohttp's TCPSite and makes `GuardedHandler`s
(aiohttp's RequestHandler with these hooks) instead of aiohttp's: the
handler arguments given to the AppRunner are not used. aiohttp is pinned
(requirements.txt); tests/service/test_http_guard.py pins the hooks' behaviour.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from ssl import SSLContext

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)

from service.adapters.grpc_calls import INTERNAL_MESSAGE
from service.settings import Settings

log = logging.getLogger(__name__)

# aiohttp's own limits (also Apache's LimitRequestLine/FieldSize), named so
# the error messages can quote them.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
# Descriptors kept for everything but REST connections (gRPC's, the model's,
# logs) when the open-file limit is what bounds the connections.
FD_RESERVE_MIN = 128
FD_RESERVE_SHARE = 4  # a quarter of the limit, when that is more
LOG_EVERY_S = 60.0  # the "refusing connections" warning, at most this often
# After these the rest of a body is never read: the connection closes at once.
CLOSE_AT_ONCE = frozenset({408, 413})


@dataclass(frozen=True)
class HttpLimits:
    """The per-connection limits (seconds; 0 turns a timeout off)."""

    keepalive_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.http_keepalive_timeout_s,
            settings.http_header_timeout_s,
            settings.http_body_timeout_s,
        )


def connection_capacity(max_connections: int, nofile: int) -> tuple[int, str]:
    """How many connections REST may hold, and the limit that says so (for messages).

    Args:
        max_connections: --http-max-connections.
        nofile: the process's soft RLIMIT_NOFILE (resource.RLIM_INFINITY: none).
    """
    limit = f"--http-max-connections {max_connections}"
    if nofile == resource.RLIM_INFINITY:
        return max_connections, limit
    room = max(1, nofile - max(FD_RESERVE_MIN, nofile // FD_RESERVE_SHARE))
    if room < max_connections:
        return room, f"{limit}, lowered to {room} by the open-file limit (ulimit -n {nofile})"
    return max_connections, limit


class ConnectionGuard:
    """Counts the REST port's open connections and refuses those beyond its capacity."""

    def __init__(
        self,
        max_connections: int,
        nofile: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nofile is None:
            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.capacity, self.limit_text = connection_capacity(max_connections, nofile)
        self.open = 0
        self.refused = 0  # since the process started
        self._clock = clock
        self._unlogged = 0
        self._logged_at: float | None = None

    @property
    def refusal(self) -> str:
        """The 503's message."""
        return (
            f"the server has {self.open} HTTP connections open, its limit "
            f"({self.limit_text}); retry later or on another replica"
        )

    def admit(self) -> bool:
        """Counts a new connection in, or returns False (and counts the refusal)."""
        if self.open < self.capacity:
            self.open += 1
            return True
        self.refused += 1
        self._unlogged += 1
        now = self._clock()
        # A flood of refusals must not become a flood of log lines.
        if self._logged_at is None:
            log.warning("REST port full: refusing new connections with 503 (%s)", self.limit_text)
        elif now - self._logged_at >= LOG_EVERY_S:
            log.warning(
                "REST port full: refused %d connection(s) in the last %.0f s (%s)",
                self._unlogged,
                now - self._logged_at,
                self.limit_text,
            )
        else:
            return False
        self._logged_at = now
        self._unlogged = 0
        return False

    def release(self) -> None:
        self.open -= 1


def site(runner: web.BaseRunner, settings: Settings, ssl_context: SSLContext | None) -> GuardedSite:
    """The REST port's site: `settings.host:settings.rest_port`, guarded as `settings` say."""
    return GuardedSite(
        runner,
        settings.host,
        settings.rest_port,
        guard=ConnectionGuard(settings.http_max_connections),
        limits=HttpLimits.of(settings),
        ssl_context=ssl_context,
    )


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are `GuardedHandler`s under `guard` and `limits`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        limits: HttpLimits,
        ssl_context: SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._guard = guard
        self._limits = limits

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        manager = self._runner.server
        assert manager is not None, "runner.setup() makes the server"

        def handler() -> GuardedHandler:
            return GuardedHandler(manager, self._guard, self._limits, loop=loop)

        # A TLS handshake is part of a request's head: it gets the same time.
        handshake = self._limits.header_timeout_s or None
        self._server = await loop.create_server(
            handler,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=handshake if self._ssl_context else None,
            backlog=self._backlog,
            reuse_port=False,
        )


# A connection's phases, as the timers see them.
IDLE, HEAD, REQUEST = "idle", "head", "request"


class GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with the guard's limits and JSON errors."""

    def __init__(
        self,
        manager: web.Server,
        guard: ConnectionGuard,
        limits: HttpLimits,
        *,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=limits.keepalive_timeout_s,
            access_log=None,  # type: ignore[arg-type]  # None: no access log, as AppRunner's
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
        )
        self._guard = guard
        self._limits = limits
        self._clock = loop.time
        self._admitted = False
        self._refused = False
        self._phase = IDLE
        self._head_deadline = 0.0
        self._head_bytes = 0  # of the current head, until its first line ends
        self._line_bytes: int | None = None  # the request line's length, once known
        self._last_read = 0.0
        self._request: web.BaseRequest | None = None
        # The last request's body, which aiohttp may still be reading (lingering).
        self._previous_body: StreamReader | None = None
        self._timed_out = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit():
            # Closed before aiohttp sees it: no request task, no timers.
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_raw_response(503, self._guard.refusal))
            transport.close()
            return
        self._admitted = True
        self._last_read = self._clock()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        if self._admitted:
            self._admitted = False
            self._guard.release()
        if self._timer is not None:
            self._timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if data:
            self._note_read(data)
        super().data_received(data)

    def _note_read(self, data: bytes) -> None:
        now = self._clock()
        self._last_read = now
        if self._phase == IDLE and (self._previous_body is None or self._previous_body.is_eof()):
            # The first byte of a request: its head has header_timeout_s from now.
            self._phase = HEAD
            self._head_bytes = 0
            self._line_bytes = None
            if self._limits.header_timeout_s > 0:
                self._head_deadline = now + self._limits.header_timeout_s
                self._wake_at(self._head_deadline)
                # The head's own timeout replaces the idle one (which would close the
                # connection silently); aiohttp re-arms that one after the answer.
                self.keep_alive(True)
        if self._phase == HEAD and self._line_bytes is None:
            end = data.find(b"\n")
            if end >= 0:
                self._line_bytes = self._head_bytes + end
            else:
                self._head_bytes += len(data)

    # aiohttp calls this (private, but pinned) once a request's head is parsed.
    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        self._phase = REQUEST
        self._request = request
        if self._limits.body_timeout_s > 0 and not request.content.is_eof():
            self._wake_at(self._last_read + self._limits.body_timeout_s)
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._phase = IDLE
            self._request = None
            self._previous_body = request.content

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        close_now = resp.status in CLOSE_AT_ONCE or self._timed_out
        if close_now:
            resp.force_close()  # says "Connection: close"
        answer = await super().finish_response(request, resp, start_time)
        if close_now:
            self.force_close()  # after the answer is written; skips reading the body
        return answer

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse, or whose handler failed.

        aiohttp's own quotes the request's bytes in plain text; this one names
        the fault in JSON, and logs protocol errors (a client's doing, easily
        made in bulk) only at DEBUG.
        """
        status, text = _protocol_error(status, exc, self._line_bytes)
        if status >= 500:
            log.error("HTTP request from %s failed", request.remote, exc_info=exc)
        else:
            log.debug("HTTP %d to %s: %s (%r)", status, request.remote, text, exc)
        if request.writer.output_size > 0:  # as aiohttp: an answer is already half sent
            raise ConnectionError("an answer was already being sent; closing instead")
        response = web.json_response({"error": text}, status=status)
        response.force_close()
        # Said even to HTTP/1.0 (what aiohttp takes an unparsable request for).
        response.headers["Connection"] = "close"
        return response

    def _wake_at(self, when: float) -> None:
        if self._timer is not None:
            if self._timer.when() <= when:
                return  # an earlier wake-up re-arms itself
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._check_timeouts)

    def _check_timeouts(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None:
            return
        now = self._clock()
        if self._phase == HEAD and self._limits.header_timeout_s > 0:
            if now < self._head_deadline:
                self._wake_at(self._head_deadline)
                return
            log.debug("closing an HTTP connection: its request head was not received in time")
            transport.write(
                _raw_response(
                    408,
                    f"the request line and headers did not arrive within "
                    f"{self._limits.header_timeout_s:g} s (--http-header-timeout-s)",
                )
            )
            self.force_close()
        elif self._phase == REQUEST and self._request is not None:
            body = self._request.content
            if body.is_eof() or self._limits.body_timeout_s <= 0:
                return
            if not transport.is_reading():
                # aiohttp stopped reading (its buffer is full): not the client's pause.
                self._last_read = now
            deadline = self._last_read + self._limits.body_timeout_s
            if now < deadline:
                self._wake_at(deadline)
                return
            # The handler's read fails with 408; rest.py answers it as JSON.
            self._timed_out = True
            body.set_exception(
                web.HTTPRequestTimeout(
                    text=f"the request body stalled: no byte for "
                    f"{self._limits.body_timeout_s:g} s (--http-body-timeout-s)"
                )
            )


def _protocol_error(
    status: int, exc: BaseException | None, line_bytes: int | None
) -> tuple[int, str]:
    """(HTTP status, message) for what aiohttp hands `handle_error`; never quotes the request."""
    if status >= 500 and not isinstance(exc, BadHttpMessage):
        if status == 504:
            return 504, "the request timed out"
        return 500, INTERNAL_MESSAGE
    if isinstance(exc, LineTooLong):
        if line_bytes is None or line_bytes > MAX_LINE_BYTES:
            return 414, f"the request line is longer than {MAX_LINE_BYTES} bytes, the limit"
        return 431, f"a request header is longer than {MAX_FIELD_BYTES} bytes, the limit"
    if isinstance(exc, BadHttpMethod):
        if "HTTPS" in exc.message:
            return 400, "TLS (https) was sent to a plain-HTTP port; use http://"
        return 400, "malformed request line: the method is not a valid HTTP method"
    if isinstance(exc, BadStatusLine):
        return 400, "malformed request line: expected METHOD TARGET HTTP/1.x"
    if isinstance(exc, InvalidURLError):
        return 400, "malformed request line: the target is not a valid URL path"
    if isinstance(exc, InvalidHeader):
        return 400, "malformed request header"
    if isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received":
        return 431, f"more than {MAX_HEADERS} request headers, the limit"
    return 400, "malformed HTTP request: its headers or framing (Content-Length, chunks)"


def _raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body, for a connection aiohttp is not serving."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
