"""Servers as child processes on free ports, for load tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import grpc

from service.portfile import read_ports
from vggclient.client import Client

T = TypeVar("T")

TAIL_LINES = 20  # of the child's stderr, quoted when it fails to start


@dataclass(frozen=True)
class Child:
    """A running server process and the addresses it listens on."""

    target: str  # gRPC, host:port
    process: subprocess.Popen[str]
    rest_url: str | None = None  # http://host:port of its REST APIs; None when REST is off


class ChildFailed(RuntimeError):
    """The child exited, or was not ready in time; the message quotes its stderr."""


@contextmanager
def child_server(
    command: Sequence[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    health: bool = True,
    ready_timeout: float = 300.0,
    host: str = "127.0.0.1",
) -> Iterator[Child]:
    """Runs `command` with `--port-file PATH` added; yields it once ready.

    Ready means: the child wrote its port to PATH (it does once listening),
    then the standard health service says SERVING (with health=False: the
    channel connects). Everything is bounded by `ready_timeout`, and a child
    that exits first raises at once; either error quotes the child's last
    stderr lines. SIGTERM stops it afterwards. `host` is the address the
    child listens on (its `--host`), for reaching it.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    folder = Path(tempfile.mkdtemp(prefix="vggserve-child-"))
    port_file = folder / "port"
    argv = [*command, "--port-file", str(port_file)]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 (closed by _drain)
    assert process.stderr is not None
    # Read its log from the start: the child never blocks on a full pipe, and
    # the last lines are at hand if it fails.
    drain = threading.Thread(target=_drain, args=(process.stderr, log, tail), daemon=True)
    drain.start()
    try:
        deadline = time.monotonic() + ready_timeout
        ports = _wait(process, deadline, tail, lambda: read_ports(port_file), "listening")
        target = f"{host}:{ports['grpc']}"
        rest_url = f"http://{host}:{ports['rest']}" if "rest" in ports else None
        if health:
            with Client(target, retries=0, timeout=2.0) as client:
                _wait(process, deadline, tail, lambda: _serving(client), "SERVING")
        else:
            with grpc.insecure_channel(target) as channel:
                ready = grpc.channel_ready_future(channel)
                _wait(process, deadline, tail, lambda: ready.done() or None, "connectable")
        yield Child(target, process, rest_url)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        drain.join(timeout=10)
        process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait(
    process: subprocess.Popen[str],
    deadline: float,
    tail: deque[str],
    probe: Callable[[], T | None],
    what: str,
) -> T:
    """Polls `probe` until it gives a value; fails when the child exits or time is up."""
    name = shlex.join(process.args[1:4] if isinstance(process.args, list) else [])
    while True:
        if (value := probe()) is not None:
            return value
        if process.poll() is not None:
            raise ChildFailed(
                f"{name} exited with code {process.returncode} before it was {what}; "
                f"its last stderr lines:\n{_quote(tail)}"
            )
        if time.monotonic() > deadline:
            raise ChildFailed(
                f"{name} was not {what} in time; its last stderr lines:\n{_quote(tail)}"
            )
        # Waiting on the process is the tick: it returns early when the child dies.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)


def _serving(client: Client) -> bool | None:
    try:
        return True if client.health() == "SERVING" else None
    except grpc.RpcError:
        return None  # not answering yet


def _quote(tail: deque[str]) -> str:
    # The drain thread may still be appending: copy before reading.
    lines = list(tail)
    return "".join(f"  | {line}" for line in lines).rstrip() or "  | (nothing)"


def server_command(
    model_dir: str | Path, extra_args: Sequence[str] = (), host: str = "127.0.0.1", port: int = 0
) -> list[str]:
    """`python -m service` for `model_dir` on free loopback ports (gRPC and REST)."""
    return [
        sys.executable,
        "-m",
        "service",
        "--model-dir",
        str(model_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--rest-port",
        "0",
        *extra_args,
    ]


def local_server(
    model_dir: str | Path,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AbstractContextManager[Child]:
    """A vggserve server for `model_dir` on `host` (a loopback address), port 0: a free one."""
    return child_server(
        server_command(model_dir, extra_args, host, port), env=env, log_path=log_path, host=host
    )


def bare_server(log_path: Path | None = None) -> AbstractContextManager[Child]:
    """The constant-reply server (loadtest.bare_server) on a free loopback port."""
    command = [sys.executable, "-m", "loadtest.bare_server", "--port", "0"]
    return child_server(command, log_path=log_path, health=False)


def _drain(stream: IO[str], log: IO[str] | None, tail: deque[str]) -> None:
    for line in stream:
        tail.append(line)
        if log:
            log.write(line)
            log.flush()
    if log:
        log.close()
