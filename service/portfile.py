"""The server's readiness contract for the tools that start it (--port-file).

A tool starts `python -m service --port 0 --port-file PATH` and waits for PATH
to appear: it is written once the gRPC port is bound, with temp + rename, so a
reader sees no file or the whole port, never part of one. Unlike a log line,
it does not depend on the log level or the log format.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_port_file(path: str | Path, port: int) -> None:
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(f"{port}\n", encoding="ascii")
    os.replace(temp, target)


def read_port_file(path: str | Path) -> int | None:
    """The port, or None while the file does not exist yet."""
    try:
        return int(Path(path).read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
