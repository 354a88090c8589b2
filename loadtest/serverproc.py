"""Servers as child processes on free ports, for load tests and benchmarks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc

from service.client import Client

_LISTENING = re.compile(r"listening on [\w.:\[\]]+:(\d+)")


@dataclass(frozen=True)
class Child:
    """A running server process and the address it listens on."""

    target: str
    process: subprocess.Popen[str]


@contextmanager
def child_server(
    command: Sequence[str],
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    health: bool = True,
    ready_timeout: float = 300.0,
) -> Iterator[Child]:
    """Runs `command`, which must log "listening on HOST:PORT"; yields it once ready.

    Waits for the standard health service to say SERVING (or, with
    health=False, for the channel to connect); SIGTERM stops it afterwards.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    process = subprocess.Popen(list(command), env=env, stderr=subprocess.PIPE, text=True)
    log = open(log_path, "w") if log_path else None  # noqa: SIM115 (closed by _drain)
    drain: threading.Thread | None = None
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:
            if log:
                log.write(line)
            if match := _LISTENING.search(line):
                port = match.group(1)
                break
        if port is None:
            raise RuntimeError(f"{command[2:4]} exited with code {process.wait()} before listening")
        # Keep reading its log so the child never blocks on a full pipe.
        drain = threading.Thread(target=_drain, args=(process.stderr, log), daemon=True)
        drain.start()
        target = f"127.0.0.1:{port}"
        if health:
            with Client(target) as client:
                client.wait_until_serving(timeout=ready_timeout)
        else:
            with grpc.insecure_channel(target) as channel:
                grpc.channel_ready_future(channel).result(timeout=ready_timeout)
        yield Child(target, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if drain is not None:
            drain.join(timeout=10)
        elif log:
            log.close()
        if process.stderr is not None:
            process.stderr.close()


def server_command(model_dir: str | Path, extra_args: Sequence[str] = ()) -> list[str]:
    """`python -m service` for `model_dir` on a free loopback port, metrics off."""
    return [
        sys.executable,
        "-m",
        "service",
        "--model-dir",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "-1",
        *extra_args,
    ]


def local_server(
    model_dir: str | Path,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> AbstractContextManager[Child]:
    """A vggserve server for `model_dir` on a free loopback port."""
    return child_server(server_command(model_dir, extra_args), env=env, log_path=log_path)


def bare_server(log_path: Path | None = None) -> AbstractContextManager[Child]:
    """The constant-reply server (loadtest.bare_server) on a free loopback port."""
    command = [sys.executable, "-m", "loadtest.bare_server", "--port", "0"]
    return child_server(command, log_path=log_path, health=False)


def _drain(stream: IO[str], log: IO[str] | None) -> None:
    for line in stream:
        if log:
            log.write(line)
    if log:
        log.close()
