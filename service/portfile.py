"""The server's readiness contract for the tools that start it (--port-file).

A tool starts `python -m service --port 0 --rest-port 0 --port-file PATH` and
waits for PATH to appear: it is written once every port is bound, with temp +
rename, so a reader sees no file or the whole of it, never part of one.
Unlike a log line, it does not depend on the log level or the log format.

The format: the gRPC port alone on the first line (what `read_port_file`
returns, as it always has), then one `name=PORT` line per other port the
server listens on (`rest=8501`; absent when REST is off).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_port_file(path: str | Path, port: int, **others: int | None) -> None:
    """Writes the gRPC `port` and the `others` that are not None (e.g. rest=8501)."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    lines = [str(port)] + [f"{name}={value}" for name, value in others.items() if value is not None]
    temp.write_text("\n".join(lines) + "\n", encoding="ascii")
    os.replace(temp, target)


def read_ports(path: str | Path) -> dict[str, int] | None:
    """Every port by name ("grpc", "rest", ...), or None while the file does not exist yet."""
    try:
        lines = Path(path).read_text(encoding="ascii").split()
    except FileNotFoundError:
        return None
    ports = {"grpc": int(lines[0])}
    for line in lines[1:]:
        name, _, value = line.partition("=")
        ports[name] = int(value)
    return ports


def read_port_file(path: str | Path) -> int | None:
    """The gRPC port, or None while the file does not exist yet."""
    ports = read_ports(path)
    return None if ports is None else ports["grpc"]
