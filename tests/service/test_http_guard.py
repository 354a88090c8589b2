"""The REST port bounds idle, slow and surplus connections; protocol errors are JSON.

Raw sockets on 127.0.0.1, since the clients under test misbehave on purpose.
Every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.slow_clients import hold
from service.adapters.http_guard import LOG_EVERY_S, ConnectionGuard, connection_capacity
from service.settings import Settings
from tests.helpers import wait_for
from tests.service.helpers import RunningServer, settings_for

TIMEOUT_S = 1.0  # the header and body timeouts of `guarded`
KEEPALIVE_S = 2.0
GIVE_UP_S = 10.0  # what "never closed" means here: far beyond any timeout under test
LIMIT = 8
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def guarded(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(
        settings_for(
            model_dir,
            http_keepalive_timeout_s=KEEPALIVE_S,
            http_header_timeout_s=TIMEOUT_S,
            http_body_timeout_s=TIMEOUT_S,
        )
    )
    running.load()
    yield running
    running.stop()


@contextlib.contextmanager
def connect(server: RunningServer) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.server.rest_port or 0), timeout=10) as s:
        yield s


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Reads one HTTP answer: (status, headers, body)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def seconds_until_closed(sock: socket.socket, started: float) -> float | None:
    """Reads until the server closes; seconds from `started`, or None if open after GIVE_UP_S."""
    sock.settimeout(max(0.1, started + GIVE_UP_S - time.monotonic()))
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass  # a reset is the server closing too (it may not read what was left unsent)
    return time.monotonic() - started


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    guarded: RunningServer,
) -> None:
    with connect(guarded) as never_asks:
        waited = seconds_until_closed(never_asks, time.monotonic())
    assert waited is not None and waited >= KEEPALIVE_S * 0.9
    # Between keep-alive requests too.
    with connect(guarded) as asks_once:
        asks_once.sendall(LIVE)
        status, headers, _ = answer(asks_once)
        assert status == 200 and headers.get("connection") != "close"
        waited = seconds_until_closed(asks_once, time.monotonic())
    assert waited is not None and waited >= KEEPALIVE_S * 0.9


def test_a_trickling_request_head_is_cut_after_the_header_timeout(
    guarded: RunningServer,
) -> None:
    head = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 1000
    with connect(guarded) as slow:
        started = time.monotonic()
        slow.settimeout(0.5)
        received = b""
        for byte in head:  # one byte every 0.5 s, until the server answers
            if time.monotonic() - started > GIVE_UP_S:
                break
            try:
                slow.sendall(bytes([byte]))
                received = slow.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            break  # an answer, or the end of the connection
        cut_after = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408 "), received[:100]
    body = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert "--http-header-timeout-s" in body["error"]
    assert TIMEOUT_S * 0.9 <= cut_after < GIVE_UP_S


def test_a_slow_but_steady_body_is_read_and_a_stalled_one_gets_408(
    guarded: RunningServer,
) -> None:
    path = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
    body = b'{"instances": [not json]}'
    with connect(guarded) as steady:
        steady.sendall(path + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
        # Longer than the header and body timeouts in all, never idle that long.
        for chunk in (body[:8], body[8:16], body[16:]):
            time.sleep(TIMEOUT_S * 0.6)  # the slow client under test, not a wait
            steady.sendall(chunk)
        status, _, reply = answer(steady)
    assert status == 400 and "JSON" in json.loads(reply)["error"], reply
    with connect(guarded) as stalled:
        stalled.sendall(path + b"\r\nContent-Length: 1000\r\n\r\n" + body[:8])
        started = time.monotonic()
        status, headers, reply = answer(stalled)
        assert status == 408 and headers["connection"] == "close"
        assert "--http-body-timeout-s" in json.loads(reply)["error"]
        assert seconds_until_closed(stalled, started) is not None


def test_the_attackers_probe_sees_idle_and_trickling_connections_closed(
    guarded: RunningServer,
) -> None:
    port = guarded.server.rest_port or 0
    idle = asyncio.run(hold("127.0.0.1", port, 20, "idle", wait_s=GIVE_UP_S))
    assert (idle.opened, idle.still_open) == (20, 0)
    assert min(idle.closed_after_s) >= KEEPALIVE_S * 0.9
    trickle = asyncio.run(hold("127.0.0.1", port, 5, "trickle", GIVE_UP_S, interval_s=0.2))
    assert (trickle.opened, trickle.still_open) == (5, 0)
    assert trickle.status_lines == {"HTTP/1.1 408 Request Timeout": 5}


BAD_REQUESTS = {
    "bad request line": (b"SECRET-7f3a\x01 nonsense\r\n\r\n", 400),
    "bad method": (b"G(T / HTTP/1.1\r\nHost: t\r\nX-Token: SECRET-7f3a\r\n\r\n", 400),
    "bad version": (b"GET /SECRET-7f3a HTTP/9x\r\n\r\n", 400),
    "bad header": (b"GET / HTTP/1.1\r\nSECRET-7f3a no colon\r\n\r\n", 400),
    "bad header value": (b"GET / HTTP/1.1\r\nX-A: SECRET-7f3a\x00\r\n\r\n", 400),
    "bad framing": (b"POST / HTTP/1.1\r\nContent-Length: SECRET-7f3a\r\n\r\n", 400),
    "request line too long": (b"GET /SECRET-7f3a" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    "header too long": (b"GET / HTTP/1.1\r\nX-A: SECRET-7f3a" + b"a" * 9000 + b"\r\n\r\n", 431),
    "too many headers": (
        b"GET / HTTP/1.1\r\n"
        + b"".join(b"X-%d: SECRET-7f3a\r\n" % i for i in range(200))
        + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_protocol_errors_are_json_with_their_4xx_and_never_echo_the_request(
    guarded: RunningServer, case: str
) -> None:
    request, expected = BAD_REQUESTS[case]
    with connect(guarded) as client:
        client.sendall(request)
        status, headers, body = answer(client)
        assert seconds_until_closed(client, time.monotonic()) is not None
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    assert headers["connection"] == "close"
    message = json.loads(body)["error"]
    assert message and b"SECRET" not in body


def test_a_huge_content_length_gets_413_and_the_connection_closes_at_once(
    guarded: RunningServer,
) -> None:
    with connect(guarded) as client:
        client.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{"
        )
        status, headers, body = answer(client)
        started = time.monotonic()
        assert status == 413 and headers["connection"] == "close"
        assert "--max-message-bytes" in json.loads(body)["error"]
        closed_after = seconds_until_closed(client, started)
    # At once: well before any timeout (1 s) or aiohttp's 10 s of reading the body.
    assert closed_after is not None and closed_after < TIMEOUT_S / 2


@pytest.fixture
def limited(model_dir: Path) -> Iterator[RunningServer]:
    running = RunningServer(
        settings_for(model_dir, http_max_connections=LIMIT, http_keepalive_timeout_s=60.0)
    )
    running.load()
    yield running
    running.stop()


def test_connections_beyond_the_limit_are_refused_while_grpc_health_answers(
    limited: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.adapters.http_guard")
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(limited)) for _ in range(LIMIT)]
        for sock in held:  # each is served, so each is counted; then it idles
            sock.sendall(LIVE)
            assert answer(sock)[0] == 200
        for _ in range(4):
            with connect(limited) as surplus:
                status, headers, body = answer(surplus)
                assert status == 503 and headers["connection"] == "close"
                assert "--http-max-connections 8" in json.loads(body)["error"]
                assert seconds_until_closed(surplus, time.monotonic()) is not None
        with limited.client(retries=0, timeout=10) as grpc_client:
            assert grpc_client.health() == "SERVING"
        # A freed slot is taken again.
        held.pop().close()

        def served() -> bool:
            with connect(limited) as again:
                again.sendall(LIVE)
                return answer(again)[0] == 200

        wait_for(served, timeout=10, what="a new connection served after one closed")
    refusals = [r for r in caplog.records if "REST port full" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


def test_refusals_are_logged_once_then_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    guard = ConnectionGuard(1, nofile=resource.RLIM_INFINITY, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="service.adapters.http_guard")
    assert guard.admit()
    for _ in range(100):
        assert not guard.admit()
        now[0] += 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "refused 60 connection(s) in the last 60 s" in messages[1]
    assert guard.refused == 100
    guard.release()
    assert guard.admit()


def test_the_limit_leaves_file_descriptors_for_grpc_under_a_low_open_file_limit() -> None:
    unlimited = connection_capacity(1000, resource.RLIM_INFINITY)
    assert unlimited == (1000, "--http-max-connections 1000")
    capacity, text = connection_capacity(1000, 1024)
    assert capacity == 768 and "ulimit -n 1024" in text
    assert connection_capacity(1000, 100_000)[0] == 1000
    assert LOG_EVERY_S == 60.0


def test_the_limits_are_settings_with_environment_variables() -> None:
    env = {
        "VGGSERVE_HTTP_KEEPALIVE_TIMEOUT_S": "5",
        "VGGSERVE_HTTP_HEADER_TIMEOUT_S": "2.5",
        "VGGSERVE_HTTP_BODY_TIMEOUT_S": "0",
        "VGGSERVE_HTTP_MAX_CONNECTIONS": "50",
    }
    settings = Settings.parse(["--model-dir", "m"], env=env)
    assert (settings.http_keepalive_timeout_s, settings.http_header_timeout_s) == (5.0, 2.5)
    assert (settings.http_body_timeout_s, settings.http_max_connections) == (0.0, 50)
    defaults = Settings.parse(["--model-dir", "m"], env={})
    assert (defaults.http_keepalive_timeout_s, defaults.http_header_timeout_s) == (75.0, 20.0)
    assert (defaults.http_body_timeout_s, defaults.http_max_connections) == (30.0, 1000)
    with pytest.raises(SystemExit):
        Settings.parse(["--model-dir", "m", "--http-max-connections", "0"], env={})
