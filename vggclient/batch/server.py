"""Engine "server": the images stream to a server over gRPC (ClassifyStream).

A bounded window of images is in flight, so memory stays flat however large
the folder. Answers that say "not now" (UNAVAILABLE, RESOURCE_EXHAUSTED,
DEADLINE_EXCEEDED: a server restarting, draining or shedding load) never
become rows: those images are resent after a backoff, until --max-retries
attempts in a row make no progress.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from tqdm import tqdm

from vggclient.batch.files import read_image_file
from vggclient.batch.output import Output
from vggclient.batch.rows import RETRYABLE, Row, key
from vggclient.cli.connection import client_from_args
from vggclient.client import Client, ImageError

# Room for the request's own fields around the image bytes.
MESSAGE_OVERHEAD = 1024
# A whole stream may also end CANCELLED when a draining server runs out of time.
RECONNECT = RETRYABLE | {grpc.StatusCode.CANCELLED}

log = logging.getLogger("vggclient.batch")


def run(args: argparse.Namespace, todo: list[Path], output: Output, progress: tqdm) -> int:
    """Streams `todo` to the server until every image has a row; returns how many
    have none when --max-retries consecutive attempts made no progress.

    An attempt is one stream over the images without a row. It ends early when
    the server goes away (a restart or drain), and images answered "not now"
    get no row; both are resent after a backoff. The budget counts attempts
    in a row that wrote nothing, so a long job survives any number of restarts
    as long as each one lets it move on.
    """
    failures = 0
    window = args.window
    with client_from_args(args, retries=0, max_message_bytes=args.max_message_bytes) as client:
        while True:
            remaining = [p for p in todo if key(p) not in output.done]
            if not remaining:
                return 0
            before = output.count()
            try:
                refused = _stream(
                    client, remaining, output, progress, window, args.top_k, args.max_message_bytes
                )
                problem = ", ".join(f"{n} answered {code.name}" for code, n in refused.items())
            except grpc.RpcError as exc:
                if exc.code() not in RECONNECT:
                    raise
                refused = {}
                problem = f"{exc.code().name}: {exc.details()}"
            left = sum(key(p) not in output.done for p in todo)
            if not left:
                return 0
            failures = 0 if output.count() > before else failures + 1
            if failures > args.max_retries:
                log.error(
                    "%d image(s) have no answer after %d attempts in a row without progress "
                    "(last: %s); rerun the same command to retry them",
                    left,
                    failures,
                    problem,
                )
                return left
            if grpc.StatusCode.RESOURCE_EXHAUSTED in refused and window > 1:
                window = max(1, window // 2)  # the server sheds load: send less at once
            delay = min(args.backoff * 2 ** max(failures - 1, 0), 30.0)
            log.warning(
                "%d image(s) left (%s); retrying in %.1f s (%d/%d attempts without progress)",
                left,
                problem,
                delay,
                failures,
                args.max_retries,
            )
            time.sleep(delay)  # backoff before resending


def _stream(
    client: Client,
    paths: list[Path],
    output: Output,
    progress: tqdm,
    window_size: int,
    top_k: int,
    max_message_bytes: int,
) -> dict[grpc.StatusCode, int]:
    """One stream over `paths`; returns how many images were answered "not now"."""
    window = threading.Semaphore(window_size)
    finished = threading.Event()
    order: list[str] = []  # classify_many numbers images in the order they are sent
    refused: dict[grpc.StatusCode, int] = {}

    def images() -> Iterator[bytes]:
        for path in paths:
            data = read_image_file(path)
            if not isinstance(data, str) and len(data) + MESSAGE_OVERHEAD > max_message_bytes:
                # Sent, it would break the whole stream (RESOURCE_EXHAUSTED) every time.
                data = f"file is {len(data)} bytes: over --max-message-bytes {max_message_bytes}"
            if isinstance(data, str):  # unreadable or too large: an error row, nothing to send
                output.write(Row.of(key(path), data))
                progress.update()
                continue
            while not window.acquire(timeout=0.5):  # at most window_size in flight
                if finished.is_set():
                    return
            order.append(key(path))
            yield data

    try:
        for index, outcome in client.classify_many(images(), top_k=top_k):
            window.release()
            if isinstance(outcome, ImageError) and outcome.code in RETRYABLE:
                refused[outcome.code] = refused.get(outcome.code, 0) + 1
                continue  # no row: resent by the next attempt
            output.write(Row.of(order[index], outcome))
            progress.update()
    finally:
        finished.set()  # lets the request thread stop if the call broke
    return refused
