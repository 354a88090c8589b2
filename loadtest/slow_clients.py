"""Holds many idle or trickling HTTP connections on a server's REST port, as an attacker would.

Starts `python -m service` for --model-dir on free loopback ports (with
--nofile: under that open-file limit, `ulimit -n`), opens --connections
connections to its REST port and holds them for --wait seconds: `idle` ones
send nothing; `trickle` ones send a request head that never ends, one byte
every --interval seconds. Meanwhile it asks the gRPC port's health service
once a second. It prints how many connections the server closed (and when,
and with which status line), the server's open file descriptors
(/proc/PID/fd) and the gRPC health answers, e.g.

    python -m loadtest.slow_clients --model-dir models/vgg-mini \\
        --connections 400 --mode trickle --interval 2 --wait 100

Extra server flags go after `--` (e.g. `-- --http-keepalive-timeout-s 5`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtest.serverproc import child_server, server_command
from vggclient.client import Client

# A request head that never ends: a request line, then one header's value forever.
TRICKLE_HEAD = b"GET /v2/health/live HTTP/1.1\r\nHost: probe\r\nX-Pad: "
OPENING_AT_ONCE = 64  # connection attempts in flight; more overflow the listen backlog


@dataclass
class Held:
    """What happened to the connections: one entry per connection that opened."""

    opened: int = 0
    failed: int = 0  # could not connect at all
    closed_after_s: list[float] = field(default_factory=list)  # by the server, within --wait
    status_lines: Counter[str] = field(default_factory=Counter)  # first line of any answer

    @property
    def still_open(self) -> int:
        return self.opened - len(self.closed_after_s)


async def hold(
    host: str, port: int, connections: int, mode: str, wait_s: float, interval_s: float = 2.0
) -> Held:
    """Opens `connections` to host:port; holds them `wait_s` s after the last one opened.

    `mode` is "idle" (send nothing) or "trickle" (a never-ending request head,
    one byte every `interval_s` seconds).
    """
    held = Held()
    opening = asyncio.Semaphore(OPENING_AT_ONCE)
    all_open = asyncio.Event()
    pending = connections

    def opened_one() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            all_open.set()

    async def one() -> None:
        try:
            async with opening:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (OSError, TimeoutError):
            held.failed += 1
            opened_one()
            return
        held.opened += 1
        opened_one()
        started = time.monotonic()
        sender = asyncio.create_task(_trickle(writer, interval_s)) if mode == "trickle" else None
        try:
            first = await reader.read(65536)
            if first:
                held.status_lines[first.split(b"\r\n", 1)[0].decode("latin-1")] += 1
                while await reader.read(65536):
                    pass
            held.closed_after_s.append(time.monotonic() - started)
        except OSError:  # reset: closed as well
            held.closed_after_s.append(time.monotonic() - started)
        finally:
            if sender is not None:
                sender.cancel()
            writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(connections)]
    if connections:
        await all_open.wait()
    _done, still = await asyncio.wait(tasks, timeout=wait_s)
    for task in still:
        task.cancel()
    await asyncio.gather(*still, return_exceptions=True)
    return held


async def _trickle(writer: asyncio.StreamWriter, interval_s: float) -> None:
    with contextlib.suppress(OSError):
        for byte in itertools.chain(TRICKLE_HEAD, itertools.repeat(ord("a"))):
            await asyncio.sleep(interval_s)
            writer.write(bytes([byte]))
            await writer.drain()


def open_fds(pid: int) -> int:
    """How many file descriptors process `pid` has open (Linux)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class HealthWatch:
    """Asks a gRPC health service once a second in a thread; counts the answers.

    Each time on a new connection, as a probe (kubelet, grpc_health_probe) does:
    one opened beforehand would not show that new clients cannot connect.
    """

    def __init__(self, target: str) -> None:
        self.answers: Counter[str] = Counter()
        self._target = target
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with Client(self._target, retries=0, timeout=2.0) as client:
                try:
                    self.answers[client.health()] += 1
                except grpc.RpcError as exc:
                    self.answers[exc.code().name] += 1


def report(
    held: Held, mode: str, wait_s: float, fds: Sequence[int], health: Counter[str], log: str
) -> str:
    closed = sorted(held.closed_after_s)
    timing = (
        f" (after {statistics.median(closed):.1f} s median, {closed[0]:.1f}-{closed[-1]:.1f} s)"
        if closed
        else ""
    )
    answers = ", ".join(f"{n} x {line!r}" for line, n in held.status_lines.most_common()) or "none"
    return "\n".join(
        [
            f"{held.opened + held.failed} {mode} connections, held {wait_s:g} s after the last "
            f"opened: {held.opened} opened, {held.failed} could not connect",
            f"  closed by the server: {len(closed)}{timing}; still open: {held.still_open}",
            f"  answers before the close: {answers}",
            f"  server fds: {fds[0]} before, {fds[1]} with all open, {fds[2]} after",
            f"  gRPC health, once a second on a new connection: {dict(health) or 'not asked'}",
            f"  server log meanwhile: {len(log.splitlines())} lines, "
            f"{log.count('Too many open files')} saying 'Too many open files'",
        ]
    )


@contextlib.contextmanager
def _server(
    model_dir: str, nofile: int, extra: Sequence[str], log: Path
) -> Iterator[tuple[str, str, int]]:
    """(gRPC target, REST host:port, pid) of a server under `ulimit -n nofile` (0: as is)."""
    command = server_command(model_dir, extra)
    if nofile:
        command = ["sh", "-c", f'ulimit -n {nofile} && exec "$0" "$@"', *command]
    with child_server(command, log_path=log) as child:
        assert child.rest_url is not None, "the server has no REST port"
        yield child.target, child.rest_url.removeprefix("http://"), child.process.pid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtest.slow_clients",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-dir", required=True, help="the model the server serves")
    p.add_argument("--connections", type=int, default=400, help="how many (default: 400)")
    p.add_argument("--mode", choices=("idle", "trickle"), default="idle")
    p.add_argument("--interval", type=float, default=2.0, help="trickle: seconds between bytes")
    p.add_argument("--wait", type=float, default=100.0, help="seconds to hold (default: 100)")
    p.add_argument("--nofile", type=int, default=0, help="the server's ulimit -n (0: inherit)")
    p.add_argument("server_args", nargs="*", help="after --: extra flags for the server")
    args = p.parse_args(argv)
    if not Path(args.model_dir).is_dir():
        p.error(f"--model-dir {args.model_dir!r}: no such folder")
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as folder:
        print(_measure(args, Path(folder) / "server.log"))
    return 0


def _measure(args: argparse.Namespace, log: Path) -> str:
    """Runs the server and the connections `args` ask for; the report."""
    with _server(args.model_dir, args.nofile, args.server_args, log) as (target, rest, pid):
        log_start = log.stat().st_size
        print(f"server pid {pid}: gRPC {target}, REST {rest}", shlex.join(args.server_args))
        host, port = rest.rsplit(":", 1)
        before = open_fds(pid)
        with HealthWatch(target) as watch:
            fds_all_open = 0

            async def run() -> Held:
                nonlocal fds_all_open
                task = asyncio.create_task(
                    hold(host, int(port), args.connections, args.mode, args.wait, args.interval)
                )
                # Sampled while held: the peak is what matters for the limit.
                while not task.done():
                    fds_all_open = max(fds_all_open, open_fds(pid))
                    await asyncio.sleep(0.5)
                return await task

            held = asyncio.run(run())
        fds = [before, fds_all_open, open_fds(pid)]
        with log.open(errors="replace") as text:
            text.seek(log_start)
            return report(held, args.mode, args.wait, fds, watch.answers, text.read())


if __name__ == "__main__":
    sys.exit(main())
